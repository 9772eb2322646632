"""App configuration: registers system checks and autodiscovers every app's ``tasks.py``."""

from __future__ import annotations

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class TaskmillConfig(AppConfig):
    name = "taskmill_django"
    label = "taskmill_django"
    verbose_name = "Taskmill"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401 - registers the checks

        autodiscover_modules("tasks")
