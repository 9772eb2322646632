"""Submission: insert new tasks, resolving dedup keys race-free through the unique constraint.

Correctness never rests on select-then-insert: the SELECT ... FOR UPDATE of existing keys is only
the fast path; the unique index on ``taskmill_task.key`` decides, and a lost race re-runs the chunk.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol

from django.db import IntegrityError, OperationalError, connection, transaction
from django.db.models import Q
from django.db.models.functions import Now

from .. import clock, signals, tracing
from ..enums import PARKING_REASONS, DuplicateStrategy, HistoryStatus, OutcomeKind, TaskStatus
from ..exceptions import DuplicateTaskError, ValidationError
from ..models import PausedGroup, Task, TaskTag
from ..records import NewTask, SubmitOutcome
from . import bulk, bulk_copy
from .db import CHUNK, chunks, is_postgres, send_on_commit
from .dependencies import add_dependencies, check_dependencies_exist
from .history import move_to_history

_MAX_RACE_RETRIES = 5
_MAX_DEADLOCK_RETRIES = 10


class SubmissionObserver(Protocol):
    """Sees every submission made while it is registered (``testing.capture()``)."""

    keeps_out: bool  # True: the tasks are recorded only, never written

    def observed(self, new_tasks: Sequence[NewTask], outcomes: Sequence[SubmitOutcome]) -> None:
        """Called after each submission with what was submitted and its outcomes."""


_observers: ContextVar[tuple[SubmissionObserver, ...]] = ContextVar(
    "taskmill_submission_observers", default=()
)

KEPT_OUT = "captured"
"""``SubmitOutcome.kind`` of a task an observer kept out of the database (its ``id`` is None)."""


@contextmanager
def observing(observer: SubmissionObserver) -> Iterator[None]:
    """Register ``observer`` for submissions made in this context (thread or task)."""
    token = _observers.set((*_observers.get(), observer))
    try:
        yield
    finally:
        _observers.reset(token)


def submit_tasks(new_tasks: Sequence[NewTask]) -> list[SubmitOutcome]:
    """Insert ``new_tasks`` in one transaction (all or nothing) and return one outcome each.

    Runs inside the caller's ``transaction.atomic()`` when there is one, so a submission made in
    a view commits (and becomes visible to workers) only with the view's own writes. Outside
    one, a transaction the database aborted as a deadlock victim (InnoDB, when concurrent
    batches share keys) is simply run again: nothing of it was kept.
    """
    observers = _observers.get()
    if not observers:
        return _submit_retrying(new_tasks)
    if any(o.keeps_out for o in observers):
        outcomes = [SubmitOutcome(KEPT_OUT, None) for _ in new_tasks]
    else:
        outcomes = _submit_retrying(new_tasks)
    for observer in observers:
        observer.observed(new_tasks, outcomes)
    return outcomes


def _submit_retrying(new_tasks: Sequence[NewTask]) -> list[SubmitOutcome]:
    for attempt in range(_MAX_DEADLOCK_RETRIES):
        try:
            return _submit_tasks(new_tasks)
        except OperationalError as exc:
            if connection.in_atomic_block or not _is_deadlock(exc):
                raise
            if attempt == _MAX_DEADLOCK_RETRIES - 1:
                raise
            time.sleep(0.01 * (attempt + 1) + random.random() * 0.05)  # noqa: S311
    raise AssertionError("unreachable")  # pragma: no cover


def _is_deadlock(exc: OperationalError) -> bool:
    cause = exc.__cause__
    code = getattr(cause, "args", [None])[0] if cause is not None else None
    return code == 1213 or getattr(cause, "sqlstate", None) == "40P01"


def _submit_tasks(new_tasks: Sequence[NewTask]) -> list[SubmitOutcome]:
    carrier = tracing.current_carrier()  # None unless OpenTelemetry has an active span
    if carrier is None and _is_simple(new_tasks):
        # One statement in autocommit mode is atomic on its own: no BEGIN/COMMIT round trips.
        outcome = _submit_simple(new_tasks[0])
        if outcome is not None:
            return [outcome]
    with transaction.atomic():
        check_dependencies_exist({d for t in new_tasks for d in t.depends_on})
        _adopt_children({t.parent_id for t in new_tasks if t.parent_id is not None})
        outcomes: list[SubmitOutcome] = []
        copying = _Copying()
        for chunk in chunks(list(new_tasks), CHUNK):
            outcomes.extend(_submit_chunk(chunk, copying))
        _preempt(new_tasks, outcomes)
        if carrier is not None:
            _keep_trace_context(outcomes, carrier)
        paused = _paused_groups({t.group_key for t in new_tasks if t.group_key})
        if paused:
            outcomes = [
                SubmitOutcome(o.kind, o.id, t.group_key in paused, o.replaced_id)
                for o, t in zip(outcomes, new_tasks, strict=True)
            ]
        for outcome, task in zip(outcomes, new_tasks, strict=True):
            if not signals.task_submitted.receivers:
                break  # nobody listens at all: skip the per-task sender lookups
            send_on_commit(
                signals.task_submitted, task.task_type, task_id=outcome.id, outcome=outcome
            )
    return outcomes


_NEW_ROWS = (OutcomeKind.INSERTED, OutcomeKind.SUPERSEDED)


def _keep_trace_context(outcomes: Sequence[SubmitOutcome], carrier: dict[str, str]) -> None:
    """Store the submitter's trace context with the tasks this submission created (a twin
    that already held the key keeps its own)."""
    created = [o.id for o in outcomes if o.kind in _NEW_ROWS and o.id is not None]
    for chunk in chunks(created, CHUNK):
        Task.objects.filter(id__in=list(chunk)).update(trace_context=carrier)


def _preempt(new_tasks: Sequence[NewTask], outcomes: Sequence[SubmitOutcome]) -> None:
    """An urgent submission pauses less urgent running work anywhere in the cluster."""
    from ..conf import app_settings
    from .control import preempt_below

    threshold = int(app_settings.PREEMPT_PRIORITY)
    urgent = [
        t.priority
        for t, o in zip(new_tasks, outcomes, strict=True)
        if t.priority <= threshold and o.kind != OutcomeKind.DUPLICATE
    ]
    if urgent:
        preempt_below(min(urgent))


def _adopt_children(parent_ids: set[int]) -> None:
    """A child needs an active parent, which from now on waits for its children."""
    if not parent_ids:
        return
    found = Task.objects.filter(id__in=parent_ids).update(has_children=True)
    if found != len(parent_ids):
        active = set(Task.objects.filter(id__in=parent_ids).values_list("id", flat=True))
        missing = sorted(parent_ids - active)
        raise ValidationError("parent", f"no active task with id {missing[0]}")


def _is_simple(new_tasks: Sequence[NewTask]) -> bool:
    if len(new_tasks) != 1 or connection.in_atomic_block or not bulk.supports_set_insert():
        return False
    task = new_tasks[0]
    from ..conf import app_settings

    if task.priority <= int(app_settings.PREEMPT_PRIORITY):
        return False  # may preempt: needs the full path
    return not (task.tags or task.depends_on or task.group_key or task.parent_id)


def _submit_simple(task: NewTask) -> SubmitOutcome | None:
    """Insert one untagged task with a single statement; None when its key is occupied."""
    inserted = bulk.insert_rows(
        "taskmill_task",
        _COLUMNS,
        [_values(task, clock.now())],
        conflict_key="key",
        returning=("id",),
        notify=True,
    )
    if not inserted:
        return None
    outcome = SubmitOutcome(OutcomeKind.INSERTED, inserted[0][0])
    send_on_commit(signals.task_submitted, task.task_type, task_id=outcome.id, outcome=outcome)
    return outcome


def _paused_groups(groups: set[str]) -> set[str]:
    if not groups:
        return set()
    active = Q(paused_until__isnull=True) | Q(paused_until__gt=Now())
    return set(
        PausedGroup.objects.filter(active, group_key__in=groups).values_list("group_key", flat=True)
    )


@dataclass
class _Copying:
    """Whether this submission still tries ``COPY`` for its large chunks: not after one
    met a taken key (a batch that repeats keys would pay a wasted copy per chunk)."""

    allowed: bool = True


def _submit_chunk(chunk: Sequence[NewTask], copying: _Copying) -> list[SubmitOutcome]:
    """Insert first; only keys that turn out occupied are looked at (and locked) afterwards.

    The common case, a new key, costs one INSERT ... ON CONFLICT DO NOTHING and nothing else
    (a ``COPY`` for a large chunk on PostgreSQL, see ``bulk_copy``).
    """
    now = clock.now()
    outcomes: list[SubmitOutcome | None] = [None] * len(chunk)
    pending: dict[str, tuple[int, NewTask]] = {}
    repeats: dict[int, int] = {}
    for index, task in enumerate(chunk):
        if task.key in pending:
            if task.duplicate == DuplicateStrategy.REJECT:
                raise DuplicateTaskError(task.key, None, task.task_type, task.label)
            # The same key twice in one batch: the first one wins, like a twin already queued,
            # and carries the more urgent of the two priorities.
            first_index, first = pending[task.key]
            if task.priority < first.priority:
                pending[task.key] = (first_index, replace(first, priority=task.priority))
            repeats[index] = first_index
        else:
            pending[task.key] = (index, task)
    replaced: dict[str, int] = {}
    for _ in range(_MAX_RACE_RETRIES):
        inserted = _insert([task for _, task in pending.values()], now, copying)
        for key, task_id in inserted.items():
            kind = OutcomeKind.SUPERSEDED if key in replaced else OutcomeKind.INSERTED
            outcomes[pending[key][0]] = SubmitOutcome(kind, task_id, replaced_id=replaced.get(key))
        pending = {k: v for k, v in pending.items() if k not in inserted}
        if not pending:
            break
        pending = _resolve_occupied(pending, outcomes, replaced)
    else:
        raise IntegrityError("dedup keys kept changing hands; submission abandoned")
    for index, first_index in repeats.items():
        winner = outcomes[first_index]
        assert winner is not None  # noqa: S101 - filled above
        outcomes[index] = SubmitOutcome(OutcomeKind.DUPLICATE, winner.id)
    return [o for o in outcomes if o is not None]


def _resolve_occupied(
    pending: dict[str, tuple[int, NewTask]],
    outcomes: list[SubmitOutcome | None],
    replaced: dict[str, int],
) -> dict[str, tuple[int, NewTask]]:
    """Apply duplicate strategies to keys whose insert was skipped; return keys to insert again."""
    # Lock twins in key order so concurrent batches cannot deadlock on each other.
    twins = {
        row.key: row
        for row in Task.objects.select_for_update().filter(key__in=sorted(pending)).order_by("key")
    }
    again: dict[str, tuple[int, NewTask]] = {}
    for key, (index, task) in pending.items():
        twin = twins.get(key)
        if twin is None:  # the twin finished in between: the key is free now
            again[key] = (index, task)
            continue
        outcome = _resolve_duplicate(twin, task)
        if outcome is None:  # superseded: the twin left the key free
            replaced[key] = twin.id
            again[key] = (index, task)
        else:
            outcomes[index] = outcome
    return again


def _resolve_duplicate(twin: Task, task: NewTask) -> SubmitOutcome | None:
    """Apply the duplicate strategy to an occupied key; None means "insert the new task"."""
    if task.duplicate == DuplicateStrategy.REJECT:
        raise DuplicateTaskError(task.key, twin.id, task.task_type, task.label)
    if task.duplicate == DuplicateStrategy.SUPERSEDE:
        if twin.status == TaskStatus.RUNNING:
            # The running twin keeps running until its worker sees the request; free the key now
            # so the replacement can be inserted, and let it finish as "superseded".
            _release_key(twin, HistoryStatus.SUPERSEDED)
        else:
            send_on_commit(signals.task_cancelled, twin.task_type, task_id=twin.id)
            move_to_history([twin], HistoryStatus.SUPERSEDED)
        return None
    if twin.status == TaskStatus.RUNNING and twin.cancel_reason not in ("", *PARKING_REASONS):
        # The twin is on its way out (cancelled or superseded): this submission takes the key.
        _release_key(twin, twin.cancel_reason)
        return None
    # skip
    if twin.status in (TaskStatus.PENDING, TaskStatus.PAUSED, TaskStatus.BLOCKED):
        if task.priority < twin.priority:
            Task.objects.filter(id=twin.id).update(priority=task.priority)
            return SubmitOutcome(OutcomeKind.UPGRADED, twin.id)
        return SubmitOutcome(OutcomeKind.DUPLICATE, twin.id)
    if twin.status == TaskStatus.RUNNING:
        # The rerun inherits the row's priority: keep the more urgent of the two.
        Task.objects.filter(id=twin.id).update(
            has_requeue=True, priority=min(task.priority, twin.priority)
        )
        return SubmitOutcome(OutcomeKind.REQUEUED, twin.id)
    return SubmitOutcome(OutcomeKind.DUPLICATE, twin.id)


def _release_key(twin: Task, reason: str) -> None:
    """Give a running twin's key up (kept in ``released_key`` for its history row)."""
    Task.objects.filter(id=twin.id).update(
        cancel_reason=reason,
        released_key=twin.released_key or twin.key,
        key=f"released-{twin.id}"[:64],
        has_requeue=False,
    )


