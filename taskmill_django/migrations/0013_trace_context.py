from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("taskmill_django", "0012_counters"),
    ]

    operations = [
        migrations.AddField(
            model_name="task",
            name="trace_context",
            field=models.JSONField(
                blank=True,
                help_text="Trace context active at submission (OpenTelemetry), for the run's span.",
                null=True,
            ),
        ),
    ]
