"""Lock and load: the claim-lock row, then what the cluster runs now, read after the lock.

Counts are taken under one lock row, so two workers can never both see the last free slot of
a group (RELIABILITY G6). A claim that counts against a cap in reach holds the row exclusively
(one such claimer at a time, cluster-wide); the others hold it shared, side by side, but never
while an exclusive claimer counts. Every read comes after the lock in the same round trip
where the driver allows, so it sees every claim committed before the lock was granted.
"""

from __future__ import annotations

import functools
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import CharField, Count, IntegerField, Value
from django.db.models.functions import Cast, Now

from ...conf import app_settings
from ...enums import TaskStatus
from ...models import SchedulerSetting, Task, Worker
from ..db import Ahead, preparable, qn, run_together

CLAIM_LOCK = "__claim_lock__"
_SHARE_MODE = {"mysql": "LOCK IN SHARE MODE"}
# Tokens of each bucket, the database clock and the live workers' slots, read without locks.
_BUCKETS_AND_SLOTS = preparable(
    "SELECT name, tokens, refreshed_at, STATEMENT_TIMESTAMP(), "
    "(SELECT COALESCE(SUM(concurrency), 0) FROM taskmill_worker "
    "WHERE heartbeat_at >= STATEMENT_TIMESTAMP() - %s) "
    "FROM taskmill_rate_bucket WHERE name = ANY(%s)"
)


@dataclass(frozen=True)
class Load:
    """What the cluster runs now, read at the start of a gated claim."""

    running: list[tuple[str, str | None, int]]  # (domain, group, count) of running tasks
    # This claim's limit plus what every other live worker could claim meanwhile: its free
    # threads and the tasks it claims ahead of them.
    headroom: int
    slots: int  # the concurrency of every live worker, this one included
    buckets: list[tuple[Any, ...]] | None = None  # PostgreSQL: rows of _BUCKETS_AND_SLOTS


def read_state(
    worker_id: uuid.UUID,
    limit: int,
    *,
    lock: bool | None,
    count: bool,
    buckets: list[str],
    ahead: Ahead | None = None,
) -> Load:
    """Take the claim lock (``lock``: exclusive or shared; None: none), then read the load
    (when ``count``) and the rate buckets (when named), in one round trip where the driver
    allows: each read comes after the lock, so it sees every claim committed before it."""
    results = run_together(state_statements(lock, count, buckets), ahead)
    locked, load = state_from(iter(results), lock, count, buckets, (worker_id, limit))
    if not locked:
        # The lock row does not exist yet: create it, lock it, and read again.
        _lock(bool(lock))
        results = run_together(state_statements(None, count, buckets))
        load = state_from(iter(results), None, count, buckets, (worker_id, limit))[1]
    return load


def state_statements(
    lock: bool | None, count: bool, buckets: list[str]
) -> list[tuple[str, Sequence[Any]]]:
    """The statements of ``read_state``, in order (also the head of a one-round-trip claim)."""
    statements: list[tuple[str, Sequence[Any]]] = []
    if lock is not None and connection.vendor != "sqlite":
        statements.append(_lock_statement(lock))
    if count:
        statements.append(_load_sql(connection.vendor, app_settings.lease_timeout))
    if buckets:
        statements.append(buckets_statement(buckets))
    return statements


def state_from(
    results: Iterator[list[tuple[Any, ...]]],
    lock: bool | None,
    count: bool,
    buckets: list[str],
    claimer: tuple[uuid.UUID, int],
) -> tuple[bool, Load]:
    """Whether the lock row was found (True when none was asked for) and the load, taken
    from the results of ``state_statements`` (consumed from ``results``)."""
    worker_id, limit = claimer
    locked = bool(next(results)) if lock is not None and connection.vendor != "sqlite" else True
    load = _load_from(next(results), worker_id, limit) if count else Load([], limit, 0)
    if buckets:
        load = replace(load, buckets=next(results))
    return locked, load