def _insert(new_tasks: list[NewTask], now: datetime, copying: _Copying) -> dict[str, int]:
    """Insert tasks whose key is free; return {key: id} of those inserted (others are occupied)."""
    if not new_tasks:
        return {}
    copied = _copy(new_tasks, now, copying)
    if copied is not None:
        ids = copied
    elif bulk.supports_set_insert():
        ids = dict(
            bulk.insert_rows(
                "taskmill_task",
                _COLUMNS,
                [_values(task, now) for task in new_tasks],
                conflict_key="key",
                returning=("key", "id"),
                notify=True,  # wake idle PostgreSQL workers at commit, in the same statement
                # Concurrent batches that share keys must insert them in one global order, or
                # two of them can deadlock on the unique index; ids keep submission order.
                insert_order="key",
            )
        )
    else:
        ids = _insert_one_by_one(new_tasks, now)
    by_key = {task.key: task for task in new_tasks}
    tags = [(ids[k], name, value) for k in ids for name, value in by_key[k].tags.items()]
    if tags:
        if bulk.supports_set_insert():
            bulk.insert_rows("taskmill_task_tag", _TAG_COLUMNS, tags)
        else:
            TaskTag.objects.bulk_create(TaskTag(task_id=t, key=k, value=v) for t, k, v in tags)
    edges = [(ids[k], by_key[k].depends_on) for k in ids if by_key[k].depends_on]
    if edges:
        add_dependencies(edges)
    return ids


