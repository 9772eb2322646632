"""Submission: insert new tasks, resolving dedup keys race-free through the unique constraint.

Correctness never rests on select-then-insert: the SELECT ... FOR UPDATE of existing keys is only
the fast path; the unique index on ``taskmill_task.key`` decides, and a lost race re-runs the chunk.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from .. import signals
from ..enums import DuplicateStrategy, HistoryStatus, OutcomeKind, TaskStatus
from ..exceptions import DuplicateTaskError
from ..models import PausedGroup, Task, TaskTag
from ..records import NewTask, SubmitOutcome
from .db import CHUNK, chunks, notify_workers, send_on_commit
from .dependencies import add_dependencies, check_dependencies_exist
from .history import move_to_history

_MAX_RACE_RETRIES = 5


def submit_tasks(new_tasks: Sequence[NewTask]) -> list[SubmitOutcome]:
    """Insert ``new_tasks`` in one transaction (all or nothing) and return one outcome each.

    Runs inside the caller's ``transaction.atomic()`` when there is one, so a submission made in
    a view commits (and becomes visible to workers) only with the view's own writes.
    """
    with transaction.atomic():
        check_dependencies_exist({d for t in new_tasks for d in t.depends_on})
        outcomes: list[SubmitOutcome] = []
        for chunk in chunks(list(new_tasks), CHUNK):
            outcomes.extend(_submit_chunk_with_retry(chunk))
        paused = _paused_groups({t.group_key for t in new_tasks if t.group_key})
        if paused:
            outcomes = [
                SubmitOutcome(o.kind, o.id, t.group_key in paused, o.replaced_id)
                for o, t in zip(outcomes, new_tasks, strict=True)
            ]
        if any(o.kind != OutcomeKind.DUPLICATE for o in outcomes):
            notify_workers()
        for outcome, task in zip(outcomes, new_tasks, strict=True):
            send_on_commit(
                signals.task_submitted, task.task_type, task_id=outcome.id, outcome=outcome
            )
    return outcomes


def _paused_groups(groups: set[str]) -> set[str]:
    if not groups:
        return set()
    return set(PausedGroup.objects.filter(group_key__in=groups).values_list("group_key", flat=True))


def _submit_chunk_with_retry(chunk: Sequence[NewTask]) -> list[SubmitOutcome]:
    for attempt in range(_MAX_RACE_RETRIES):
        try:
            with transaction.atomic():  # savepoint: a lost key race rolls back only this chunk
                return _submit_chunk(chunk)
        except IntegrityError:
            # Another transaction inserted one of our keys after we looked; look again.
            if attempt == _MAX_RACE_RETRIES - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _submit_chunk(chunk: Sequence[NewTask]) -> list[SubmitOutcome]:
    keys = sorted({t.key for t in chunk})
    # Lock existing twins in key order so concurrent batches cannot deadlock on each other.
    existing = {
        row.key: row
        for row in Task.objects.select_for_update().filter(key__in=keys).order_by("key")
    }
    now = timezone.now()
    outcomes: list[SubmitOutcome | None] = [None] * len(chunk)
    to_insert: dict[str, tuple[int, NewTask]] = {}
    replaced: dict[str, int] = {}
    for index, task in enumerate(chunk):
        if task.key in to_insert:
            # The same key twice in one batch: the first one wins, like a twin already queued.
            first_index, first = to_insert[task.key]
            if task.priority < first.priority:
                to_insert[task.key] = (first_index, _with_priority(first, task.priority))
            outcomes[index] = SubmitOutcome(OutcomeKind.DUPLICATE, -first_index - 1)
            continue
        twin = existing.get(task.key)
        if twin is None:
            to_insert[task.key] = (index, task)
            continue
        outcome = _resolve_duplicate(twin, task)
        if outcome is None:  # superseded: the twin left the key free
            replaced[task.key] = twin.id
            to_insert[task.key] = (index, task)
        else:
            outcomes[index] = outcome
    inserted = _insert([task for _, task in to_insert.values()], now)
    ids_by_key = {row.key: row.id for row in inserted}
    for key, (index, _) in to_insert.items():
        kind = OutcomeKind.SUPERSEDED if key in replaced else OutcomeKind.INSERTED
        outcomes[index] = SubmitOutcome(kind, ids_by_key[key], replaced_id=replaced.get(key))
    # Resolve in-batch duplicates (stored as negative placeholders) to the inserted ids.
    final: list[SubmitOutcome] = []
    for outcome in outcomes:
        assert outcome is not None  # noqa: S101 - every slot was filled above
        if outcome.id < 0:
            first = outcomes[-outcome.id - 1]
            assert first is not None  # noqa: S101
            outcome = SubmitOutcome(OutcomeKind.DUPLICATE, first.id)
        final.append(outcome)
    return final


def _with_priority(task: NewTask, priority: int) -> NewTask:
    from dataclasses import replace

    return replace(task, priority=priority)


def _resolve_duplicate(twin: Task, task: NewTask) -> SubmitOutcome | None:
    """Apply the duplicate strategy to an occupied key; None means "insert the new task"."""
    if task.duplicate == DuplicateStrategy.REJECT:
        raise DuplicateTaskError(task.key, twin.id)
    if task.duplicate == DuplicateStrategy.SUPERSEDE:
        if twin.status == TaskStatus.RUNNING:
            # The running twin keeps running until its worker sees the request; free the key now
            # so the replacement can be inserted, and let it finish as "superseded".
            Task.objects.filter(id=twin.id).update(
                cancel_reason=HistoryStatus.SUPERSEDED, key=f"superseded:{twin.id}"[:64]
            )
        else:
            move_to_history([twin], HistoryStatus.SUPERSEDED)
        return None
    # skip
    if twin.status in (TaskStatus.PENDING, TaskStatus.PAUSED, TaskStatus.BLOCKED):
        if task.priority < twin.priority:
            Task.objects.filter(id=twin.id).update(priority=task.priority)
            return SubmitOutcome(OutcomeKind.UPGRADED, twin.id)
        return SubmitOutcome(OutcomeKind.DUPLICATE, twin.id)
    if twin.status == TaskStatus.RUNNING and not twin.cancel_reason:
        requeue_priority = min(task.priority, twin.requeue_priority or task.priority)
        Task.objects.filter(id=twin.id).update(has_requeue=True, requeue_priority=requeue_priority)
        return SubmitOutcome(OutcomeKind.REQUEUED, twin.id)
    return SubmitOutcome(OutcomeKind.DUPLICATE, twin.id)


def _insert(new_tasks: list[NewTask], now: timezone.datetime) -> list[Task]:
    if not new_tasks:
        return []
    rows = [_row(task, now) for task in new_tasks]
    created = Task.objects.bulk_create(rows)
    if any(row.pk is None for row in created):  # backends that cannot return ids
        by_key = dict(
            Task.objects.filter(key__in=[r.key for r in created]).values_list("key", "id")
        )
        for row in created:
            row.pk = row.id = by_key[row.key]
    tags = [
        TaskTag(task_id=row.id, key=k, value=v)
        for row, task in zip(created, new_tasks, strict=True)
        for k, v in task.tags.items()
    ]
    if tags:
        TaskTag.objects.bulk_create(tags)
    edges = [(row.id, task.depends_on) for row, task in zip(created, new_tasks, strict=True)]
    if any(deps for _, deps in edges):
        add_dependencies(edges)
    return created


def _row(task: NewTask, now: timezone.datetime) -> Task:
    run_after = task.run_after
    if isinstance(run_after, timedelta):
        run_after = now + run_after
    expires_at = None
    if task.ttl_seconds is not None and task.ttl_from == "submission":
        expires_at = now + timedelta(seconds=task.ttl_seconds)
    io = task.expected_io
    return Task(
        task_type=task.task_type,
        domain=task.domain,
        key=task.key,
        label=task.label,
        priority=task.priority,
        status=TaskStatus.BLOCKED if task.depends_on else TaskStatus.PENDING,
        payload=task.payload,
        group_key=task.group_key,
        parent_id=task.parent_id,
        fail_fast=task.fail_fast,
        on_dependency_failure=task.on_dependency_failure,
        max_retries=task.max_retries,
        run_after=run_after,
        ttl_seconds=task.ttl_seconds,
        ttl_from=task.ttl_from,
        expires_at=expires_at,
        expected_read_bytes=io.read_bytes,
        expected_write_bytes=io.write_bytes,
        expected_net_rx_bytes=io.net_rx_bytes,
        expected_net_tx_bytes=io.net_tx_bytes,
    )
