"""What the operator dashboard shows, gathered with SQL aggregates (no web code here).

Everything is read-only and bounded so the page stays fast with millions of history rows:

- charts cover a fixed window (the last ``WINDOW_MINUTES``) and are grouped per minute in SQL
  (the queue depth per second: at most 3,600 rows a query), reading history through its
  ``finished_at`` index (``window.py``);
- duration percentiles use the newest ``DURATION_SAMPLE`` completed runs of each type, read
  through the ``(task_type, finished_at)`` index: ``percentile_cont`` on PostgreSQL, the same
  interpolation in Python over that bounded sample elsewhere;
- Python only ever loops over aggregate rows (seconds, minutes, domains, groups, types), never
  over tasks;
  the running list holds the ``RUNNING_SHOWN`` longest-running tasks, however many run.

The admin dashboard renders these records; an API can serialise them with ``to_json``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.db import connection
from django.db.models import Aggregate, Avg, Count, FloatField, Q
from django.db.models.functions import Now
from django.utils import timezone

from .. import registry
from ..enums import HistoryStatus, TaskStatus
from ..models import PausedGroup, RateBucket, Task, TaskHistory, TaskHistoryTag, TaskTag
from ..policy import config
from ..policy.config import Policy
from ..policy.ratelimit import RateLimit, refill
from ..records import Snapshot
from .window import (
    MinuteSeries,
    WindowGroup,
    queue_depth,
    throughput_by_domain,
    window_groups,
    window_start,
)

WINDOW_MINUTES = 60
DURATION_SAMPLE = 1000
RUNNING_SHOWN = 50  # running tasks listed (longest-running first); all are counted


@dataclasses.dataclass(frozen=True)
class TypeRow:
    """One task type: activity in the window, and durations of its newest completed runs."""

    task_type: str
    runs: int
    completed: int
    failures: int
    failure_rate: float
    avg_duration_ms: float | None
    avg_read_bytes: float
    avg_write_bytes: float
    p50_ms: float | None = None
    p95_ms: float | None = None
    sample_size: int = 0


@dataclasses.dataclass(frozen=True)
class DomainRow:
    name: str
    counts: dict[str, int]
    is_paused: bool
    max_concurrency: int | None
    completed: int
    failed: int


@dataclasses.dataclass(frozen=True)
class RunningRow:
    id: int
    task_type: str
    label: str
    priority: int
    worker_id: str | None
    worker_name: str
    started_at: datetime | None
    elapsed_seconds: float
    progress: float
    is_estimated: bool
    message: str
    is_overdue: bool = False


@dataclasses.dataclass(frozen=True)
class RateLimitRow:
    scope: str  # "type" or "group"
    name: str
    rate: float
    burst: float
    tokens: float


@dataclasses.dataclass(frozen=True)
class GroupRow:
    name: str
    counts: dict[str, int]
    cap: int | None
    is_paused: bool
    paused_until: datetime | None
    weight: float | None
    minimum_slots: int | None
    allocation: int | None
    rate_limit: RateLimitRow | None


@dataclasses.dataclass(frozen=True)
class Dashboard:
    generated_at: datetime
    window_start: datetime
    window_minutes: int
    snapshot: Snapshot
    totals: dict[str, int]
    domains: list[DomainRow]
    running: list[RunningRow]
    groups: list[GroupRow]
    rate_limits: list[RateLimitRow]
    throughput: list[MinuteSeries]
    queue_depth: list[int]
    types: list[TypeRow]
    completed_count: int
    failed_count: int


@dataclasses.dataclass(frozen=True)
class TagCount:
    value: str
    count: int


def collect(minutes: int = WINDOW_MINUTES) -> Dashboard:
    """Everything the dashboard shows, for the window of the last ``minutes`` minutes."""
    from .snapshot import build_snapshot

    now = timezone.now()
    start = window_start(now, minutes)
    # A big cluster runs thousands of tasks at once: list the longest-running ones, count all.
    snapshot = build_snapshot(running_limit=RUNNING_SHOWN)
    policy = current_policy(snapshot)
    totals = _totals(snapshot)
    groups = window_groups(start)
    throughput = throughput_by_domain(start, minutes, groups)
    types = type_rows(start, groups=groups)
    rate_limits = rate_limit_rows(policy, now)
    return Dashboard(
        generated_at=now,
        window_start=start,
        window_minutes=minutes,
        snapshot=snapshot,
        totals=totals,
        domains=domain_rows(snapshot, policy, throughput),
        running=running_rows(snapshot, now),
        groups=group_rows(snapshot, policy, rate_limits),
        rate_limits=rate_limits,
        throughput=throughput,
        queue_depth=queue_depth(start, minutes, sum(totals.values())),
        types=types,
        completed_count=sum(sum(s.completed) for s in throughput),
        failed_count=sum(sum(s.failed) for s in throughput),
    )


def type_averages(start: datetime) -> dict[str, tuple[float | None, float, float]]:
    """(average completed duration, average read bytes, average write bytes) per task type
    since ``start``: one query grouped by type only."""
    rows = (
        TaskHistory.objects.filter(finished_at__gte=start)
        .values("task_type")
        .annotate(
            duration=Avg("duration_ms", filter=Q(status=HistoryStatus.COMPLETED)),
            read=Avg("read_bytes"),
            write=Avg("write_bytes"),
        )
        .order_by()
    )
    return {
        row["task_type"]: (
            _float(row["duration"]),
            _float(row["read"]) or 0.0,
            _float(row["write"]) or 0.0,
        )
        for row in rows
    }


def type_rows(
    start: datetime, sample: int = DURATION_SAMPLE, groups: list[WindowGroup] | None = None
) -> list[TypeRow]:
    """Per task type: runs, failures and averages since ``start``, plus p50/p95 of the newest
    ``sample`` completed runs (any age)."""
    counts: dict[str, list[int]] = {}
    for group in window_groups(start) if groups is None else groups:
        c = counts.setdefault(group.task_type, [0, 0, 0])
        c[0] += group.count
        c[1] += group.completed
        c[2] += group.failed
    averages = type_averages(start) if counts else {}
    names = sorted({d.task_type for d in registry.all_tasks()} | set(counts))
    rows = []
    for name in names:
        runs, completed, failures = counts.get(name, [0, 0, 0])
        duration, read, write = averages.get(name, (None, 0.0, 0.0))
        p50, p95, n = duration_percentiles(name, sample)
        if not runs and not n:
            continue
        rows.append(
            TypeRow(
                task_type=name,
                runs=runs,
                completed=completed,
                failures=failures,
                failure_rate=(failures / runs) if runs else 0.0,
                avg_duration_ms=duration,
                avg_read_bytes=read,
                avg_write_bytes=write,
                p50_ms=p50,
                p95_ms=p95,
                sample_size=n,
            )
        )
    return rows


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


class _PercentileCont(Aggregate):
    """PostgreSQL's ordered-set aggregate ``percentile_cont(f) WITHIN GROUP (ORDER BY x)``."""

    function = "PERCENTILE_CONT"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()