def _copy(new_tasks: list[NewTask], now: datetime, copying: _Copying) -> dict[str, int] | None:
    """PostgreSQL, many rows: insert them all with ``COPY`` ({key: id}); None when that is
    not worth it or a key was taken (nothing kept: the caller inserts them the other way)."""
    if not copying.allowed or len(new_tasks) < bulk_copy.MIN_ROWS or not is_postgres():
        return None
    ids = bulk_copy.copy_rows(
        "taskmill_task",
        _COLUMNS,
        [_values(task, now, payload=_json_text(task)) for task in new_tasks],
        order_by=_KEY_COLUMN,
        notify=True,
    )
    if ids is None:
        copying.allowed = False
        return None
    return {task.key: task_id for task, task_id in zip(new_tasks, ids, strict=True)}


def _insert_one_by_one(new_tasks: list[NewTask], now: datetime) -> dict[str, int]:
    """Portable path (MySQL/MariaDB): a savepoint per row turns a key conflict into a skip."""
    ids: dict[str, int] = {}
    # Submission order (ids keep the batch's FIFO order); concurrent batches that deadlock
    # on shared keys are retried whole by submit_tasks.
    for task in new_tasks:
        try:
            with transaction.atomic():
                row = Task.objects.create(
                    **dict(zip(_FIELD_NAMES, _values(task, now), strict=True))
                )
        except IntegrityError:
            continue
        ids[task.key] = row.id
    return ids


