"""Cancellation: waiting rows go to history at once; running rows get a fenced request."""

from __future__ import annotations

from django.db import transaction
from django.db.models import Q

from .. import signals
from ..enums import HistoryStatus, TaskStatus
from ..models import Task
from .db import send_on_commit
from .history import move_to_history


def cancel_matching(condition: Q, *, status: str = HistoryStatus.CANCELLED) -> int:
    """Cancel every active task matching ``condition``; return how many were cancelled.

    Running tasks are not stopped here: their row gets ``cancel_reason`` and the owning worker
    cancels the task's context on its next heartbeat, then records the terminal status.
    Children of cancelled parents are cancelled with them.
    """
    with transaction.atomic():
        rows = list(Task.objects.select_for_update().filter(condition).order_by("id"))
        if not rows:
            return 0
        running = [r for r in rows if r.status == TaskStatus.RUNNING and not r.cancel_reason]
        idle = [r for r in rows if r.status != TaskStatus.RUNNING]
        if running:
            Task.objects.filter(id__in=[r.id for r in running]).update(cancel_reason=status)
        if idle:
            signal = (
                signals.task_expired if status == HistoryStatus.EXPIRED else signals.task_cancelled
            )
            if status in (HistoryStatus.CANCELLED, HistoryStatus.EXPIRED):
                for row in idle:
                    send_on_commit(signal, row.task_type, task_id=row.id)
            move_to_history(idle, status)
        count = len(running) + len(idle)
        parents = [r.id for r in rows]
        if Task.objects.filter(parent_id__in=parents).exists():
            count += cancel_matching(Q(parent_id__in=parents), status=status)
    return count
