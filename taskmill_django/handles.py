"""TaskStore and DomainHandle: the query API of SPEC §3, thin wrappers over store functions."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.db.models import Avg, Count, Q
from django.db.models.functions import Now
from django.utils import timezone

from . import registry
from .enums import HistoryStatus, TaskStatus
from .exceptions import AlreadyRetried, TaskNotFound, ValidationError
from .models import RateBucket, Schedule, Task, TaskHistory, Worker
from .policy import config, pressure
from .policy.config import Policy
from .policy.ratelimit import RateLimit, refill
from .records import (
    IoTotals,
    Metrics,
    RecurringInfo,
    RunningTask,
    Snapshot,
    SubmitOutcome,
    TypeStats,
    WorkerInfo,
)
from .redaction import mask_text
from .store import cancel as cancel_store
from .store import control, maintenance, queries, recurring
from .store.queries import EVERYTHING
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

    def avg_throughput(self, task_type: str, limit: int = 100) -> float:
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


def recurring_infos(scope: Q = EVERYTHING) -> list[RecurringInfo]:
    return [
        RecurringInfo(
            s.id,
            s.name,
            s.task_type,
            s.interval_seconds,
            s.cron,
            s.timezone,
            s.next_run_at,
            s.occurrence_count,
            s.remaining,
            s.skipped_count,
            s.is_paused,
            s.is_declarative,
        )
        for s in Schedule.objects.filter(scope).order_by("id")
    ]


def running_records(scope: Q = EVERYTHING, limit: int | None = None) -> list[RunningTask]:
    """Running tasks as people see them: without payloads (never loaded), their label and
    progress message masked (``redaction``)."""
    return [
        RunningTask(
            t.id,
            t.task_type,
            mask_text(t.label, t.task_type),
            t.priority,
            str(t.worker_id) if t.worker_id else None,
            t.started_at,
            t.progress,
            mask_text(t.progress_message, t.task_type),
            t.effective_priority,
        )
        for t in queries.running_tasks(scope, limit, with_payloads=False)
    ]


def worker_infos() -> list[WorkerInfo]:
    from .conf import app_settings

    rows = Worker.objects.annotate(now=Now()).order_by("name")
    infos = []
    for w in rows:
        age = max((w.now - w.heartbeat_at).total_seconds(), 0.0)
        infos.append(
            WorkerInfo(
                str(w.id),
                w.name,
                w.hostname,
                w.pid,
                w.concurrency,
                w.running_count,
                age,
                age < float(app_settings.LEASE_TIMEOUT),
                w.io,
            )
        )
    return infos


def build_snapshot(
    scope: Q = EVERYTHING, domain: str | None = None, running_limit: int | None = None
) -> Snapshot:
    """The cluster (or one domain) now. ``running_limit`` caps the running tasks listed (the
    longest-running ones); ``running_count`` always counts them all."""

    counts = queries.counts_by_domain()
    if domain is not None:
        counts = {domain: counts.get(domain, {})}
    totals: dict[str, int] = {}
    for per_status in counts.values():
        for status, n in per_status.items():
            totals[status] = totals.get(status, 0) + n
    policy = control.load_policy(local_pressure())
    buckets = {b.name: b for b in RateBucket.objects.all()}
    now = timezone.now()

    def tokens(name: str, limit: RateLimit) -> float:
        """Tokens available now: the stored level refilled for the time since."""
        bucket = buckets.get(name)
        if bucket is None:
            return limit.burst
        return refill(bucket.tokens, (now - bucket.refreshed_at).total_seconds(), limit)

    rate_limits = {
        name: {"rate": limit.rate, "burst": limit.burst, "tokens": tokens(prefix + name, limit)}
        for prefix, limits in (
            (config.RATE, policy.rate_limits),
            (config.GROUP_RATE, policy.group_rate_limits),
        )
        for name, limit in limits.items()
    }
    return Snapshot(
        running=running_records(scope, running_limit),
        pending_count=totals.get(TaskStatus.PENDING, 0),
        running_count=totals.get(TaskStatus.RUNNING, 0),
        paused_count=totals.get(TaskStatus.PAUSED, 0),
        blocked_count=totals.get(TaskStatus.BLOCKED, 0),
        waiting_count=totals.get(TaskStatus.WAITING, 0),
        max_concurrency=policy.domain_caps.get(domain) if domain else policy.max_concurrency,
        is_paused=policy.is_paused or (domain is not None and domain in policy.paused_domains),
        counts_by_domain=counts,
        workers=worker_infos(),
        recurring=recurring_infos(scope),
        paused_groups=sorted(policy.paused_groups),
        rate_limits=rate_limits,
        group_allocations=group_allocations(policy),
        pressure=policy.pressure,
        pressure_breakdown=policy.pressure_breakdown,
        aging=policy.aging.as_dict() if policy.aging else None,
    )


def local_pressure() -> tuple[float, dict[str, float]]:
    from .conf import app_settings

    sources = pressure.load_sources(
        list(app_settings.PRESSURE_SOURCES or []), bool(app_settings.RESOURCE_MONITORING)
    )
    return pressure.measure(sources)


def group_allocations(policy: Policy) -> dict[str, int]:
    """Fair-share slots per group right now when weights are configured, else group caps."""
    if policy.is_fair:
        from .store.gated_claim import fair_shares

        return fair_shares(policy)
    return {g: cap for g, cap in policy.group_caps.items() if cap is not None}


def metrics_snapshot() -> Metrics:
    active = dict(Task.objects.values_list("status").annotate(n=Count("id")).order_by())
    finished = dict(TaskHistory.objects.values_list("status").annotate(n=Count("id")).order_by())
    alive = [w for w in worker_infos() if w.is_alive]
    gauges: dict[str, float] = {f"tasks_{s}": float(active.get(s, 0)) for s in TaskStatus.values}
    gauges["workers_alive"] = float(len(alive))
    gauges["worker_slots"] = float(sum(w.concurrency for w in alive))
    gauges["schedules"] = float(Schedule.objects.count())
    counters = {f"tasks_{s}_total": finished.get(s, 0) for s in HistoryStatus.values}
    return Metrics(counters=counters, gauges=gauges)


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
        return list(Task.objects.filter(self.scope).order_by("priority", "id"))

    def estimated_progress(self) -> dict[int, float]:
        """Progress per running task: as reported, else elapsed time over the type's average
        completed duration (capped at 0.99: an estimate never claims to be done)."""
        running = self.running_tasks()
        types = {t.task_type for t in running if t.progress is None}
        averages = dict(
            TaskHistory.objects.filter(task_type__in=types, status="completed")
            .values("task_type")
            .annotate(avg=Avg("duration_ms"))
            .values_list("task_type", "avg")
        )
        now = timezone.now()
        estimates = {}
        for t in running:
            if t.progress is not None:
                estimates[t.id] = t.progress
                continue
            avg_ms = averages.get(t.task_type)
            if not avg_ms or t.started_at is None:
                estimates[t.id] = 0.0
                continue
            elapsed_ms = (now - t.started_at).total_seconds() * 1000
            estimates[t.id] = min(elapsed_ms / avg_ms, 0.99)
        return estimates

    def byte_progress(self) -> dict[int, tuple[int, int]]:
        """(bytes done, bytes total) per running task, from ``ctx.progress.report_bytes``;
        tasks that never reported bytes show 0 of their expected IO budget."""
        return {
            t.id: (
                t.progress_bytes_done or 0,
                t.progress_bytes_total
                if t.progress_bytes_total is not None
                else t.expected_read_bytes + t.expected_write_bytes,
            )
            for t in self.running_tasks()
        }

    def dead_letter_tasks(self, limit: int = 100, offset: int = 0) -> list[TaskHistory]:
        return list(
            TaskHistory.objects.dead_letter()
            .filter(self.scope)
            .newest_first()[offset : offset + limit]
        )

    def retry_dead_letter(self, history_id: int) -> SubmitOutcome:
        return retry_dead_letter(history_id, self.scope)

    def task_ids_by_tags(self, filters: Mapping[str, str], status: str | None = None) -> list[int]:
        return queries.task_ids_by_tags(dict(filters), status, self.scope)

    def count_by_tag(self, key: str, status: str | None = None) -> dict[str, int]:
        return queries.count_by_tag(key, status, self.scope)

    def tag_values(self, key: str) -> list[str]:
        return queries.tag_values(key, self.scope)

    def tag_keys_by_prefix(self, prefix: str) -> list[str]:
        return queries.tag_keys_by_prefix(prefix, self.scope)

    def task_ids_by_tag_key_prefix(self, prefix: str, status: str | None = None) -> list[int]:
        return queries.task_ids_by_tag_key_prefix(prefix, status, self.scope)

    def count_by_tag_key_prefix(self, prefix: str, status: str | None = None) -> int:
        return queries.count_by_tag_key_prefix(prefix, status, self.scope)

    def cancel(self, task_id: int) -> bool:
        return cancel_store.cancel_matching(self.scope & Q(id=task_id)) > 0

    def cancel_all(self) -> int:
        return cancel_store.cancel_matching(self.scope)

    def cancel_where(self, condition: Q | Callable[[Task], bool]) -> int:
        return cancel_where(condition, self.scope)

    def cancel_by_tag_key_prefix(self, prefix: str) -> int:
        ids = self.task_ids_by_tag_key_prefix(prefix)
        return cancel_store.cancel_matching(Q(id__in=ids)) if ids else 0

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


def cancel_where(condition: Q | Callable[[Task], bool], scope: Q = EVERYTHING) -> int:
    """Cancel tasks matching a ``Q`` (evaluated in SQL) or a predicate over rows (in Python)."""
    if isinstance(condition, Q):
        return cancel_store.cancel_matching(scope & condition)
    if not callable(condition):
        raise ValidationError("condition", "must be a Q object or a callable taking a Task")
    ids = [t.id for t in Task.objects.filter(scope).iterator() if condition(t)]
    return cancel_store.cancel_matching(Q(id__in=ids)) if ids else 0


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
