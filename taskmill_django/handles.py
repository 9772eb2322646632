"""TaskStore and DomainHandle: the query API of SPEC §3, thin wrappers over the read side
(``read/``) and the writers (``store/``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.db.models import Q
from django.db.models.functions import Now

from . import registry
from .enums import HistoryStatus, TaskStatus
from .exceptions import AlreadyRetried, TaskNotFound, ValidationError
from .models import Task, TaskHistory
from .read import progress, queries, results
from .read.queries import EVERYTHING
from .read.snapshot import build_snapshot, recurring_infos
from .records import (
    ByteProgress,
    EstimatedProgress,
    IoTotals,
    RecurringInfo,
    Snapshot,
    SubmitOutcome,
    TypeStats,
)
from .store import cancel as cancel_store
from .store import control, maintenance, recurring
from .store.submit import submit_tasks

if TYPE_CHECKING:
    from .domain import Domain


class TaskStore:
    """Unscoped queries over every domain (``scheduler.store()``)."""

    scope: Q = EVERYTHING

    def running_tasks(self) -> list[Task]:
        return queries.running_tasks(self.scope)

    def running_count(self) -> int:
        return queries.count(TaskStatus.RUNNING, self.scope)

    def pending_tasks(self, limit: int = 100) -> list[Task]:
        return queries.pending_tasks(limit, self.scope)

    def pending_count(self) -> int:
        return queries.count(TaskStatus.PENDING, self.scope)

    def pending_by_type(self, task_type: str) -> list[Task]:
        return queries.tasks_with_status(TaskStatus.PENDING, self.scope & Q(task_type=task_type))

    def paused_tasks(self) -> list[Task]:
        return queries.tasks_with_status(TaskStatus.PAUSED, self.scope)

    def paused_count(self) -> int:
        return queries.count(TaskStatus.PAUSED, self.scope)

    def blocked_tasks(self) -> list[Task]:
        return queries.tasks_with_status(TaskStatus.BLOCKED, self.scope)

    def blocked_count(self) -> int:
        return queries.count(TaskStatus.BLOCKED, self.scope)

    def task_by_id(self, task_id: int) -> Task | None:
        return Task.objects.filter(self.scope, id=task_id).first()

    def task_by_key(self, key: str) -> Task | None:
        return Task.objects.filter(self.scope, key=key).first()

    def result(self, task_id: int) -> TaskHistory | None:
        """The history record of a terminal task, None while it is active; TaskNotFound when
        it is in neither table (see ``scheduler.result``)."""
        return results.result(task_id, self.scope)

    def running_io_totals(self) -> IoTotals:
        return queries.running_io_totals(self.scope)

    def task_dependencies(self, task_id: int) -> list[int]:
        return queries.task_dependencies(task_id, self.scope)

    def task_dependents(self, task_id: int) -> list[int]:
        return queries.task_dependents(task_id, self.scope)

    def history(self, limit: int = 100, offset: int = 0) -> list[TaskHistory]:
        return queries.history(limit, offset, self.scope)

    def history_by_type(self, task_type: str, limit: int = 100) -> list[TaskHistory]:
        return queries.history_by_type(task_type, limit, self.scope)

    def history_by_key(self, key: str) -> list[TaskHistory]:
        return queries.history_by_key(key, self.scope)

    def failed_tasks(self, limit: int = 100) -> list[TaskHistory]:
        return queries.failed_tasks(limit, self.scope)

    def history_stats(self, task_type: str) -> TypeStats:
        return queries.history_stats(task_type, self.scope)

    def avg_throughput(self, task_type: str, limit: int = 100) -> tuple[float, float]:
        """(read, write) bytes per second over the newest ``limit`` completed runs."""
        return queries.avg_throughput(task_type, limit, self.scope)

    def next_run_after(self) -> datetime | None:
        return queries.next_run_after(self.scope)

    def recurring_schedules(self) -> list[RecurringInfo]:
        """Schedules (interval or cron, next run, occurrences done and remaining, paused)."""
        return recurring_infos(self.scope)

    def prune_history_by_count(self, keep: int) -> int:
        return maintenance.prune_history_by_count(keep, self.scope)

    def prune_history_by_age(self, days: float) -> int:
        return maintenance.prune_history_by_age(days, self.scope)


class DomainHandle(TaskStore):
    """Queries and control scoped to one domain (``scheduler.domain("media")``)."""

    def __init__(self, domain: Domain) -> None:
        self._domain = domain
        self.name = domain.name
        self.scope = Q(domain=domain.name)

    def __repr__(self) -> str:
        return f"<DomainHandle {self.name}>"

    def snapshot(self, running_limit: int | None = None) -> Snapshot:
        """This domain now; ``running_limit`` caps the running tasks listed (longest-running
        first), ``running_count`` counts them all."""
        return build_snapshot(self.scope, self.name, running_limit)

    def active_tasks(self) -> list[Task]:
        """The domain's running tasks, longest-running first (taskmill's "active" tasks are
        the ones in flight; ``pending_tasks()`` and the other status lists give the rest)."""
        return self.running_tasks()

    def estimated_progress(self) -> list[EstimatedProgress]:
        """An ``EstimatedProgress`` per running task of the domain (see ``read.progress``)."""
        return progress.estimated_progress(self.scope)

    def byte_progress(self) -> list[ByteProgress]:
        """A ``ByteProgress`` per running task of the domain that reported bytes."""
        return progress.byte_progress(self.scope)

    def dead_letter_tasks(self, limit: int = 100, offset: int = 0) -> list[TaskHistory]:
        return queries.dead_letter_tasks(limit, offset, self.scope)

    def retry_dead_letter(self, history_id: int) -> SubmitOutcome:
        return retry_dead_letter(history_id, self.scope)

    def task_ids_by_tags(self, filters: Mapping[str, str], status: str | None = None) -> list[int]:
        return queries.task_ids_by_tags(dict(filters), status, self.scope)

    def count_by_tag(self, key: str, status: str | None = None) -> dict[str, int]:
        return queries.count_by_tag(key, status, self.scope)

    def tag_values(self, key: str) -> list[tuple[str, int]]:
        """``(value, count)`` pairs of tag ``key`` among active tasks, most common first."""
        return queries.tag_values(key, self.scope)

    def tag_keys_by_prefix(self, prefix: str) -> list[str]:
        return queries.tag_keys_by_prefix(prefix, self.scope)

    def task_ids_by_tag_key_prefix(self, prefix: str, status: str | None = None) -> list[int]:
        return queries.task_ids_by_tag_key_prefix(prefix, status, self.scope)

    def count_by_tag_key_prefix(self, prefix: str, status: str | None = None) -> int:
        return queries.count_by_tag_key_prefix(prefix, status, self.scope)

    def cancel(self, task_id: int) -> bool:
        return bool(cancel_store.cancel_matching(self.scope & Q(id=task_id)))

    def cancel_all(self) -> list[int]:
        """Cancel every active task of the domain; the ids cancelled or asked to stop."""
        return cancel_store.cancel_matching(self.scope)

    def cancel_where(self, condition: Q | Callable[[Task], bool]) -> list[int]:
        return cancel_where(condition, self.scope)

    def cancel_by_tag_key_prefix(self, prefix: str) -> list[int]:
        ids = self.task_ids_by_tag_key_prefix(prefix)
        return cancel_store.cancel_matching(Q(id__in=ids)) if ids else []

    def pause(self) -> int:
        """Stop starting this domain's tasks and pause its running ones."""
        return control.pause_domain(self.name)

    def resume(self) -> int:
        return control.resume_domain(self.name)

    def set_max_concurrency(self, n: int | None) -> None:
        """Cap this domain's running tasks cluster-wide (None removes the cap)."""
        control.set_domain_max_concurrency(self.name, n)

    def pause_recurring(self, schedule_id: int) -> None:
        recurring.set_paused(schedule_id, True, self.name)

    def resume_recurring(self, schedule_id: int) -> None:
        recurring.set_paused(schedule_id, False, self.name)

    def cancel_recurring(self, schedule_id: int) -> None:
        """Delete the schedule; occurrences already submitted are left alone."""
        recurring.cancel_schedule(schedule_id, self.name)

    def submit(self, short_type: str, payload: Mapping[str, Any], **options: Any) -> SubmitOutcome:
        definition = registry.get_task(f"{self.name}::{short_type}")
        return definition.using(**options).submit(**payload)


