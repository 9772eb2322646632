"""How far running tasks have come: one estimator for the query API, the REST API, the admin and
the dashboard, so every surface shows the same figure for the same task.

A task's own reports come first. Between reports, and for tasks that never report, the figure
is extrapolated from two rates (fractions of the work per second):

- the *reported rate*: the last reported fraction over the time it took to get there;
- the *history rate*: one over the mean duration of the type's newest ``HISTORY_SAMPLE``
  completed runs.

The two are blended in proportion to how much has been reported: a task at 10% is mostly
judged by its type's history (its first moments say little), a task at 90% mostly by its own
pace. Without a report the history rate alone applies; without history, the reported rate
alone; with neither there is nothing to extrapolate. An extrapolation stops at 0.99, and a
task that has run past the whole duration the estimate gave it is *overdue*: it shows as such
rather than as an eternal "99%".

All times come from the database clock (``started_at``, ``progress_at`` and ``Now()``), like
every lease comparison, so a web server with a skewed clock estimates the same as a worker.

>>> extrapolate(reported=None, reported_after=None, elapsed=5.0, expected=10.0)
(0.5, False)
>>> extrapolate(reported=0.5, reported_after=10.0, elapsed=12.0, expected=None)
(0.6, False)
>>> extrapolate(reported=None, reported_after=None, elapsed=25.0, expected=1.0)
(0.99, True)
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from django.db.models import Avg, Q
from django.db.models.functions import Now

from ..enums import HistoryStatus
from ..models import Task, TaskHistory
from ..records import ByteProgress, EstimatedProgress
from ..validation import validate_count
from .queries import EVERYTHING

HISTORY_SAMPLE = 1000  # newest completed runs whose mean duration is a type's expectation
CAP = 0.99  # an estimate never claims a running task is done


def extrapolate(
    *,
    reported: float | None,
    reported_after: float | None,
    elapsed: float,
    expected: float | None,
) -> tuple[float | None, bool]:
    """(extrapolated fraction or None, overdue) for a task running ``elapsed`` seconds that
    reported ``reported`` ``reported_after`` seconds into its run, of a type whose runs take
    ``expected`` seconds (None: no history)."""
    history_rate = 1.0 / expected if expected and expected > 0 else None
    own_rate = reported / reported_after if reported is not None and reported_after else None
    if reported is None or reported_after is None:
        reported, reported_after = 0.0, 0.0
    rate: float | None
    if own_rate is not None and history_rate is not None:
        rate = reported * own_rate + (1.0 - reported) * history_rate
    else:
        rate = own_rate if own_rate is not None else history_rate
    if rate is None:
        return None, False
    fraction = reported + rate * max(elapsed - reported_after, 0.0)
    overdue = fraction >= 1.0 and reported < 1.0
    return round(min(fraction, CAP), 6), overdue


def expected_seconds(task_types: Iterable[str], scope: Q = EVERYTHING) -> dict[str, float]:
    """Mean duration in seconds of the newest ``HISTORY_SAMPLE`` completed runs, per type that
    has any (one bounded query per type, through the ``(task_type, finished_at)`` index)."""
    found = {}
    for task_type in sorted(set(task_types)):
        newest = (
            TaskHistory.objects.filter(
                scope, task_type=task_type, status=HistoryStatus.COMPLETED, duration_ms__gt=0
            )
            .order_by("-finished_at")
            .values("duration_ms")[:HISTORY_SAMPLE]
        )
        mean_ms = newest.aggregate(mean=Avg("duration_ms"))["mean"]
        if mean_ms:
            found[task_type] = float(mean_ms) / 1000.0
    return found


def running_with_clock(scope: Q = EVERYTHING, limit: int | None = None) -> list[Task]:
    """Running tasks, longest-running first (``limit`` of them, when given), annotated with
    ``db_now``, the database clock. Payloads and memos stay in the database: an overview never
    needs them, and a payload may hold secrets."""
    rows = (
        Task.objects.running()
        .filter(scope)
        .defer("payload", "memo")
        .annotate(db_now=Now())
        .order_by("started_at", "id")
    )
    return list(rows if limit is None else rows[: validate_count("limit", limit)])


def _report_of(task: Task) -> tuple[float | None, float | None]:
    """The attempt's last report and how many seconds into the attempt it came (None when
    the row does not say). A report older than the attempt (a paused or released task starts
    over) is no report."""
    if task.progress is None:
        return None, None
    if task.progress_at is None or task.started_at is None:
        return task.progress, None
    after = (task.progress_at - task.started_at).total_seconds()
    return (task.progress, after) if after >= 0 else (None, None)


def _elapsed(task: Task) -> float:
    if task.started_at is None:
        return 0.0
    return max((task.db_now - task.started_at).total_seconds(), 0.0)  # type: ignore[attr-defined]


def estimate(tasks: list[Task], history_scope: Q = EVERYTHING) -> list[EstimatedProgress]:
    """One record per task of ``tasks`` (rows from ``running_with_clock``), in their order;
    ``history_scope`` limits the history the expectations are read from."""
    expected = expected_seconds((t.task_type for t in tasks), history_scope)
    records = []
    for task in tasks:
        reported, after = _report_of(task)
        extrapolated, overdue = extrapolate(
            reported=reported,
            reported_after=after,
            elapsed=_elapsed(task),
            expected=expected.get(task.task_type),
        )
        best = reported if reported is not None else extrapolated
        records.append(
            EstimatedProgress(
                task_id=task.id,
                task_type=task.task_type,
                reported_percent=reported,
                extrapolated_percent=extrapolated,
                percent=best if best is not None else 0.0,
                is_overdue=overdue,
            )
        )
    return records


def estimated_progress(scope: Q = EVERYTHING) -> list[EstimatedProgress]:
    """Every running task of ``scope``, longest-running first."""
    return estimate(running_with_clock(scope), scope)


def byte_progress(scope: Q = EVERYTHING) -> list[ByteProgress]:
    """Running tasks of ``scope`` that reported bytes in this attempt, longest-running first."""
    records = []
    for task in running_with_clock(scope):
        if task.progress_bytes_done is None or _report_of(task)[0] is None:
            continue
        rate = float(task.progress_bytes_per_second or 0.0)
        total = task.progress_bytes_total
        eta = None
        if rate > 0 and total is not None:
            eta = timedelta(seconds=max(total - task.progress_bytes_done, 0) / rate)
        records.append(
            ByteProgress(
                task_id=task.id,
                task_type=task.task_type,
                bytes_completed=task.progress_bytes_done,
                bytes_total=total,
                throughput_bps=rate,
                elapsed=timedelta(seconds=_elapsed(task)),
                eta=eta,
            )
        )
    return records
