from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("taskmill_django", "0008_custom_permissions"),
    ]

    operations = [
        migrations.AddField(
            model_name="task",
            name="progress_bytes_per_second",
            field=models.FloatField(
                blank=True, help_text="Smoothed rate of the reported bytes (EWMA).", null=True
            ),
        ),
    ]
