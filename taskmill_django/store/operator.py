"""Operator changes to single tasks: pause, resume, reprioritise (the admin's actions).

Each function is one transaction of conditional updates: a row that changed state between the
operator's click and the write (claimed by a worker, finished, cancelled) is left alone and not
counted, so the returned numbers say what really happened.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction

from .. import signals
from ..conf import app_settings
from ..enums import InterruptReason, TaskStatus
from ..models import Task
from ..validation import validate_ids, validate_priority
from .control import preempt_below
from .db import chunks, notify_workers, send_on_commit
from .parking import park, unpaused

# ``Task.pause_reason`` of a task paused by hand (the same value ``store.manual`` writes, so a
# task paused through the API can be resumed from the admin and the other way round).
# Preemption and domain pauses use their own reasons and are lifted by the scheduler.
MANUAL = InterruptReason.MANUAL


def pause_tasks(task_ids: Iterable[int]) -> int:
    """Pause tasks by hand; return how many were paused or asked to pause.

    A pending task is paused at once. A running one is asked to stop: its worker cancels its
    context at the next heartbeat and the row goes ``paused`` (no retry spent) when the attempt
    ends; an attempt that completes first simply completes. Blocked and waiting tasks are not
    due anyway and are left alone.
    """
    ids = validate_ids("task_ids", list(task_ids))
    count = 0
    for chunk in chunks(ids):  # a transaction per chunk: never many rows locked for long
        with transaction.atomic():
            count += Task.objects.filter(
                id__in=chunk, status=TaskStatus.RUNNING, cancel_reason=""
            ).update(cancel_reason=MANUAL)
            rows = list(
                Task.objects.select_for_update()
                .filter(id__in=chunk, status=TaskStatus.PENDING)
                .order_by("id")
                .values_list("id", "task_type")
            )
            count += park(rows, MANUAL)
    return count


def resume_tasks(task_ids: Iterable[int]) -> int:
    """Make tasks paused by hand pending again; return how many were resumed.

    The time spent paused is added to ``paused_seconds`` (priority aging skips it). A running
    task whose pause was requested but not yet carried out keeps running. Tasks paused by
    preemption or a domain pause are not touched: the scheduler resumes those itself.
    """
    ids = validate_ids("task_ids", list(task_ids))
    count = 0
    for chunk in chunks(ids):  # a transaction per chunk: never many rows locked for long
        with transaction.atomic():
            count += Task.objects.filter(
                id__in=chunk, status=TaskStatus.RUNNING, cancel_reason=MANUAL
            ).update(cancel_reason="")
            rows = list(
                Task.objects.select_for_update()
                .filter(id__in=chunk, status=TaskStatus.PAUSED, pause_reason=MANUAL)
                .order_by("id")
                .values_list("id", "task_type")
            )
            if not rows:
                continue
            count += Task.objects.filter(
                id__in=[task_id for task_id, _ in rows],
                status=TaskStatus.PAUSED,
                pause_reason=MANUAL,
            ).update(**unpaused())
            for task_id, task_type in rows:
                send_on_commit(signals.task_resumed, task_type, task_id=task_id)
            notify_workers()
    return count


def set_priority(task_ids: Iterable[int], priority: int) -> int:
    """Give active tasks a new priority (0..255, lower runs first); return how many changed.

    Raising a task to ``PREEMPT_PRIORITY`` or above preempts less urgent running work, exactly
    as submitting it at that priority would have.
    """
    ids = validate_ids("task_ids", list(task_ids))
    priority = validate_priority(priority)
    count = 0
    for chunk in chunks(ids):  # a transaction per chunk: never many rows locked for long
        with transaction.atomic():
            changed = (
                Task.objects.filter(id__in=chunk)
                .exclude(priority=priority)
                .update(priority=priority)
            )
            if changed:
                if priority <= int(app_settings.PREEMPT_PRIORITY):
                    preempt_below(priority)
                notify_workers()
            count += changed
    return count