def duration_percentiles(
    task_type: str, sample: int = DURATION_SAMPLE
) -> tuple[float | None, float | None, int]:
    """(p50, p95, sample size) of the durations of the newest ``sample`` completed runs."""
    newest = TaskHistory.objects.filter(
        task_type=task_type, status=HistoryStatus.COMPLETED, duration_ms__isnull=False
    ).order_by("-finished_at")
    if connection.vendor == "postgresql":
        # Aggregating the sliced query wraps it in a subquery that reads only type, time,
        # status and duration: an index-only scan of the covering (task_type, finished_at) index.
        agg = newest.values("duration_ms")[:sample].aggregate(
            p50=_PercentileCont("duration_ms", fraction=0.5),
            p95=_PercentileCont("duration_ms", fraction=0.95),
            n=Count("duration_ms"),
        )
        return _float(agg["p50"]), _float(agg["p95"]), agg["n"]
    values = sorted(
        ms for ms in newest.values_list("duration_ms", flat=True)[:sample] if ms is not None
    )
    return percentile(values, 0.5), percentile(values, 0.95), len(values)


def percentile(sorted_values: Sequence[float], fraction: float) -> float | None:
    """Linear interpolation between closest ranks, as PostgreSQL's ``percentile_cont``.

    >>> percentile([10, 20, 30, 40], 0.5)
    25.0
    >>> percentile([10, 20, 30, 40], 0.95)
    38.5
    >>> percentile([], 0.5) is None
    True
    """
    if not sorted_values:
        return None
    position = (len(sorted_values) - 1) * fraction
    low, high = math.floor(position), math.ceil(position)
    lower, upper = float(sorted_values[low]), float(sorted_values[high])
    return lower + (upper - lower) * (position - low)


def current_policy(snapshot: Snapshot) -> Policy:
    """The runtime policy, with the pressure the snapshot measured."""
    from ..store.control import load_policy

    return load_policy((snapshot.pressure, snapshot.pressure_breakdown))


def _totals(snapshot: Snapshot) -> dict[str, int]:
    totals = {status: 0 for status in TaskStatus.values}
    for per_status in snapshot.counts_by_domain.values():
        for status, n in per_status.items():
            totals[status] = totals.get(status, 0) + n
    return totals


def domain_rows(
    snapshot: Snapshot, policy: Policy, throughput: list[MinuteSeries]
) -> list[DomainRow]:
    finished = {s.name: (sum(s.completed), sum(s.failed)) for s in throughput}
    names = sorted(set(snapshot.counts_by_domain) | {d.name for d in registry.all_domains()})
    return [
        DomainRow(
            name=name,
            counts={
                s: snapshot.counts_by_domain.get(name, {}).get(s, 0) for s in TaskStatus.values
            },
            is_paused=name in policy.paused_domains,
            max_concurrency=policy.domain_caps.get(name),
            completed=finished.get(name, (0, 0))[0],
            failed=finished.get(name, (0, 0))[1],
        )
        for name in names
    ]