_C = bulk.Column
_COLUMNS = (
    _C("task_type", "text"),
    _C("domain", "text"),
    _C("key", "text"),
    _C("label", "text"),
    _C("priority", "int"),
    _C("status", "text"),
    _C("payload", "text", "json"),
    _C("group_key", "text"),
    _C("parent_id", "bigint"),
    _C("fail_fast", "bool", "bool"),
    _C("on_dependency_failure", "text"),
    _C("max_retries", "int"),
    _C("run_after", "timestamptz", "datetime"),
    _C("ttl_seconds", "float8"),
    _C("ttl_from", "text"),
    _C("expires_at", "timestamptz", "datetime"),
    _C("timeout_seconds", "float8"),
    _C("expected_read_bytes", "bigint"),
    _C("expected_write_bytes", "bigint"),
    _C("expected_net_rx_bytes", "bigint"),
    _C("expected_net_tx_bytes", "bigint"),
)
_FIELD_NAMES = tuple(c.name for c in _COLUMNS)
_KEY_COLUMN = _FIELD_NAMES.index("key")
_TAG_COLUMNS = (_C("task_id", "bigint"), _C("key", "text"), _C("value", "text"))


def _json_text(task: NewTask) -> object:
    return task.payload if task.payload_json is None else bulk.JsonText(task.payload_json)


def _values(task: NewTask, now: datetime, payload: object = None) -> tuple[object, ...]:
    """The row of ``_COLUMNS`` for ``task``; ``payload`` stands in for its payload."""
    run_after = task.run_after
    if isinstance(run_after, timedelta):
        run_after = now + run_after
    expires_at = None
    if task.ttl_seconds is not None and task.ttl_from == "submission":
        expires_at = now + timedelta(seconds=task.ttl_seconds)
    io = task.expected_io
    return (
        task.task_type,
        task.domain,
        task.key,
        task.label,
        task.priority,
        TaskStatus.BLOCKED.value if task.depends_on else TaskStatus.PENDING.value,
        task.payload if payload is None else payload,
        task.group_key,
        task.parent_id,
        task.fail_fast,
        task.on_dependency_failure,
        task.max_retries,
        run_after,
        task.ttl_seconds,
        task.ttl_from,
        expires_at,
        task.timeout_seconds,
        io.read_bytes,
        io.write_bytes,
        io.net_rx_bytes,
        io.net_tx_bytes,
    )
