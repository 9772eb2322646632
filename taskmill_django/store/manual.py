"""Manual pause and resume of one task (the REST API's ``pause`` and ``resume`` actions).

Each function is one transaction whose write is conditional on the status it read: a task a
worker claimed (or that finished) between the request and the write is left alone, and the
caller learns that nothing changed.
"""

from __future__ import annotations

from django.db import transaction
from django.db.models.functions import Now

from .. import signals
from ..enums import TaskStatus
from ..exceptions import TaskNotFound
from ..models import Task
from .control import unpaused
from .db import notify_workers, send_on_commit
from .operator import MANUAL

# ``Task.pause_reason`` of a task paused by hand, shared with the admin's store.operator so a
# task paused on one surface can be resumed on the other. Preemption and domain pauses use
# their own reasons and are lifted by the scheduler, never by ``resume_task``.
BY_HAND = (MANUAL,)


def pause_task(task_id: int) -> bool:
    """Pause a pending task so no worker claims it; False if it is not pending (any more).

    Only ``pending`` tasks can be paused: a running task would need its worker's cooperation,
    and a blocked or waiting one is not due anyway. Raises TaskNotFound when no active task
    has this id.
    """
    with transaction.atomic():
        row = _locked(task_id)
        if row[0] != TaskStatus.PENDING:
            return False
        changed = Task.objects.filter(id=task_id, status=TaskStatus.PENDING).update(
            status=TaskStatus.PAUSED, pause_reason=MANUAL, paused_at=Now()
        )
        if changed:
            send_on_commit(signals.task_paused, row[1], task_id=task_id)
    return bool(changed)


def resume_task(task_id: int) -> bool:
    """Make a task paused by hand pending again; False if it is not paused by hand.

    The time spent paused is added to ``paused_seconds`` (priority aging skips it). Raises
    TaskNotFound when no active task has this id.
    """
    with transaction.atomic():
        row = _locked(task_id)
        if row[0] != TaskStatus.PAUSED or row[2] not in BY_HAND:
            return False
        changed = Task.objects.filter(
            id=task_id, status=TaskStatus.PAUSED, pause_reason__in=BY_HAND
        ).update(**unpaused())
        if changed:
            send_on_commit(signals.task_resumed, row[1], task_id=task_id)
            notify_workers()
    return bool(changed)


def _locked(task_id: int) -> tuple[str, str, str]:
    """(status, task_type, pause_reason) of the active row, locked until commit."""
    row = (
        Task.objects.select_for_update()
        .filter(id=task_id)
        .values_list("status", "task_type", "pause_reason")
        .first()
    )
    if row is None:
        raise TaskNotFound(f"no active task with id {task_id}")
    return row
