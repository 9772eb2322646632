from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("taskmill_django", "0010_progress_rate_dashboard_history_parent"),
    ]

    operations = [
        migrations.AddField(
            model_name="task",
            name="has_waiter",
            field=models.BooleanField(
                db_default=False,
                default=False,
                help_text="Someone waits for the outcome (PostgreSQL): its terminal write notifies.",
            ),
        ),
    ]
