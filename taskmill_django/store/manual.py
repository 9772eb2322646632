"""Manual pause and resume of one task (the REST API's ``pause`` and ``resume`` actions):
``store.operator``'s bulk functions for one id, which must exist.

Shared with the admin so a task paused on one surface can be resumed on the other. Preemption
and domain pauses use their own reasons and are lifted by the scheduler, never here.
"""

from __future__ import annotations

from ..exceptions import TaskNotFound
from ..models import Task
from .operator import pause_tasks, resume_tasks


def pause_task(task_id: int) -> bool:
    """Pause a pending task, or ask a running one to pause; False if it is neither (any
    more), or a pause was already requested. Raises TaskNotFound when no active task has
    this id."""
    _require(task_id)
    return pause_tasks([task_id]) == 1


def resume_task(task_id: int) -> bool:
    """Make a task paused by hand pending again (or withdraw a pause not yet carried out);
    False if there is nothing to resume. Raises TaskNotFound when no active task has this
    id."""
    _require(task_id)
    return resume_tasks([task_id]) == 1


def _require(task_id: int) -> None:
    if not Task.objects.filter(id=task_id).exists():
        raise TaskNotFound(f"no active task with id {task_id}")
