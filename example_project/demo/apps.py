from django.apps import AppConfig


class DemoConfig(AppConfig):
    """The demo app: its `tasks.py` is autodiscovered by taskmill_django like any other app's."""

    name = "example_project.demo"
    label = "demo"
    verbose_name = "taskmill demo"
    default_auto_field = "django.db.models.BigAutoField"
