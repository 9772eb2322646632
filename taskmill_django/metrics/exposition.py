"""Metric families built from one ``read.metrics.report()``; imports ``prometheus_client``.

Names follow Prometheus conventions: counters end in ``_total``, durations are in seconds,
labels are ``task_type`` (counters, histograms) and ``domain`` (task gauges).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

from ..enums import HistoryStatus, TaskStatus
from ..read import metrics

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Stored event -> (metric name without _total, help).
COUNTERS: dict[str, tuple[str, str]] = {
    "submitted": ("taskmill_tasks_submitted", "Tasks submitted."),
    HistoryStatus.COMPLETED: ("taskmill_tasks_completed", "Tasks that completed."),
    HistoryStatus.FAILED: ("taskmill_tasks_failed", "Tasks that failed for good."),
    HistoryStatus.DEAD_LETTER: ("taskmill_tasks_dead_lettered", "Tasks dead-lettered."),
    HistoryStatus.CANCELLED: ("taskmill_tasks_cancelled", "Tasks cancelled."),
    HistoryStatus.SUPERSEDED: ("taskmill_tasks_superseded", "Tasks superseded by a newer one."),
    HistoryStatus.EXPIRED: ("taskmill_tasks_expired", "Tasks that expired before running."),
    HistoryStatus.DEPENDENCY_FAILED: (
        "taskmill_tasks_dependency_failed",
        "Tasks ended because a dependency failed.",
    ),
    "retried": ("taskmill_tasks_retried", "Attempts that failed and were retried."),
    "preempted": ("taskmill_tasks_preempted", "Tasks preempted by more urgent work."),
    "rescued": ("taskmill_tasks_rescued", "Tasks rescued from a dead worker."),
}

HISTOGRAMS: dict[str, tuple[str, str]] = {
    "duration": ("taskmill_task_duration_seconds", "Run time of each attempt that ran to its end."),
    "wait": (
        "taskmill_task_queue_wait_seconds",
        "Time from a task being due to its attempt starting.",
    ),
}


class ReportCollector:
    """A collector over one report (a fresh registry per scrape: nothing global)."""

    def __init__(self, report: metrics.MetricsReport) -> None:
        self.report = report

    def collect(self) -> Iterator[Any]:
        report = self.report
        for event, (name, doc) in COUNTERS.items():
            counter = CounterMetricFamily(name, doc, labels=["task_type"])
            for task_type, value in sorted(report.counters.get(event, {}).items()):
                counter.add_metric([task_type], value)
            yield counter
        for key, (name, doc) in HISTOGRAMS.items():
            histogram = HistogramMetricFamily(name, doc, labels=["task_type"])
            for task_type, data in sorted(report.histograms.get(key, {}).items()):
                histogram.add_metric([task_type], data.buckets, data.sum_seconds)
            yield histogram
        domains = sorted({domain for domain, _ in report.tasks})
        for status in TaskStatus.values:
            gauge = GaugeMetricFamily(
                f"taskmill_tasks_{status}", f"Tasks {status} now, by domain.", labels=["domain"]
            )
            for domain in domains:
                gauge.add_metric([domain], report.tasks.get((domain, status), 0))
            yield gauge
        yield GaugeMetricFamily(
            "taskmill_workers_alive", "Workers whose heartbeat is recent.", report.workers_alive
        )
        yield GaugeMetricFamily(
            "taskmill_worker_slots", "Task slots of the live workers.", report.worker_slots
        )
        yield GaugeMetricFamily(
            "taskmill_oldest_pending_age_seconds",
            "Seconds the longest-waiting due task has waited (0: none waits).",
            report.oldest_pending_age_seconds,
        )
        yield GaugeMetricFamily("taskmill_schedules", "Recurring schedules.", report.schedules)


def render() -> bytes:
    """The current metrics in the text exposition format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ReportCollector(metrics.report()))
    return generate_latest(registry)