def buckets_statement(names: list[str]) -> tuple[str, list[Any]]:
    """PostgreSQL: the named buckets, the database clock and the live slots, unlocked."""
    return _BUCKETS_AND_SLOTS, [app_settings.lease_timeout, names]


def _load_from(rows: list[tuple[Any, ...]], worker_id: uuid.UUID, limit: int) -> Load:
    """Running tasks per worker, domain and group, and every live worker's pool size and
    claim-ahead, from the rows of the load statement (a UNION of both reads).

    Another worker can claim as many tasks as it has threads and claim-ahead places, less
    what it runs (its claimed-ahead tasks are running rows): a cap is out of reach only if
    all of that together cannot reach it, or two workers that each found it out of reach
    under the shared lock could exceed it together by their queues."""
    running: Counter[tuple[str, str | None]] = Counter()
    busy: Counter[str] = Counter()
    slots: dict[str, int] = {}
    holds: dict[str, int] = {}
    for worker, domain, group, count, concurrency, ahead in rows:
        key = uuid.UUID(str(worker)).hex if worker is not None else ""
        if concurrency is None:  # (MySQL types the UNION's numbers as decimals)
            running[(domain, group)] += int(count)
            busy[key] += int(count)
        else:
            slots[key] = int(concurrency)
            holds[key] = int(concurrency) + int(ahead)
    others = sum(max(0, n - busy[w]) for w, n in holds.items() if w != worker_id.hex)
    return Load([(d, g, n) for (d, g), n in running.items()], limit + others, sum(slots.values()))


@functools.lru_cache(maxsize=8)
def _load_sql(vendor: str, lease_timeout: timedelta) -> tuple[str, tuple[Any, ...]]:
    """The load statement (compiled once: building two querysets per claim cost more than
    running them). Typed NULLs: each side of the UNION is a derived table (MySQL needs that),
    whose untyped NULLs PostgreSQL would take for text."""
    per_worker = (
        Task.objects.filter(status=TaskStatus.RUNNING)
        .values_list("worker_id", "domain", "group_key")
        .annotate(
            n=Count("id"),
            slots=Cast(Value(None), IntegerField()),
            ahead=Cast(Value(None), IntegerField()),
        )
        .order_by()
    )
    live = (
        Worker.objects.filter(heartbeat_at__gte=Now() - lease_timeout)
        .annotate(
            none=Cast(Value(None), CharField()),
            zero=Cast(Value(0), IntegerField()),
        )
        .values_list("id", "none", "none", "zero", "concurrency", "claim_ahead")
        .order_by()
    )
    first, first_params = per_worker.query.sql_with_params()
    second, second_params = live.query.sql_with_params()
    sql = (
        f"SELECT * FROM ({first}) AS {qn('running')} "  # noqa: S608
        f"UNION ALL SELECT * FROM ({second}) AS {qn('live')}"
    )
    return preparable(sql), (*first_params, *second_params)


def _lock(exclusive: bool) -> None:
    """Hold the claim lock row until commit: exclusively to count running tasks against caps
    (one such claimer at a time, cluster-wide), shared otherwise (claims side by side, but
    never while an exclusive claimer counts). SQLite serialises writers anyway."""
    if connection.vendor == "sqlite":
        return
    if not _lock_row(exclusive):
        try:
            with transaction.atomic():
                SchedulerSetting.objects.create(name=CLAIM_LOCK, value=None)
        except IntegrityError:
            pass
        _lock_row(exclusive)


def _lock_row(exclusive: bool) -> bool:
    sql, params = _lock_statement(exclusive)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone() is not None


def _lock_statement(exclusive: bool) -> tuple[str, list[Any]]:
    table = qn(SchedulerSetting._meta.db_table)
    mode = "FOR UPDATE" if exclusive else _SHARE_MODE.get(connection.vendor, "FOR SHARE")
    sql = f"SELECT 1 FROM {table} WHERE {qn('name')} = %s {mode}"  # noqa: S608
    return preparable(sql), [CLAIM_LOCK]
