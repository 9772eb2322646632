"""Stored counters: what the metrics endpoint counts, added where the outcomes are written.

Counts are made where the store writes the outcomes, and committed with them: a count never
counts a task twice or one that did not commit. Outside a worker they are written by one
statement in the outcome's own transaction. A worker gathers them in memory instead
(``Buffered``) and writes them with the cycle that comes ``COUNTER_FLUSH_INTERVAL`` after the
last write, in that cycle's transaction: at a few tasks per cycle, an upsert of a handful of
counter rows in every cycle is a large share of what the cycle costs the database. A worker
killed with SIGKILL loses at most that interval of counts (a graceful stop writes them all; 0
writes them in every cycle). Each worker adds to rows of its own (``source`` = its id),
so workers never wait on one another's counter rows; upkeep folds the rows of workers that are
gone into the shared rows (``fold_departed``). Submissions are not counted at all: every task
ever submitted is either still in the task table or was counted when it left it, so the read
side derives ``submitted`` from the two (no statement on ``submit()``).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import Any

from django.db import connection, transaction

from ..enums import HistoryStatus
from ..models import Task, TaskCounter, Worker
from .db import chunks, qn

# Counted events that are not a history status (those are counted under their own name).
RETRIED = "retried"
PREEMPTED = "preempted"
RESCUED = "rescued"
EVENTS = (*HistoryStatus.values, RETRIED, PREEMPTED, RESCUED)

# Histograms: run time of each attempt, and its wait from due to start. Bucket upper bounds in
# seconds (Prometheus' ``le``); each observation counts in the first bucket that holds it
# (stored per bucket, made cumulative when read) and its milliseconds add to ``<name>_sum_ms``.
DURATION = "duration"
WAIT = "wait"
HISTOGRAMS = (DURATION, WAIT)
BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
)  # fmt: skip
BUCKETS_MS: tuple[int, ...] = tuple(round(b * 1000) for b in BUCKETS)
INF = "+Inf"
BOUND_LABELS: tuple[str, ...] = (*(f"{b:g}" for b in BUCKETS), INF)

SHARED = ""  # the source of folded rows and of counts made outside any worker

Key = tuple[str, str, str]  # (source, task_type, metric)


def bucket_metric(histogram: str, bound_label: str) -> str:
    return f"{histogram}_le:{bound_label}"


def sum_metric(histogram: str) -> str:
    return f"{histogram}_sum_ms"


def bucket_for(ms: int) -> str:
    """The label of the first bound that holds ``ms`` whole milliseconds (Prometheus' ``le``)."""
    return BOUND_LABELS[bisect.bisect_left(BUCKETS_MS, ms)]


def source_of(worker_id: object) -> str:
    return str(worker_id) if worker_id else SHARED


class Tally:
    """Increments gathered while a batch is written, sent as one statement by ``save``."""

    def __init__(self) -> None:
        self.counts: dict[Key, int] = {}

    def add(self, source: str, task_type: str, metric: str, n: int = 1) -> None:
        key = (source, task_type, metric)
        self.counts[key] = self.counts.get(key, 0) + n

    def observe(self, source: str, task_type: str, histogram: str, ms: float) -> None:
        whole = max(round(ms), 0)  # whole milliseconds, as the PostgreSQL path counts them
        self.add(source, task_type, bucket_metric(histogram, bucket_for(whole)))
        self.add(source, task_type, sum_metric(histogram), whole)

    def run(self, row: Task, duration_ms: int | None) -> None:
        """An attempt of ``row`` ran for ``duration_ms``: observe it and its queue wait."""
        self.ran(source_of(row.worker_id), row.task_type, duration_ms, queue_wait_ms(row))

    def ran(
        self, source: str, task_type: str, duration_ms: float | None, wait_ms: float | None
    ) -> None:
        """An attempt ran for ``duration_ms`` after waiting ``wait_ms`` from due to start
        (neither is observed when it did not run to its end: ``duration_ms`` None)."""
        if duration_ms is None:
            return
        self.observe(source, task_type, DURATION, duration_ms)
        if wait_ms is not None:
            self.observe(source, task_type, WAIT, wait_ms)

    def merge(self, counts: Mapping[Key, int]) -> None:
        for key, n in counts.items():
            self.counts[key] = self.counts.get(key, 0) + n

    def save(self) -> None:
        add(self.counts)
        self.counts = {}


def queue_wait_ms(row: Task) -> float | None:
    """Milliseconds from when ``row`` was due (submitted, or its ``run_after``) to its start."""
    loaded = row.__dict__
    started: datetime | None = loaded.get("started_at")
    created: datetime | None = loaded.get("created_at")
    if started is None or created is None:
        return None
    due = max(created, loaded.get("run_after") or created)
    return max((started - due).total_seconds() * 1000.0, 0.0)


# Where counts go instead of the database while a worker's cycle writes outcomes (Buffered).
_gathering: ContextVar[Tally | None] = ContextVar("taskmill_counts", default=None)


def add(counts: Mapping[Key, int]) -> None:
    """Add ``counts`` to the stored counters, in the caller's transaction; inside
    ``Buffered.gathering`` to the worker's buffer instead."""
    gathering = _gathering.get()
    if gathering is not None:
        gathering.merge(counts)
    else:
        write(counts)


def write(counts: Mapping[Key, int]) -> None:
    """Add ``counts`` to the stored rows: one upsert per 500 keys, in the caller's transaction.
    Keys go in sorted order so two transactions adding to the same rows lock them in the same
    order (no deadlock)."""
    items = sorted((key, n) for key, n in counts.items() if n)
    for chunk in chunks(items):
        values = ", ".join(["(%s, %s, %s, %s)"] * len(chunk))
        params = [
            v for (source, task_type, metric), n in chunk for v in (source, task_type, metric, n)
        ]
        with connection.cursor() as cursor:
            cursor.execute(_upsert_sql(values), params)


def _upsert_sql(values: str) -> str:
    table, value = qn(TaskCounter._meta.db_table), qn("value")
    columns = ", ".join(qn(c) for c in ("source", "task_type", "metric", "value"))
    head = f"INSERT INTO {table} ({columns}) VALUES {values} "  # noqa: S608 - quoted constants
    if connection.vendor in ("postgresql", "sqlite"):
        key = ", ".join(qn(c) for c in ("source", "task_type", "metric"))
        return (
            head + f"ON CONFLICT ({key}) DO UPDATE SET {value} = {table}.{value} + excluded.{value}"
        )
    return head + f"ON DUPLICATE KEY UPDATE {value} = {value} + VALUES({value})"


class Buffered:
    """A worker's counts between writes: gathered while its cycles write outcomes, and written
    by the first cycle ``interval`` seconds after the last write, in that cycle's transaction.

    Counts join the buffer only once their transaction has committed (``on_commit``), and leave
    it only once the transaction that wrote them has: a cycle that fails changes nothing, and
    its outcomes, written again by a later cycle, are counted then.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.tally = Tally()
        self._due = time.monotonic() + interval

    @contextmanager
    def gathering(self, flush: bool = False) -> Iterator[None]:
        """Inside a transaction: counts made in the block go to this buffer when it commits;
        the buffer is written in the same transaction when it is due or ``flush`` is set."""
        cycle = Tally()
        token = _gathering.set(cycle)
        try:
            yield
        finally:
            _gathering.reset(token)
        if flush or time.monotonic() >= self._due:
            both = Tally()
            both.merge(self.tally.counts)
            both.merge(cycle.counts)
            write(both.counts)
            transaction.on_commit(self._written)
        elif cycle.counts:
            transaction.on_commit(lambda: self.tally.merge(cycle.counts))

    def due(self) -> bool:
        """Holds counts and their interval is up."""
        return bool(self.tally.counts) and time.monotonic() >= self._due

    def flush(self) -> None:
        """Write what the buffer holds now (a worker's last act before it stops)."""
        with transaction.atomic(), self.gathering(flush=True):
            pass

    def _written(self) -> None:
        self.tally = Tally()
        self._due = time.monotonic() + self.interval


def count_history(
    rows: Iterable[Task], statuses: Mapping[int, str], durations: Mapping[int, int | None]
) -> None:
    """Count tasks leaving the task table (``move_to_history``): their end, and the run time
    and queue wait of their last attempt when it ran to its end."""
    tally = Tally()
    for row in rows:
        tally.add(source_of(row.worker_id), row.task_type, statuses[row.id])
        tally.run(row, durations.get(row.id))
    tally.save()


def count_events(rows: Iterable[tuple[Any, str]], metric: str) -> None:
    """Count ``metric`` once for each (worker_id, task_type) in ``rows``."""
    tally = Tally()
    for worker_id, task_type in rows:
        tally.add(source_of(worker_id), task_type, metric)
    tally.save()


def fold_departed() -> int:
    """Fold the counter rows of workers that no longer exist (stopped, or forgotten after
    dying) into the shared rows; return how many rows were folded. Totals are unchanged: the
    same transaction adds their values to the shared rows and deletes them."""
    live = {str(worker_id) for worker_id in Worker.objects.values_list("id", flat=True)}
    gone = TaskCounter.objects.exclude(source=SHARED).exclude(source__in=live)
    if not gone.exists():  # a plain read first: most passes find nothing (SQLite's one lock)
        return 0
    with transaction.atomic():
        departed = list(
            TaskCounter.objects.select_for_update()
            .exclude(source=SHARED)
            .exclude(source__in=live)
            .order_by("id")[:5000]
        )
        if not departed:
            return 0
        totals: dict[Key, int] = {}
        for row in departed:
            key = (SHARED, row.task_type, row.metric)
            totals[key] = totals.get(key, 0) + row.value
        TaskCounter.objects.filter(id__in=[row.id for row in departed]).delete()
        write(totals)
    return len(departed)
