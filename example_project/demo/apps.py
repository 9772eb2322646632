from __future__ import annotations

import logging
from typing import Any

from django.apps import AppConfig

logger = logging.getLogger(__name__)


def log_dead_letter(sender: str, task_id: int, error: str, **kwargs: Any) -> None:
    """Receiver for ``task_dead_lettered``; ``sender`` is the qualified task type."""
    logger.warning("dead-lettered task_id=%s type=%s error=%s", task_id, sender, error)


class DemoConfig(AppConfig):
    """The demo app: its `tasks.py` is autodiscovered by taskmill_django like any other app's."""

    name = "example_project.demo"
    label = "demo"
    verbose_name = "taskmill demo"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from taskmill_django import signals

        # Sent by the worker after the transaction that dead-lettered the task commits.
        signals.task_dead_lettered.connect(log_dead_letter, dispatch_uid="demo.log_dead_letter")