def running_rows(snapshot: Snapshot, now: datetime) -> list[RunningRow]:
    """Running tasks with their worker's name and the snapshot's progress estimate (see
    ``read.progress``: as reported, else extrapolated from past runs, or overdue)."""
    names = {w.id: w.name for w in snapshot.workers}
    estimates = {e.task_id: e for e in snapshot.progress}
    rows = []
    for task in snapshot.running:
        elapsed = max((now - task.started_at).total_seconds(), 0.0) if task.started_at else 0.0
        estimate = estimates.get(task.id)
        estimated = bool(
            estimate
            and estimate.reported_percent is None
            and estimate.extrapolated_percent is not None
        )
        rows.append(
            RunningRow(
                id=task.id,
                task_type=task.task_type,
                label=task.label,
                priority=task.priority,
                worker_id=task.worker_id,
                worker_name=names.get(task.worker_id or "", ""),
                started_at=task.started_at,
                elapsed_seconds=elapsed,
                progress=estimate.percent if estimate else 0.0,
                is_estimated=estimated,
                message=task.progress_message,
                is_overdue=estimated and bool(estimate and estimate.is_overdue),
            )
        )
    return rows


def rate_limit_rows(policy: Policy, now: datetime) -> list[RateLimitRow]:
    """Every rate limit with the tokens its bucket holds now (refilled since last use)."""
    limits: list[tuple[str, str, str, RateLimit]] = [
        ("type", name, config.RATE + name, limit) for name, limit in policy.rate_limits.items()
    ] + [
        ("group", name, config.GROUP_RATE + name, limit)
        for name, limit in policy.group_rate_limits.items()
    ]
    buckets = {
        b.name: b
        for b in RateBucket.objects.filter(name__in=[bucket for _, _, bucket, _ in limits])
    }
    rows = []
    for scope, name, bucket_name, limit in sorted(limits, key=lambda item: item[:2]):
        bucket = buckets.get(bucket_name)
        tokens = limit.burst
        if bucket is not None:
            elapsed = (now - bucket.refreshed_at).total_seconds()
            tokens = refill(bucket.tokens, elapsed, limit)
        rows.append(RateLimitRow(scope, name, limit.rate, limit.burst, tokens))
    return rows


def group_rows(
    snapshot: Snapshot, policy: Policy, rate_limits: list[RateLimitRow]
) -> list[GroupRow]:
    """Every group that has active tasks or any setting (cap, pause, weight, rate limit)."""
    counts: dict[str, dict[str, int]] = {}
    for group, status, n in (
        Task.objects.exclude(group_key=None)
        .values_list("group_key", "status")
        .annotate(n=Count("id"))
        .order_by()
    ):
        counts.setdefault(group, {})[status] = n
    paused = dict(
        PausedGroup.objects.filter(
            Q(paused_until__isnull=True) | Q(paused_until__gt=Now())
        ).values_list("group_key", "paused_until")
    )
    group_limits = {r.name: r for r in rate_limits if r.scope == "group"}
    names = (
        set(counts)
        | set(paused)
        | set(policy.group_caps)
        | set(policy.group_weights)
        | set(policy.group_minimum_slots)
        | set(group_limits)
    )
    names.discard("")
    return [
        GroupRow(
            name=name,
            counts={s: counts.get(name, {}).get(s, 0) for s in TaskStatus.values},
            cap=policy.group_cap(name),
            is_paused=name in paused,
            paused_until=paused.get(name),
            weight=policy.group_weights.get(name),
            minimum_slots=policy.group_minimum_slots.get(name),
            allocation=snapshot.group_allocations.get(name),
            rate_limit=group_limits.get(name),
        )
        for name in sorted(names)
    ]


def tag_keys(prefix: str = "", *, history: bool = False, limit: int = 200) -> list[TagCount]:
    """Tag keys starting with ``prefix``, each with how many tasks carry it."""
    model, owner = (TaskHistoryTag, "history_id") if history else (TaskTag, "task_id")
    rows = (
        model.objects.filter(key__startswith=prefix)
        .values("key")
        .annotate(n=Count(owner))
        .order_by("key")[:limit]
    )
    return [TagCount(row["key"], row["n"]) for row in rows]


def tag_values(key: str, *, history: bool = False, limit: int = 500) -> list[TagCount]:
    """Values of tag ``key``, most common first, each with how many tasks carry it."""
    model, owner = (TaskHistoryTag, "history_id") if history else (TaskTag, "task_id")
    rows = (
        model.objects.filter(key=key)
        .values("value")
        .annotate(n=Count(owner))
        .order_by("-n", "value")[:limit]
    )
    return [TagCount(row["value"], row["n"]) for row in rows]


def to_json(value: Any) -> Any:
    """Plain JSON types for a record tree: dataclasses → dicts, datetimes → ISO 8601 strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_json(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
