"""Cancellation: waiting rows go to history at once; running rows get a fenced request."""

from __future__ import annotations

from django.db import transaction
from django.db.models import Q

from .. import signals
from ..enums import HistoryStatus, TaskStatus
from ..models import Task
from .db import CHUNK, send_on_commit
from .history import move_to_history


def cancel_matching(condition: Q, *, status: str = HistoryStatus.CANCELLED) -> list[int]:
    """Cancel every active task matching ``condition``; return the ids cancelled (or asked
    to stop), chunk by chunk: the matching ones by id, then their children.

    Running tasks are not stopped here: their row gets ``cancel_reason`` and the owning worker
    cancels the task's context on its next heartbeat, then records the terminal status.
    Children of cancelled parents are cancelled with them.

    Rows are taken ``CHUNK`` at a time in id order, each chunk in its own transaction (when the
    caller has none), so cancelling a million tasks never holds a million row locks, nor keeps
    a worker's outcome write waiting on them for long (RELIABILITY G13).
    """
    done: list[int] = []
    after = 0
    # A running row that was asked to stop already is not asked again (and not counted).
    open_rows = ~Q(status=TaskStatus.RUNNING) | Q(cancel_reason="")
    while True:
        with transaction.atomic():
            rows = list(
                Task.objects.select_for_update()
                .filter(condition, open_rows, id__gt=after)
                .order_by("id")[:CHUNK]
            )
            if not rows:
                return done
            done += _cancel_rows(rows, status)
        after = rows[-1].id
        if len(rows) < CHUNK:
            return done


def _cancel_rows(rows: list[Task], status: str) -> list[int]:
    parents = [r.id for r in rows]
    # Children go with their parent, some inside move_to_history: list them beforehand.
    family = _descendants(parents, exclude=set(parents))
    running = [r for r in rows if r.status == TaskStatus.RUNNING]
    idle = [r for r in rows if r.status != TaskStatus.RUNNING]
    if running:
        Task.objects.filter(id__in=[r.id for r in running]).update(cancel_reason=status)
    if idle:
        signal = signals.task_expired if status == HistoryStatus.EXPIRED else signals.task_cancelled
        if status in (HistoryStatus.CANCELLED, HistoryStatus.EXPIRED):
            for row in idle:
                send_on_commit(signal, row.task_type, task_id=row.id)
        move_to_history(idle, status)
    if family and Task.objects.filter(parent_id__in=parents).exists():
        cancel_matching(Q(parent_id__in=parents), status=status)  # of running parents
    spared = set(Task.objects.filter(id__in=family, cancel_reason="").values_list("id", flat=True))
    return [r.id for r in rows] + [i for i in family if i not in spared]


def _descendants(ids: list[int], exclude: set[int]) -> list[int]:
    """Active children, grandchildren, ... of ``ids`` (level by level, by id), but ``exclude``."""
    found: list[int] = []
    level = ids
    while level:
        level = list(
            Task.objects.filter(parent_id__in=level).order_by("id").values_list("id", flat=True)
        )
        found += [i for i in level if i not in exclude]
    return found
