from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("taskmill_django", "0007_group_dispatch_order_index"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="task",
            options={
                "ordering": ("priority", "id"),
                "permissions": (
                    (
                        "control_scheduler",
                        "Can change cluster-wide scheduling (pauses, caps, rates)",
                    ),
                    ("submit_urgent", "Can submit or reprioritize at a preempting priority"),
                    ("view_metrics", "Can read the Prometheus metrics"),
                ),
            },
        ),
    ]
