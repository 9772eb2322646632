"""The query API's SELECTs (SPEC §3 TaskStore, DomainHandle): plain queries, aggregated in SQL.

Limits and offsets are checked here, so a negative one is a ValidationError naming the argument
on every surface.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import Avg, Count, Min, Q, Sum

from ..enums import HistoryStatus, TaskStatus
from ..models import Task, TaskDependency, TaskHistory, TaskHistoryTag, TaskTag
from ..records import IoTotals, TypeStats
from ..validation import validate_count

EVERYTHING = Q()  # the unscoped filter: every domain


def running_tasks(
    scope: Q = EVERYTHING, limit: int | None = None, *, with_payloads: bool = True
) -> list[Task]:
    """Running tasks, longest-running first (``limit`` of them, when given).
    ``with_payloads=False`` leaves payloads and memos in the database (an overview)."""
    rows = Task.objects.running().filter(scope).order_by("started_at", "id")
    if not with_payloads:
        rows = rows.defer("payload", "memo")
    return list(rows if limit is None else rows[: validate_count("limit", limit)])


def count(status: str, scope: Q = EVERYTHING) -> int:
    return Task.objects.filter(scope, status=status).count()


def pending_tasks(limit: int, scope: Q = EVERYTHING) -> list[Task]:
    rows = Task.objects.pending().filter(scope).in_dispatch_order()
    return list(rows[: validate_count("limit", limit)])


def tasks_with_status(status: str, scope: Q = EVERYTHING) -> list[Task]:
    return list(Task.objects.filter(scope, status=status).in_dispatch_order())


def running_io_totals(scope: Q = EVERYTHING) -> IoTotals:
    sums = (
        Task.objects.running()
        .filter(scope)
        .aggregate(
            r=Sum("expected_read_bytes"),
            w=Sum("expected_write_bytes"),
            rx=Sum("expected_net_rx_bytes"),
            tx=Sum("expected_net_tx_bytes"),
        )
    )
    return IoTotals(sums["r"] or 0, sums["w"] or 0, sums["rx"] or 0, sums["tx"] or 0)


def task_dependencies(task_id: int, scope: Q = EVERYTHING) -> list[int]:
    return list(
        TaskDependency.objects.filter(task_id=task_id, task__in=Task.objects.filter(scope))
        .order_by("depends_on_id")
        .values_list("depends_on_id", flat=True)
    )


def task_dependents(task_id: int, scope: Q = EVERYTHING) -> list[int]:
    return list(
        TaskDependency.objects.filter(depends_on_id=task_id, task__in=Task.objects.filter(scope))
        .order_by("task_id")
        .values_list("task_id", flat=True)
    )


def page(rows: Any, limit: int, offset: int = 0) -> list[Any]:
    """``limit`` rows from ``offset`` on, both checked (>= 0)."""
    start = validate_count("offset", offset)
    return list(rows[start : start + validate_count("limit", limit)])


def history(limit: int, offset: int = 0, scope: Q = EVERYTHING) -> list[TaskHistory]:
    return page(TaskHistory.objects.filter(scope).newest_first(), limit, offset)


def history_by_type(task_type: str, limit: int, scope: Q = EVERYTHING) -> list[TaskHistory]:
    return page(TaskHistory.objects.filter(scope, task_type=task_type).newest_first(), limit)


def history_by_key(key: str, scope: Q = EVERYTHING) -> list[TaskHistory]:
    return list(TaskHistory.objects.filter(scope, key=key).newest_first())


def failed_tasks(limit: int, scope: Q = EVERYTHING) -> list[TaskHistory]:
    return page(TaskHistory.objects.failures().filter(scope).newest_first(), limit)


def dead_letter_tasks(limit: int, offset: int = 0, scope: Q = EVERYTHING) -> list[TaskHistory]:
    return page(TaskHistory.objects.dead_letter().filter(scope).newest_first(), limit, offset)


def history_stats(task_type: str, scope: Q = EVERYTHING) -> TypeStats:
    """Runs of ``task_type`` in history: durations and IO are averaged over completed runs
    only (a run that failed early would make the type look cheap); the failure rate counts
    ``failed`` and ``dead_letter`` among all runs."""
    completed = Q(status=HistoryStatus.COMPLETED)
    agg = TaskHistory.objects.filter(scope, task_type=task_type).aggregate(
        n=Count("id"),
        duration=Avg("duration_ms", filter=completed),
        read=Avg("read_bytes", filter=completed),
        write=Avg("write_bytes", filter=completed),
        failures=Count(
            "id", filter=Q(status__in=[HistoryStatus.FAILED, HistoryStatus.DEAD_LETTER])
        ),
    )
    n = agg["n"] or 0
    return TypeStats(
        count=n,
        avg_duration_ms=float(agg["duration"] or 0.0),
        avg_read_bytes=float(agg["read"] or 0.0),
        avg_write_bytes=float(agg["write"] or 0.0),
        failure_rate=(agg["failures"] / n) if n else 0.0,
    )


def avg_throughput(task_type: str, limit: int = 100, scope: Q = EVERYTHING) -> tuple[float, float]:
    """(read, write) bytes per second over the newest ``limit`` completed runs: the bytes
    they recorded over the time they ran, so long runs weigh as much as they lasted."""
    rows = TaskHistory.objects.filter(
        scope, task_type=task_type, status=HistoryStatus.COMPLETED, duration_ms__gt=0
    ).newest_first()[: validate_count("limit", limit)]
    # The ids are read first: MySQL cannot take LIMIT inside an IN subquery.
    ids = list(rows.values_list("id", flat=True))
    totals = TaskHistory.objects.filter(id__in=ids).aggregate(
        read=Sum("read_bytes"), write=Sum("write_bytes"), ms=Sum("duration_ms")
    )
    if not totals["ms"]:
        return (0.0, 0.0)
    seconds = float(totals["ms"]) / 1000.0
    return (float(totals["read"] or 0) / seconds, float(totals["write"] or 0) / seconds)


def next_run_after(scope: Q = EVERYTHING) -> datetime | None:
    return Task.objects.filter(scope, status=TaskStatus.PENDING, run_after__isnull=False).aggregate(
        t=Min("run_after")
    )["t"]


def counts_by_domain() -> dict[str, dict[str, int]]:
    result: dict[str, dict[str, int]] = {}
    for row in Task.objects.values("domain", "status").annotate(n=Count("id")).order_by():
        result.setdefault(row["domain"], {})[row["status"]] = row["n"]
    return result


def task_ids_by_tags(
    filters: dict[str, str], status: str | None = None, scope: Q = EVERYTHING
) -> list[int]:
    """Active task ids carrying every ``key=value`` of ``filters``."""
    qs = Task.objects.filter(scope)
    if status:
        qs = qs.filter(status=status)
    for key, value in filters.items():
        qs = qs.filter(id__in=TaskTag.objects.filter(key=key, value=value).values("task_id"))
    return list(qs.order_by("id").values_list("id", flat=True))


def count_by_tag(key: str, status: str | None = None, scope: Q = EVERYTHING) -> dict[str, int]:
    """Active tasks per value of tag ``key``."""
    qs = TaskTag.objects.filter(key=key, task__in=Task.objects.filter(scope))
    if status:
        qs = qs.filter(task__status=status)
    return dict(
        qs.values("value").annotate(n=Count("id")).order_by("value").values_list("value", "n")
    )


def tag_values(key: str, scope: Q = EVERYTHING) -> list[tuple[str, int]]:
    """``(value, count)`` of tag ``key`` among active tasks, most common first (then by
    value, so the order is stable)."""
    rows = (
        TaskTag.objects.filter(key=key, task__in=Task.objects.filter(scope))
        .values("value")
        .annotate(n=Count("id"))
        .order_by("-n", "value")
        .values_list("value", "n")
    )
    return [(value, n) for value, n in rows]


def tag_keys_by_prefix(prefix: str, scope: Q = EVERYTHING) -> list[str]:
    """Distinct tag keys of active tasks starting with ``prefix`` (letter case counts)."""
    return list(
        TaskTag.objects.with_key_prefix(prefix)
        .filter(task__in=Task.objects.filter(scope))
        .order_by("key")
        .values_list("key", flat=True)
        .distinct()
    )


def _with_tag_key_prefix(prefix: str, status: str | None, scope: Q) -> Any:
    """Active tasks with a tag key starting with ``prefix`` (letter case counts)."""
    qs = Task.objects.filter(
        scope, id__in=TaskTag.objects.with_key_prefix(prefix).values("task_id")
    )
    return qs.filter(status=status) if status else qs


def task_ids_by_tag_key_prefix(
    prefix: str, status: str | None = None, scope: Q = EVERYTHING
) -> list[int]:
    rows = _with_tag_key_prefix(prefix, status, scope)
    return list(rows.order_by("id").values_list("id", flat=True))


def count_by_tag_key_prefix(prefix: str, status: str | None = None, scope: Q = EVERYTHING) -> int:
    return int(_with_tag_key_prefix(prefix, status, scope).count())


def history_tags(history_id: int) -> dict[str, str]:
    return dict(TaskHistoryTag.objects.filter(history_id=history_id).values_list("key", "value"))