def cancel_where(condition: Q | Callable[[Task], bool], scope: Q = EVERYTHING) -> list[int]:
    """Cancel tasks matching a ``Q`` (evaluated in SQL) or a predicate over rows (in Python);
    the ids cancelled or asked to stop, children included."""
    if isinstance(condition, Q):
        return cancel_store.cancel_matching(scope & condition)
    if not callable(condition):
        raise ValidationError("condition", "must be a Q object or a callable taking a Task")
    ids = [t.id for t in Task.objects.filter(scope).iterator() if condition(t)]
    return cancel_store.cancel_matching(Q(id__in=ids)) if ids else []


def retry_dead_letter(history_id: int, scope: Q = EVERYTHING) -> SubmitOutcome:
    """Submit a dead-letter entry again (same type, payload, key, priority, tags, group)."""
    with transaction.atomic():
        entry = (
            TaskHistory.objects.select_for_update()
            .filter(scope, id=history_id, status=HistoryStatus.DEAD_LETTER)
            .first()
        )
        if entry is None:
            raise TaskNotFound(f"no dead-letter entry with id {history_id}")
        if entry.retried_at is not None:
            raise AlreadyRetried(entry.id, entry.retried_as_id)
        definition = registry.get_task(entry.task_type)
        new = definition.build(entry.payload, definition.using().options)
        from dataclasses import replace

        new = replace(
            new,
            key=entry.key,
            label=entry.label,
            priority=entry.priority,
            group_key=entry.group_key,
            tags=queries.history_tags(entry.id),
        )
        outcome = submit_tasks([new])[0]
        if outcome.id is not None:  # submitted, or its key is active already: either way, done
            TaskHistory.objects.filter(id=entry.id).update(
                retried_at=Now(), retried_as_id=outcome.id
            )
        return outcome
