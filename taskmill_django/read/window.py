"""The dashboard's window: history finished in the last hour, as charts.

Everything here reads history through its ``finished_at`` index and returns aggregates of at
most one row per type and minute, or per second: at a hundred tasks a second the window
holds hundreds of thousands of rows and the dashboard is polled every few seconds, so no row
of it reaches Python, and each pass over the window counts.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db.models import Count, Q, Value
from django.db.models.functions import Greatest, TruncMinute, TruncSecond

from .. import registry
from ..enums import HistoryStatus
from ..models import Task, TaskHistory

FAILURES = (HistoryStatus.FAILED, HistoryStatus.DEAD_LETTER)


@dataclasses.dataclass(frozen=True)
class MinuteSeries:
    """Finished tasks per minute of the window for one domain; index 0 is the oldest minute."""

    name: str
    completed: list[int]
    failed: list[int]


def window_start(now: datetime, minutes: int) -> datetime:
    """The first minute of the window; the last one is the minute ``now`` falls in."""
    current = now.astimezone(UTC).replace(second=0, microsecond=0)
    return current - timedelta(minutes=minutes - 1)


def _minute(column: str) -> TruncMinute:
    # UTC explicitly: no per-row time-zone conversion, and the same buckets on every database.
    return TruncMinute(column, tzinfo=UTC)


def _index(bucket: datetime, start: datetime) -> int:
    return int((bucket - start).total_seconds() // 60)


@dataclasses.dataclass(frozen=True)
class WindowGroup:
    """History finished in the window, counted by type, arrival and departure minute.

    The scan of history that the charts and the type table share: their counts are sums over
    these groups, so Python loops over groups (types x minutes), never over tasks. ``arrived``
    is clamped to the window start for tasks created before it.
    """

    domain: str
    task_type: str
    arrived: datetime
    left: datetime
    count: int
    completed: int
    failed: int


def window_groups(start: datetime) -> list[WindowGroup]:
    """One grouped query over history rows finished since ``start`` (``finished_at`` index).

    Only counts, and no ``domain`` column (it is the prefix of the qualified type): narrow
    groups let PostgreSQL hash-aggregate the window instead of sorting it.
    """
    rows = (
        TaskHistory.objects.filter(finished_at__gte=start)
        .annotate(
            arrived=TruncMinute(Greatest("created_at", Value(start)), tzinfo=UTC),
            left=_minute("finished_at"),
        )
        .values("task_type", "arrived", "left")
        .annotate(
            n=Count("id"),
            ok=Count("id", filter=Q(status=HistoryStatus.COMPLETED)),
            bad=Count("id", filter=Q(status__in=FAILURES)),
        )
        .order_by()
    )
    return [
        WindowGroup(
            row["task_type"].split("::", 1)[0],
            row["task_type"],
            row["arrived"],
            row["left"],
            row["n"],
            row["ok"],
            row["bad"],
        )
        for row in rows
    ]


def throughput_by_domain(
    start: datetime, minutes: int, groups: list[WindowGroup] | None = None
) -> list[MinuteSeries]:
    """Completions and failures per minute and domain since ``start``."""
    series: dict[str, tuple[list[int], list[int]]] = {
        d.name: ([0] * minutes, [0] * minutes) for d in registry.all_domains()
    }
    for group in window_groups(start) if groups is None else groups:
        i = _index(group.left, start)
        if 0 <= i < minutes:
            completed, failed = series.setdefault(group.domain, ([0] * minutes, [0] * minutes))
            completed[i] += group.completed
            failed[i] += group.failed
    return [MinuteSeries(name, c, f) for name, (c, f) in sorted(series.items())]


def queue_depth(start: datetime, minutes: int, active_now: int) -> list[int]:
    """The most unfinished tasks at any second of each minute of the window.

    Rebuilt from timestamps, per second, so work that arrives and finishes within a minute
    still shows (a sample at each minute's end would miss it): a task counts from
    ``created_at`` until ``finished_at``. Three grouped queries of at most one row per second
    of the window, however many tasks ran: history rows that finished in the window, by the
    second they arrived (created before the window = there from the start) and the second
    they left; active rows created in the window, by the second they arrived. The rest of
    the active table was there from the start.
    """
    seconds = minutes * 60
    arrivals = [0] * seconds
    departures = [0] * seconds
    finished = TaskHistory.objects.filter(finished_at__gte=start)
    base = 0
    for second, n in _per_second(finished, Greatest("created_at", Value(start))):
        if second <= start:
            base += n
        else:
            arrivals[_second(second, start, seconds)] += n
    for second, n in _per_second(finished, "finished_at"):
        departures[_second(second, start, seconds)] += n
    arrived_in_window = 0
    for second, n in _per_second(Task.objects.filter(created_at__gt=start), "created_at"):
        arrivals[_second(second, start, seconds)] += n
        arrived_in_window += n
    level = base + max(active_now - arrived_in_window, 0)
    peaks = []
    for minute in range(minutes):
        peak = level
        for tick in range(minute * 60, minute * 60 + 60):
            level += arrivals[tick]  # a task that comes and goes in one second still counts
            peak = max(peak, level)
            level -= departures[tick]
        peaks.append(max(peak, 0))
    return peaks


def _per_second(rows: Any, column: Any) -> list[tuple[datetime, int]]:
    """(second, rows) of ``rows`` grouped by ``column`` truncated to the second, in UTC."""
    grouped = (
        rows.annotate(second=TruncSecond(column, tzinfo=UTC))
        .values("second")
        .annotate(n=Count("id"))
        .order_by()
    )
    return [(row["second"], row["n"]) for row in grouped]


def _second(when: datetime, start: datetime, seconds: int) -> int:
    return min(max(int((when - start).total_seconds()), 0), seconds - 1)
