"""A django.tasks module that nothing imports (Django 6+): a payload naming one of its tasks
must not make a worker import it."""

from __future__ import annotations

from django.tasks import task


@task
def never_declared_here() -> str:
    return "imported after all"
