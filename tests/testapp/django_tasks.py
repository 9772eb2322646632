"""django.tasks functions for the backend tests (imported on Django 6+ only)."""

from __future__ import annotations

from django.tasks import task


@task
def add(a: int, b: int) -> int:
    return a + b


@task(queue_name="emails", priority=50)
def send(to: str) -> str:
    return f"sent to {to}"


@task
def explode() -> None:
    raise ValueError("kaboom")


@task(takes_context=True)
def attempt(context, label: str) -> dict[str, object]:
    return {"label": label, "attempt": context.attempt}


@task
async def async_add(a: int, b: int) -> int:
    return a + b


@task
def unserialisable() -> object:
    return object()
