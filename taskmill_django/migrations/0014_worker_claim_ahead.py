from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("taskmill_django", "0013_trace_context"),
    ]

    operations = [
        migrations.AddField(
            model_name="worker",
            name="claim_ahead",
            field=models.PositiveIntegerField(
                db_default=0,
                help_text="Most tasks the worker claims beyond its threads (CLAIM_AHEAD): they "
                "count among the slots that could claim while another worker checks a cap.",
            ),
        ),
    ]
