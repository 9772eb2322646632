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
        from . import checks, checks_setup  # noqa: F401 - registers the checks
        from .metrics import checks as metrics_checks  # noqa: F401 - the endpoint's checks

        autodiscover_modules("tasks")
        self._load_django_tasks_backend()

    @staticmethod
    def _load_django_tasks_backend() -> None:
        """Workers must know the ``django::call`` type whenever TASKS uses our backend, even if
        nothing in this process enqueued a task yet."""
        from django.conf import settings

        backends = getattr(settings, "TASKS", {}) or {}
        if any(
            cfg.get("BACKEND") == "taskmill_django.backend.TaskmillBackend"
            for cfg in backends.values()
        ):
            from . import backend  # noqa: F401 - registers the django::call task type
