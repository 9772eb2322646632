"""The Scheduler facade: ``from taskmill_django import scheduler``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.db.models import Q

from . import registry
from .exceptions import TaskNotFound
from .records import Metrics, Snapshot, SubmitOutcome, TaskLookup
from .validation import dedup_key, validate_key, validate_payload

if TYPE_CHECKING:
    # Types only: importing this package must load no models (see __init__).
    from .domain import TaskCall, TaskDefinition
    from .explain import Reason
    from .handles import DomainHandle, TaskStore
    from .models import Task, TaskHistory
    from .policy.ratelimit import RateLimit


class Scheduler:
    """Entry point to queries and control. Stateless: every call reads the database, so all
    processes (workers, web servers, shells) see the same picture."""

    def domain(self, name: str) -> DomainHandle:
        """The DomainHandle of a registered domain; raises DomainNotRegistered."""
        return registry.get_domain(name).handle()

    def try_domain(self, name: str) -> DomainHandle | None:
        """The DomainHandle of ``name``, or None when no such domain is registered."""
        domain = registry.find_domain(name)
        return domain.handle() if domain else None

    def store(self) -> TaskStore:
        """Unscoped queries over every domain."""
        from .handles import TaskStore

        return TaskStore()

    def snapshot(self, running_limit: int | None = None) -> Snapshot:
        """The cluster now. ``running_limit`` caps the running tasks listed (longest-running
        first); ``running_count`` counts them all."""
        from .read.snapshot import build_snapshot

        return build_snapshot(running_limit=running_limit)

    def task(self, task_id: int) -> Task | TaskHistory:
        """The active row, else the history row, with this id; raises TaskNotFound."""
        from .models import Task, TaskHistory

        row: Task | TaskHistory | None = (
            Task.objects.filter(id=task_id).first()
            or TaskHistory.objects.filter(id=task_id).first()
        )
        if row is None:
            raise TaskNotFound(f"no task with id {task_id}")
        return row

    def result(self, task_id: int) -> TaskHistory | None:
        """The history record of task ``task_id`` (``status``, ``result``, ``last_error``) if
        it is terminal, None while it is still active; never waits (``SubmitOutcome.wait()``
        does). Raises TaskNotFound when the id is in neither table (never submitted, or its
        history row was pruned)."""
        from .read.results import result

        return result(task_id)

    def active_tasks(self) -> list[Task]:
        """The running tasks of every domain, longest-running first."""
        from .read.queries import running_tasks

        return running_tasks()

    def task_lookup(self, task_type: str, key: str) -> TaskLookup:
        """Find the task submitted with explicit ``key`` for ``task_type``."""
        registry.get_task(task_type)
        return _lookup(dedup_key(task_type, None, validate_key(key)))

    def lookup_typed(self, task: TaskDefinition | TaskCall, **payload: Any) -> TaskLookup:
        """Find the task that ``task.submit(**payload)`` would collide with."""
        call = task.using()
        built = call.definition.build(payload, call.options)
        validate_payload(payload)
        return _lookup(built.key)

    def cancel(self, task_id: int) -> bool:
        from .store.cancel import cancel_matching

        return bool(cancel_matching(Q(id=task_id)))

    # The cancel_* calls below return the ids cancelled or asked to stop, children included.

    def cancel_all(self) -> list[int]:
        from .store.cancel import cancel_matching

        return cancel_matching(Q())

    def cancel_group(self, group: str) -> list[int]:
        from .store.cancel import cancel_matching

        return cancel_matching(Q(group_key=group))

    def cancel_type(self, task_type: str) -> list[int]:
        from .store.cancel import cancel_matching

        return cancel_matching(Q(task_type=task_type))

    def cancel_by_tag(self, key: str, value: str) -> list[int]:
        from .models import TaskTag
        from .store.cancel import cancel_matching

        return cancel_matching(
            Q(id__in=TaskTag.objects.filter(key=key, value=value).values("task_id"))
        )

    def cancel_where(self, condition: Q | Callable[[Task], bool]) -> list[int]:
        from .handles import cancel_where

        return cancel_where(condition)

    def retry_dead_letter(self, history_id: int) -> SubmitOutcome:
        from .handles import retry_dead_letter

        return retry_dead_letter(history_id)

    def pause_recurring(self, schedule_id: int) -> None:
        from .store.recurring import set_paused

        set_paused(schedule_id, True)

    def resume_recurring(self, schedule_id: int) -> None:
        from .store.recurring import set_paused

        set_paused(schedule_id, False)

    def cancel_recurring(self, schedule_id: int) -> None:
        from .store.recurring import cancel_schedule

        cancel_schedule(schedule_id)

    # --- runtime control (persisted; every worker obeys within one poll interval) ------------

    def pause_all(self) -> int:
        """Start no task anywhere and pause the running ones (no retry spent); returns how
        many running tasks were asked to pause."""
        from .store import control

        return control.pause_all()

    def resume_all(self) -> int:
        """Lift ``pause_all()``; returns how many paused tasks became pending."""
        from .store import control

        return control.resume_all()

    def set_max_concurrency(self, n: int | None) -> None:
        from .store import control

        control.set_max_concurrency(n)

    def set_group_limit(self, group: str, n: int) -> None:
        from .store import control

        control.set_group_limit(group, n)

    def remove_group_limit(self, group: str) -> None:
        from .store import control

        control.remove_group_limit(group)

    def pause_group(self, group: str, until: datetime | None = None) -> int:
        """Start no task of ``group`` (until ``until``, an aware datetime, when given) and
        pause its running ones; returns how many running tasks were asked to pause."""
        from .store import control

        return control.pause_group(group, until)

    def resume_group(self, group: str) -> bool:
        from .store import control

        return control.resume_group(group)

    def set_rate_limit(self, task_type: str, limit: RateLimit | None) -> None:
        from .store import control

        control.set_rate_limit(task_type, limit)

    def set_group_rate_limit(self, group: str, limit: RateLimit | None) -> None:
        from .store import control

        control.set_group_rate_limit(group, limit)

    def set_group_weight(self, group: str, weight: float) -> None:
        from .store import control

        control.set_group_weight(group, weight)

    def remove_group_weight(self, group: str) -> None:
        from .store import control

        control.remove_group_weight(group)

    def reset_group_weights(self) -> None:
        from .store import control

        control.reset_group_weights()

    def set_group_minimum_slots(self, group: str, slots: int | None) -> None:
        from .store import control

        control.set_group_minimum_slots(group, slots)

    def metrics_snapshot(self) -> Metrics:
        """Cluster counters and gauges (see records.Metrics)."""
        from .read.metrics import metrics_snapshot

        return metrics_snapshot()

    def explain(self, task_id: int) -> list[Reason]:
        """Every reason task ``task_id`` is not running now, as ``explain.Reason`` values
        (dependency not done, run_after in the future, a pause, a cap, a rate limit, no live
        worker, ...). Raises TaskNotFound."""
        from .read.explain import explain

        return explain(task_id)

    def register_state(self, name: str, value: object) -> None:
        """Make ``value`` available to task code as ``ctx.state(name)``."""
        registry.register_state(name, value)


def _lookup(key: str) -> TaskLookup:
    from .models import Task, TaskHistory

    active = Task.objects.filter(key=key).first()
    if active is not None:
        return TaskLookup("active", active)
    done = TaskHistory.objects.filter(key=key).order_by("-finished_at", "-id").first()
    if done is not None:
        return TaskLookup("history", done)
    return TaskLookup("not_found", None)


scheduler = Scheduler()
