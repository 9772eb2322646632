"""Parking: a task interrupted by a pause (preemption, a paused domain, group or scheduler, or
by hand) waits as ``paused`` with its reason, and becomes pending again when the pause is lifted.

One place writes both directions, whoever parks (the owning worker when the attempt ends, rescue
for an orphan, an operator for a pending task), so a parked row always looks the same and the
time it spent parked is always counted (priority aging skips it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db.models import F, FloatField, Q
from django.db.models.expressions import RawSQL
from django.db.models.functions import Coalesce, Now

from .. import signals
from ..enums import InterruptReason, TaskStatus
from ..models import Task
from .counters import PREEMPTED, count_events
from .db import notify_workers, send_on_commit


def park(rows: Sequence[tuple[int, str]], reason: str) -> int:
    """Park the tasks ``rows`` ((id, task_type) pairs the caller holds) as paused for
    ``reason``; the caller has checked they may be parked. Returns how many were."""
    if not rows:
        return 0
    count = Task.objects.filter(id__in=[task_id for task_id, _ in rows]).update(
        status=TaskStatus.PAUSED,
        pause_reason=reason,
        paused_at=Now(),
        cancel_reason="",
        lease_token=None,
        worker_id=None,
        started_at=None,
    )
    if reason == InterruptReason.PREEMPTED:
        count_events([(None, task_type) for _, task_type in rows], PREEMPTED)
    signal = signals.task_preempted if reason == InterruptReason.PREEMPTED else signals.task_paused
    for task_id, task_type in rows:
        send_on_commit(signal, task_type, task_id=task_id)
    return count


def unpark(condition: Q, reason: str) -> int:
    """Make the tasks parked for ``reason`` that match ``condition`` pending again (tasks
    parked for another reason stay parked); returns how many. Idle workers are woken."""
    parked = Task.objects.filter(condition, status=TaskStatus.PAUSED, pause_reason=reason)
    if not parked.exists():  # a read first: workers call this every second (SQLite's lock)
        return 0
    # Who they are is read only when someone listens for task_resumed.
    rows = list(parked.values_list("id", "task_type")) if signals.task_resumed.receivers else []
    count = parked.update(**unpaused())
    for task_id, task_type in rows:
        send_on_commit(signals.task_resumed, task_type, task_id=task_id)
    if count:
        notify_workers()
    return int(count)


def unpaused() -> dict[str, Any]:
    """Fields that make a paused row pending again, adding the pause to ``paused_seconds``
    (priority aging does not count time spent paused)."""
    # paused_seconds first: MySQL evaluates SET assignments left to right, so it must read
    # paused_at before paused_at is cleared.
    return {
        "paused_seconds": F("paused_seconds") + Coalesce(seconds_since("paused_at"), 0.0),
        "status": TaskStatus.PENDING,
        "pause_reason": "",
        "paused_at": None,
    }


def seconds_since(column: str) -> Any:
    """Seconds from ``column`` to now, by the database clock, as an expression."""
    from django.db import connection

    if connection.vendor == "postgresql":
        sql = f"EXTRACT(EPOCH FROM (STATEMENT_TIMESTAMP() - {column}))"
    elif connection.vendor == "sqlite":
        sql = f"((julianday('now') - julianday({column})) * 86400.0)"
    else:
        sql = f"(TIMESTAMPDIFF(MICROSECOND, {column}, UTC_TIMESTAMP(6)) / 1000000.0)"
    return RawSQL(sql, [], output_field=FloatField())  # noqa: S611 - constant column name
