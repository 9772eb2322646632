from django.db import migrations, models
from django.db.models import Count


def seed_from_history(apps, schema_editor):
    """Counters start from the history kept so far, so an upgrade does not reset them."""
    history = apps.get_model("taskmill_django", "TaskHistory")
    counter = apps.get_model("taskmill_django", "TaskCounter")
    db = schema_editor.connection.alias
    rows = (
        history.objects.using(db)
        .values_list("task_type", "status")
        .annotate(n=Count("id"))
        .order_by()
    )
    counter.objects.using(db).bulk_create(
        [counter(source="", task_type=t, metric=s, value=n) for t, s, n in rows],
        batch_size=500,
    )


class Migration(migrations.Migration):
    dependencies = [
        ("taskmill_django", "0011_task_has_waiter"),
    ]

    operations = [
        migrations.CreateModel(
            name="TaskCounter",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("source", models.CharField(blank=True, max_length=36)),
                ("task_type", models.CharField(max_length=200)),
                ("metric", models.CharField(max_length=40)),
                ("value", models.BigIntegerField(default=0)),
            ],
            options={
                "db_table": "taskmill_counter",
                "constraints": [
                    models.UniqueConstraint(
                        fields=("source", "task_type", "metric"), name="taskmill_counter_key"
                    )
                ],
            },
        ),
        migrations.RunPython(seed_from_history, migrations.RunPython.noop),
    ]
