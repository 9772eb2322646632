"""Outcomes of attempts: complete, fail, retry, dead-letter, cancel, release. Fenced and batched.

A worker buffers outcomes and applies many in one transaction. Each row is re-read
``FOR UPDATE`` with its lease token; a row whose token changed (rescued and re-claimed
elsewhere) or that left ``running`` is skipped, so a zombie worker writes nothing (G3).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models.functions import Now

from .. import clock, signals
from ..enums import PARKING_REASONS, HistoryStatus, TaskStatus
from ..models import Task, TaskHistoryTag, TaskTag
from . import counters, finish_pg
from .children import children_finished, parent_returned
from .db import Ahead, notify_results, notify_workers, send_on_commit
from .dependencies import resolve_dependents
from .history import Finish, move_to_history
from .parking import park

logger = logging.getLogger(__name__)

# Outcome kinds. Terminal ones map to a history status; the others keep the row active.
COMPLETED = HistoryStatus.COMPLETED
FAILED = HistoryStatus.FAILED
DEAD_LETTER = HistoryStatus.DEAD_LETTER
CANCELLED = HistoryStatus.CANCELLED
RETRY = "retry"
RELEASE = "release"


@dataclass
class Outcome:
    """What one attempt ended with, as reported by the executor."""

    task_id: int
    lease_token: uuid.UUID | None  # None never matches a row: nothing is written
    kind: str
    task_type: str = ""
    error: str = ""
    traceback: str = ""
    result: Any = None
    duration_ms: int | None = None
    retry_delay: float = 0.0
    io: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Applied:
    """Which outcomes were written; ``lost`` are those fenced off (lease no longer ours)."""

    written: list[Outcome]
    lost: list[Outcome]


def moving_ahead(outcomes: Sequence[Outcome]) -> Ahead | None:
    """PostgreSQL: the statement that moves the rows of ``outcomes`` that end their task to
    history, for the caller to send ahead of its next round trip in the same transaction and
    then hand to ``apply_outcomes`` (the worker sends it with its next claim). None elsewhere,
    or when no outcome ends its task."""
    if connection.vendor != "postgresql":
        return None
    terminal = _terminal(outcomes)
    return finish_pg.finish_ahead(terminal) if terminal else None


def apply_outcomes(outcomes: Sequence[Outcome], moved: Ahead | None = None) -> Applied:
    """Write a batch of outcomes in one transaction; rows we no longer own are left alone.

    Joins the caller's transaction when there is one (the dispatcher writes outcomes and claims
    the next batch under a single commit). ``moved``: ``moving_ahead(outcomes)``, sent already
    or not.
    """
    if not outcomes:
        return Applied([], [])
    with transaction.atomic(savepoint=False):
        if connection.vendor == "postgresql":
            terminal = _terminal(outcomes)
            others = [o for o in outcomes if o.kind not in finish_pg.TERMINAL]
            written = _finish_pg(terminal, moved) + _apply_generic(others)
        else:
            written = _apply_generic(outcomes)
    written_ids = {o.task_id for o in written}
    lost = [o for o in outcomes if o.task_id not in written_ids]
    for outcome in lost:
        logger.warning(
            "lease lost task_id=%s outcome=%s: not written", outcome.task_id, outcome.kind
        )
    return Applied(written, lost)


def _terminal(outcomes: Sequence[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if o.kind in finish_pg.TERMINAL]


def _finish_pg(outcomes: list[Outcome], moved: Ahead | None) -> list[Outcome]:
    if not outcomes:
        return []
    by_id = {o.task_id: o for o in outcomes}
    finished = finish_pg.finish_batch(outcomes, moved)
    tally = counters.Tally()
    for row in finished:
        _announce(row.id, row.task_type, row.status, by_id[row.id])
        tally.add(row.source, row.task_type, row.status)
        tally.ran(row.source, row.task_type, row.duration_ms, row.wait_ms)
    tally.save()
    resolve_dependents({row.id: row.status for row in finished if row.has_dependents})
    children_finished((row.id, row.parent_id, row.status) for row in finished if row.parent_id)
    notify_results([row.id for row in finished if row.has_waiter])
    done = {row.id for row in finished}
    # Rows the statement skipped: fenced off, or flagged for a rerun (portable path).
    rest = _apply_generic([o for o in outcomes if o.task_id not in done])
    return [by_id[row.id] for row in finished] + rest


def _apply_generic(outcomes: Sequence[Outcome]) -> list[Outcome]:
    if not outcomes:
        return []
    by_id = {o.task_id: o for o in outcomes}
    owned = {
        row.id: row
        for row in Task.objects.select_for_update()
        .filter(
            id__in=list(by_id),
            status=TaskStatus.RUNNING,
            lease_token__in={o.lease_token for o in outcomes},
        )
        .order_by("id")
        if row.lease_token == by_id[row.id].lease_token
    }
    _write(owned, by_id)
    return [by_id[i] for i in owned]


def _write(owned: dict[int, Task], by_id: dict[int, Outcome]) -> None:
    terminal: list[Task] = []
    statuses: dict[int, str] = {}
    details: dict[int, Finish] = {}
    tally = counters.Tally()  # retries; ends are counted as they move to history
    for task_id, row in owned.items():
        outcome = by_id[task_id]
        if row.cancel_reason in PARKING_REASONS:
            if outcome.kind in (RETRY, RELEASE):
                # Preempted or paused: back to paused, no retry spent.
                park([(row.id, row.task_type)], row.cancel_reason)
                continue
        elif row.cancel_reason and outcome.kind in (RETRY, RELEASE):
            # Cancellation was requested: the attempt's end is final whatever it raised.
            outcome.kind = row.cancel_reason
        if (
            outcome.kind == COMPLETED
            and row.has_children
            and not row.is_finalizing
            and not row.cancel_reason
        ):
            parent_returned(row, outcome.result)
        elif outcome.kind == RETRY:
            _retry(row, outcome)
            tally.add(counters.source_of(row.worker_id), row.task_type, counters.RETRIED)
            tally.run(row, outcome.duration_ms)
        elif outcome.kind == RELEASE:
            _release(row)
        else:
            reason = "" if row.cancel_reason in PARKING_REASONS else row.cancel_reason
            status = reason or outcome.kind
            terminal.append(row)
            statuses[task_id] = status
            details[task_id] = Finish(
                error=outcome.error,
                traceback=outcome.traceback,
                result=outcome.result,
                duration_ms=outcome.duration_ms,
                **outcome.io,
            )
            _announce(row.id, row.task_type, status, outcome)
    tally.save()
    if terminal:
        move_to_history(terminal, HistoryStatus.COMPLETED, details, statuses=statuses)
        _requeue([r for r in terminal if r.has_requeue and statuses[r.id] in _RERUN_AFTER])


_MAX_RETRY_DELAY = 365 * 86400.0  # an uncapped backoff still lands on a real date


def _retry(row: Task, outcome: Outcome) -> None:
    delay = timedelta(seconds=min(outcome.retry_delay, _MAX_RETRY_DELAY))
    run_after = clock.now() + delay  # for the signal; the row uses the database clock
    Task.objects.filter(id=row.id).update(
        status=TaskStatus.PENDING,
        retry_count=row.retry_count + 1,
        last_error=outcome.error,
        run_after=Now() + delay,
        lease_token=None,
        worker_id=None,
        started_at=None,
        progress=None,
        progress_message="",
    )
    send_on_commit(
        signals.task_failed,
        row.task_type,
        task_id=row.id,
        error=outcome.error,
        will_retry=True,
        retry_after=run_after,
    )


def _release(row: Task) -> None:
    """Back to pending without counting a retry (shutdown, preemption)."""
    Task.objects.filter(id=row.id).update(
        status=TaskStatus.PENDING, lease_token=None, worker_id=None, started_at=None
    )
    notify_workers()


def _announce(task_id: int, sender: str, status: str, outcome: Outcome) -> None:
    if status == HistoryStatus.COMPLETED:
        send_on_commit(
            signals.task_completed, sender, task_id=task_id, duration_ms=outcome.duration_ms
        )
    elif status == HistoryStatus.FAILED:
        send_on_commit(
            signals.task_failed,
            sender,
            task_id=task_id,
            error=outcome.error,
            will_retry=False,
            retry_after=None,
        )
    elif status == HistoryStatus.DEAD_LETTER:
        send_on_commit(signals.task_dead_lettered, sender, task_id=task_id, error=outcome.error)
    elif status in (HistoryStatus.CANCELLED, HistoryStatus.SUPERSEDED):
        send_on_commit(signals.task_cancelled, sender, task_id=task_id)


# A rerun requested while a task ran follows these ends, never a cancellation.
_RERUN_AFTER = (HistoryStatus.COMPLETED, HistoryStatus.FAILED, HistoryStatus.DEAD_LETTER)


def _requeue(rows: list[Task]) -> None:
    """A duplicate arrived while these ran: run each once more, as a fresh task (new id) with
    the same key, payload, tags, TTL and IO budget (and the more urgent priority)."""
    fresh = [
        Task(
            task_type=row.task_type,
            domain=row.domain,
            key=row.key,
            label=row.label,
            priority=row.priority,
            payload=row.payload,
            group_key=row.group_key,
            parent_id=row.parent_id,
            max_retries=row.max_retries,
            ttl_seconds=row.ttl_seconds,
            ttl_from=row.ttl_from,
            expires_at=_rerun_expiry(row),
            timeout_seconds=row.timeout_seconds,
            expected_read_bytes=row.expected_read_bytes,
            expected_write_bytes=row.expected_write_bytes,
            expected_net_rx_bytes=row.expected_net_rx_bytes,
            expected_net_tx_bytes=row.expected_net_tx_bytes,
        )
        for row in rows
        if not row.released_key
    ]
    if not fresh:
        return
    created = Task.objects.bulk_create(fresh)
    old_ids = {row.key: row.id for row in rows}
    tags = [
        TaskTag(task_id=new.id, key=tag.key, value=tag.value)
        for new in created
        for tag in TaskHistoryTag.objects.filter(history_id=old_ids[new.key])
    ]
    TaskTag.objects.bulk_create(tags)
    notify_workers()


def _rerun_expiry(row: Task) -> datetime | None:
    if row.ttl_seconds is None or row.ttl_from != "submission":
        return None
    return clock.now() + timedelta(seconds=row.ttl_seconds)
