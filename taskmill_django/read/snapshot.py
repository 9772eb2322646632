"""Snapshots: the cluster (or one domain) at one moment, built once per request and shared by
the query API, the REST API, the admin and the dashboard."""

from __future__ import annotations

import functools
from typing import Any

from django.db.models import Count, Q
from django.db.models.functions import Now
from django.utils import timezone

from ..conf import app_settings
from ..enums import InterruptReason, TaskStatus
from ..models import PausedGroup, RateBucket, Schedule, Task, Worker
from ..policy import config, pressure
from ..policy.config import Policy
from ..policy.ratelimit import RateLimit, refill
from ..records import PausedGroupInfo, RecurringInfo, RunningTask, Snapshot, WorkerInfo
from ..redaction import mask_text
from ..store import control
from ..store.claim import current_shares
from . import progress, queries
from .queries import EVERYTHING


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


def running_records(rows: list[Task]) -> list[RunningTask]:
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
        for t in rows
    ]


def worker_infos() -> list[WorkerInfo]:
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
                w.claim_ahead,
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
    running = progress.running_with_clock(scope, running_limit)
    return Snapshot(
        running=running_records(running),
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
        paused_groups=paused_group_infos(scope),
        rate_limits=rate_limits,
        group_allocations=group_allocations(policy),
        pressure=policy.pressure,
        pressure_breakdown=policy.pressure_breakdown,
        aging=policy.aging.as_dict() if policy.aging else None,
        progress=progress.estimate(running, scope),
    )


def paused_group_infos(scope: Q = EVERYTHING) -> list[PausedGroupInfo]:
    """Groups paused now (a timed pause whose time has passed is over, even before a worker
    lifts it), with their tasks of ``scope`` that the pause holds back."""
    paused = list(
        PausedGroup.objects.filter(Q(paused_until__isnull=True) | Q(paused_until__gt=Now()))
        .order_by("group_key")
        .values_list("group_key", "paused_at", "paused_until")
    )
    counts: dict[str | None, Any] = {
        row["group_key"]: row
        for row in Task.objects.filter(scope, group_key__in=[g for g, _, _ in paused])
        .values("group_key")
        .annotate(
            parked=Count(
                "id",
                filter=Q(status=TaskStatus.PAUSED, pause_reason=InterruptReason.GROUP_PAUSED),
            ),
            pending=Count("id", filter=Q(status=TaskStatus.PENDING)),
        )
        .order_by()
    }
    return [
        PausedGroupInfo(
            group,
            paused_at,
            until,
            counts.get(group, {}).get("parked", 0),
            counts.get(group, {}).get("pending", 0),
        )
        for group, paused_at, until in paused
    ]


def local_pressure() -> tuple[float, dict[str, float]]:
    """Pressure as this process measures it. The sources live as long as the process (per
    configuration): a source that measures a rate, like ``disk``, needs two readings."""
    capacity = app_settings.IO_CAPACITY
    return pressure.measure(
        _sources(
            tuple(app_settings.PRESSURE_SOURCES or ()),
            bool(app_settings.RESOURCE_MONITORING),
            app_settings.IO_SAMPLER,
            tuple(sorted(capacity.items())) if isinstance(capacity, dict) else capacity,
        )
    )


@functools.lru_cache(maxsize=8)
def _sources(paths: tuple[str, ...], monitoring: bool, *io_config: Any) -> list[Any]:
    """The pressure sources of one configuration (``io_config`` is part of the cache key:
    the disk source reads the IO settings)."""
    return pressure.load_sources(list(paths), monitoring)


def group_allocations(policy: Policy) -> dict[str, int]:
    """Fair-share slots per group right now when weights are configured, else group caps."""
    if policy.is_fair:
        return current_shares(policy)
    return {g: cap for g, cap in policy.group_caps.items() if cap is not None}
