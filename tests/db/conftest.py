"""Fixtures for store and query tests: running rows, outcomes, raw history rows, signals."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.dispatch import Signal
from django.utils import timezone

from taskmill_django import registry
from taskmill_django.models import Task, TaskHistory
from taskmill_django.store import claim, lifecycle


@pytest.fixture
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Domains and task types declared in the test are forgotten afterwards."""
    monkeypatch.setattr(registry, "_domains", dict(registry._domains))
    monkeypatch.setattr(registry, "_tasks", dict(registry._tasks))


def claim_one(domains: list[str] | None = None, worker_id: uuid.UUID | None = None) -> Task:
    """Claim the next due task as a worker would: the row is ``running`` under a fresh lease."""
    (task,) = claim.claim_batch(worker_id or uuid.uuid4(), 1, domains)
    return task


def finish(task: Task, kind: str = lifecycle.COMPLETED, **fields: Any) -> lifecycle.Applied:
    """Report how the attempt on a claimed ``task`` ended, fenced by its lease."""
    return lifecycle.apply_outcomes(
        [lifecycle.Outcome(task.id, task.lease_token, kind, task.task_type, **fields)]
    )


@pytest.fixture
def history_factory() -> Callable[..., TaskHistory]:
    """Raw history rows for query tests that need exact numbers or old timestamps."""
    counter = iter(range(10_000_000, 20_000_000))

    def make(**fields: Any) -> TaskHistory:
        task_id = fields.pop("id", next(counter))
        now = timezone.now()
        defaults: dict[str, Any] = {
            "task_type": "tests::noop",
            "domain": "tests",
            "key": f"h{task_id}",
            "priority": 128,
            "status": "completed",
            "created_at": now - timedelta(seconds=1),
            "finished_at": now,
        }
        defaults.update(fields)
        return TaskHistory.objects.create(id=task_id, **defaults)

    return make


@pytest.fixture
def received() -> Iterator[Callable[[Signal], list[dict[str, Any]]]]:
    """``events = received(signals.task_completed)``: every send, as kwargs plus ``sender``."""
    connected: list[tuple[Signal, Callable[..., None]]] = []

    def listen(signal: Signal) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []

        def receiver(sender: Any, **kwargs: Any) -> None:
            kwargs.pop("signal", None)
            events.append({"sender": sender, **kwargs})

        signal.connect(receiver, weak=False)
        connected.append((signal, receiver))
        return events

    yield listen
    for signal, receiver in connected:
        signal.disconnect(receiver)
