"""Cluster-wide counters and gauges for monitoring (``scheduler.metrics_snapshot()``)."""

from __future__ import annotations

from django.db.models import Count

from ..enums import HistoryStatus, TaskStatus
from ..models import Schedule, Task, TaskHistory
from ..records import Metrics
from .snapshot import worker_infos


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
