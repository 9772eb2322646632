"""Parent and child tasks: spawning, waiting, fail-fast, and finalize.

A parent whose executor returns while children are active goes ``waiting`` with its return value
kept as ``memo``. The transaction that finishes its last child decides what follows: the
parent's ``finalize`` hook (the row goes pending again, flagged ``is_finalizing``), plain
completion, or failure. Parent rows are locked before they are judged, so a child finishing on
one worker and the parent returning on another cannot both miss the moment.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence

from django.db import transaction
from django.db.models import Q

from .. import registry, signals
from ..enums import HistoryStatus, TaskStatus
from ..exceptions import LeaseLost
from ..models import Task, TaskHistory
from ..records import NewTask, SubmitOutcome
from .db import notify_workers, send_on_commit


def spawn(
    spawner_id: int,
    lease_token: uuid.UUID | None,
    parent_id: int,
    new_tasks: Sequence[NewTask],
) -> list[SubmitOutcome]:
    """Insert children of ``parent_id`` on behalf of the running task ``spawner_id`` (the
    parent itself, or a sibling). Fenced by the spawner's lease; one transaction."""
    from .submit import submit_tasks

    with transaction.atomic():
        owned = Task.objects.filter(
            id=spawner_id, lease_token=lease_token, status=TaskStatus.RUNNING
        ).exists()
        if not owned:
            raise LeaseLost(f"task {spawner_id} no longer holds its lease; nothing spawned")
        return submit_tasks(new_tasks)  # marks the parent as having children


def parent_returned(row: Task, memo: object) -> str:
    """The parent's executor returned (row locked, lease checked). Returns what happened:
    ``waiting`` (children still active) or the parent's next state once they are all done."""
    if Task.objects.filter(parent_id=row.id).exists():
        Task.objects.filter(id=row.id).update(
            status=TaskStatus.WAITING, memo=memo, lease_token=None, worker_id=None
        )
        send_on_commit(signals.task_waiting, row.task_type, task_id=row.id)
        return TaskStatus.WAITING
    row.memo = memo
    return _all_children_done(row)


def children_finished(finished: Iterable[tuple[int, int, str]]) -> None:
    """React to children (child id, parent id, terminal status) that just reached history."""
    by_parent: dict[int, list[tuple[int, str]]] = {}
    for child_id, parent_id, status in finished:
        by_parent.setdefault(parent_id, []).append((child_id, status))
    if not by_parent:
        return
    parents = Task.objects.select_for_update().filter(id__in=list(by_parent)).order_by("id")
    for parent in parents:
        failures = [c for c, s in by_parent[parent.id] if s != HistoryStatus.COMPLETED]
        if failures and parent.fail_fast:
            _fail_fast(parent, failures[0])
        elif (
            parent.status == TaskStatus.WAITING
            and not Task.objects.filter(parent_id=parent.id).exists()
        ):
            _all_children_done(parent)


def _fail_fast(parent: Task, child_id: int) -> None:
    """Fail the parent first, then cancel the other children: cancelling them reports back
    here, and must find the parent already failed (or gone), not fail it twice."""
    from .cancel import cancel_matching

    if parent.cancel_reason:
        return  # already on its way out
    error = f"child task {child_id} did not complete (fail_fast)"
    if parent.status == TaskStatus.RUNNING:
        # Its worker records "failed" when the attempt ends (and cancels its context now).
        Task.objects.filter(id=parent.id).update(
            cancel_reason=HistoryStatus.FAILED, last_error=error
        )
        cancel_matching(Q(parent_id=parent.id))
        return
    # Moving a parent that did not complete cancels its remaining children.
    _fail_parent(parent, error)


def _all_children_done(parent: Task) -> str:
    """Every child finished: fail (a child failed, no fail-fast), finalize, or complete."""
    from .history import Finish, move_to_history

    failed = (
        TaskHistory.objects.filter(parent_id=parent.id)
        .exclude(status=HistoryStatus.COMPLETED)
        .count()
    )
    if failed:
        _fail_parent(parent, f"{failed} child task(s) did not complete")
        return HistoryStatus.FAILED
    definition = registry.find_task(parent.task_type)
    if definition is not None and definition.finalize_func is not None:
        Task.objects.filter(id=parent.id).update(
            status=TaskStatus.PENDING,
            is_finalizing=True,
            memo=parent.memo,
            lease_token=None,
            worker_id=None,
            run_after=None,
        )
        notify_workers()
        return TaskStatus.PENDING
    send_on_commit(signals.task_completed, parent.task_type, task_id=parent.id, duration_ms=None)
    move_to_history([parent], HistoryStatus.COMPLETED, {parent.id: Finish(result=parent.memo)})
    return HistoryStatus.COMPLETED


def _fail_parent(parent: Task, error: str) -> None:
    from .history import Finish, move_to_history

    send_on_commit(
        signals.task_failed,
        parent.task_type,
        task_id=parent.id,
        error=error,
        will_retry=False,
        retry_after=None,
    )
    move_to_history([parent], HistoryStatus.FAILED, {parent.id: Finish(error=error)})
