from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("taskmill_django", "0009_task_timeout"),
    ]

    operations = [
        migrations.CreateModel(
            name="Dashboard",
            fields=[],
            options={
                "verbose_name": "dashboard",
                "verbose_name_plural": "dashboard",
                "proxy": True,
                "default_permissions": (),
                "indexes": [],
                "constraints": [],
            },
            bases=("taskmill_django.task",),
        ),
        migrations.AddField(
            model_name="task",
            name="progress_bytes_per_second",
            field=models.FloatField(
                blank=True, help_text="Smoothed rate of the reported bytes (EWMA).", null=True
            ),
        ),
        migrations.AddIndex(
            model_name="taskhistory",
            index=models.Index(
                condition=models.Q(("parent_id__isnull", False)),
                fields=["parent_id"],
                name="taskmill_hist_parent",
            ),
        ),
    ]
