"""Cluster-wide counters, gauges and histograms for monitoring: ``scheduler.metrics_snapshot()``
and the metrics endpoint read them here.

Counters come from the stored counters (``store.counters``), never from history rows, so
pruning history does not make them drop. ``submitted`` is derived: each task ever submitted is
either still in the task table or was counted when it left it, so the number of submissions of a
type is its active rows plus its counted ends. Both are read by one statement (one snapshot), so
a task moving to history between two reads can never make the sum dip.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db import connection
from django.db.models import Count, Min
from django.db.models.functions import Coalesce

from .. import clock
from ..enums import HistoryStatus, TaskStatus
from ..models import Schedule, Task, TaskCounter
from ..records import Metrics
from ..store import counters as stored
from ..store.db import qn
from .snapshot import worker_infos

SUBMITTED = "submitted"


@dataclass(frozen=True)
class Histogram:
    """One histogram of one task type: cumulative counts per upper bound (seconds, ``+Inf``
    last), the number of observations and their sum in seconds."""

    buckets: list[tuple[str, int]]
    count: int
    sum_seconds: float


@dataclass(frozen=True)
class MetricsReport:
    """Everything the metrics endpoint exposes, read at one moment."""

    # event (a history status, retried, preempted, rescued, submitted) -> task_type -> total
    counters: dict[str, dict[str, int]] = field(default_factory=dict)
    # histogram (duration, wait) -> task_type -> Histogram
    histograms: dict[str, dict[str, Histogram]] = field(default_factory=dict)
    # (domain, status) -> tasks in the task table
    tasks: dict[tuple[str, str], int] = field(default_factory=dict)
    workers_alive: int = 0
    worker_slots: int = 0
    schedules: int = 0
    oldest_pending_age_seconds: float = 0.0


def read_counters() -> dict[str, dict[str, int]]:
    """Stored totals by event and task type, ``submitted`` included; histogram rows too (by
    their stored metric names)."""
    counter = qn(TaskCounter._meta.db_table)
    task = qn(Task._meta.db_table)
    task_type, metric, value = qn("task_type"), qn("metric"), qn("value")
    sql = (
        f"SELECT {task_type}, {metric}, SUM({value}) FROM {counter} "  # noqa: S608 - quoted constants
        f"GROUP BY {task_type}, {metric} "
        f"UNION ALL SELECT {task_type}, %s, COUNT(*) FROM {task} GROUP BY {task_type}"
    )
    totals: dict[str, dict[str, int]] = {}
    with connection.cursor() as cursor:
        cursor.execute(sql, ["active"])
        for row_type, row_metric, row_value in cursor.fetchall():
            by_type = totals.setdefault(row_metric, {})
            by_type[row_type] = by_type.get(row_type, 0) + int(row_value or 0)
    submitted: dict[str, int] = {}
    for name in (*HistoryStatus.values, "active"):
        for row_type, n in totals.get(name, {}).items():
            submitted[row_type] = submitted.get(row_type, 0) + n
    totals.pop("active", None)
    totals[SUBMITTED] = submitted
    return totals


def histograms(totals: dict[str, dict[str, int]]) -> dict[str, dict[str, Histogram]]:
    result: dict[str, dict[str, Histogram]] = {}
    for name in stored.HISTOGRAMS:
        sums = totals.get(stored.sum_metric(name), {})
        per_type: dict[str, Histogram] = {}
        types = {
            t
            for label in stored.BOUND_LABELS
            for t in totals.get(stored.bucket_metric(name, label), {})
        }
        for task_type in sorted(types):
            running = 0
            buckets = []
            for label in stored.BOUND_LABELS:
                running += totals.get(stored.bucket_metric(name, label), {}).get(task_type, 0)
                buckets.append((label, running))
            per_type[task_type] = Histogram(buckets, running, sums.get(task_type, 0) / 1000.0)
        result[name] = per_type
    return result


def report() -> MetricsReport:
    """Counters, histograms and gauges for the metrics endpoint."""
    totals = read_counters()
    tasks = {
        (domain, status): n
        for domain, status, n in Task.objects.values_list("domain", "status")
        .annotate(n=Count("id"))
        .order_by()
    }
    alive = [w for w in worker_infos() if w.is_alive]
    return MetricsReport(
        counters={event: totals.get(event, {}) for event in (*stored.EVENTS, SUBMITTED)},
        histograms=histograms(totals),
        tasks=tasks,
        workers_alive=len(alive),
        worker_slots=sum(w.concurrency for w in alive),
        schedules=Schedule.objects.count(),
        oldest_pending_age_seconds=oldest_pending_age(),
    )


def oldest_pending_age() -> float:
    """Seconds the longest-waiting due task has waited since it became due (0: none waits)."""
    oldest = Task.objects.claimable().aggregate(at=Min(Coalesce("run_after", "created_at")))["at"]
    if oldest is None:
        return 0.0
    return max((clock.now() - oldest).total_seconds(), 0.0)


def metrics_snapshot() -> Metrics:
    """Cluster totals (``tasks_<event>_total``, from the stored counters: pruning history does
    not lower them) and gauges (``tasks_<status>``, workers, slots, schedules)."""
    data = report()
    gauges: dict[str, float] = {f"tasks_{s}": 0.0 for s in TaskStatus.values}
    for (_, status), n in data.tasks.items():
        gauges[f"tasks_{status}"] = gauges.get(f"tasks_{status}", 0.0) + n
    gauges["workers_alive"] = float(data.workers_alive)
    gauges["worker_slots"] = float(data.worker_slots)
    gauges["schedules"] = float(data.schedules)
    gauges["oldest_pending_age_seconds"] = data.oldest_pending_age_seconds
    counters = {
        f"tasks_{event}_total": sum(by_type.values()) for event, by_type in data.counters.items()
    }
    return Metrics(counters=counters, gauges=gauges)
