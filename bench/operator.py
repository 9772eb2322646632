"""Operator views on a production-sized database: the dashboard's JSON and the REST lists.

An operator keeps the admin dashboard open while the cluster is busy (its script polls the JSON
view every few seconds) and tools page through the REST lists. Those views aggregate over
history, so they are only as fast as their worst query on a big table, which the other
scenarios (a few thousand rows) never show. This one fills the database with a day of history
(1,000,000 rows: completed, failed, dead-lettered and cancelled, with durations) and 100,000
active rows (pending, running, paused and blocked, in several domains, types and groups, with
tags and dependency edges), then times each view through Django's test Client as a logged-in
superuser: URL routing, middleware, session, permission checks and serialisation included;
no web server or network.

The fill is set-based SQL (``INSERT ... SELECT`` over ``generate_series``): the ORM row by row
would take longer than everything else by orders of magnitude. Every value is a function of the
row number, so two runs see the same data. SQLite gets a tenth of the rows (a recursive CTE
stands in for ``generate_series``) to keep the default run short.

The slowest statements of each view go into the results JSON (with ``EXPLAIN ANALYZE`` on
PostgreSQL), so a slow view can be fixed from the file without re-running the bench. Statement
times come from an execute wrapper: on PostgreSQL they include fetching the rows, on SQLite
only the first step of the statement.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.color import no_style
from django.db import connection, transaction
from django.test import Client
from django.urls import reverse

from bench.scenarios import Context, fresh_database
from taskmill_django import Domain, TaskContext
from taskmill_django.models import Task, Worker

# (percent, value) mixes; each column draws from its own hash of the row number.
TYPES = [
    (25, "email::send"),
    (5, "email::digest"),
    (15, "billing::charge"),
    (3, "billing::refund"),
    (7, "billing::invoice"),
    (20, "media::thumbnail"),
    (6, "media::transcode"),
    (9, "media::probe"),
    (6, "reports::daily"),
    (4, "reports::export"),
]
HISTORY_STATUS = [(90, "completed"), (5, "failed"), (1, "dead_letter"), (4, "cancelled")]
ACTIVE_STATUS = [(80, "pending"), (2, "running"), (8, "paused"), (10, "blocked")]
PRIORITY = [(10, "64"), (80, "128"), (10, "192")]
TENANTS = 40  # groups "tenant-N"; 30% of tasks are ungrouped
HISTORY_SECONDS = 24 * 3600  # history finishes over the last day, the newest ids last
ACTIVE_SECONDS = 2 * 3600  # the backlog was submitted over the last two hours
WORKERS = 2
WARMUP = 2
EXPLAIN_TOP = 3
ENDPOINTS = {  # result key -> URL name
    "dashboard_data": "admin:taskmill_django_dashboard_data",
    "api_tasks": "taskmill_api:task-list",
    "api_history": "taskmill_api:history-list",
}


def _noop(ctx: TaskContext, **payload: object) -> None:
    return None


# Registered (in this process only) so the dashboard's per-type and per-domain rows cover the
# filled types, as they would in the project that produced them.
for _domain in sorted({t.split("::")[0] for _, t in TYPES}):
    _declared = Domain(_domain)
    for _, _type in TYPES:
        if _type.startswith(_domain + "::"):
            _declared.task(_type.split("::")[1])(_noop)


# --- SQL building blocks (PostgreSQL and SQLite) ----------------------------------------------


def _pg() -> bool:
    return connection.vendor == "postgresql"


def _series() -> tuple[str, str]:
    """(statement prefix, FROM source) yielding i = 1..%s."""
    if _pg():
        return "", "generate_series(1, %s) AS s(i)"
    return "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < %s)", "s"


def _hash(salt: int, modulo: int) -> str:
    """A pseudo-random 0..modulo-1 from the row number: multiplicative hashing modulo a prime,
    one multiplier per salt so that columns are independent (no 64-bit overflow below ~3G rows)."""
    return f"((i * {2654435761 + 2_000_006 * salt}) %% 2147483647 %% {modulo})"


def _pick(expr: str, mix: Sequence[tuple[int, str]], quote: bool = True) -> str:
    """CASE choosing a value of ``mix`` by ``expr`` (0..99) with the given percentages."""
    arms, total = [], 0
    for percent, value in mix:
        total += percent
        arms.append(f"WHEN {expr} < {total} THEN " + (f"'{value}'" if quote else value))
    return f"CASE {' '.join(arms)} END"


def _ago(seconds: str) -> str:
    """The timestamp ``seconds`` (an SQL expression; negative = ahead) before now."""
    if _pg():
        return f"(STATEMENT_TIMESTAMP() - ({seconds}) * INTERVAL '1 second')"
    return f"STRFTIME('%%Y-%%m-%%d %%H:%%M:%%f', 'now', (-({seconds})) || ' seconds')"


def _json(pairs: str) -> str:
    return f"{'jsonb_build_object' if _pg() else 'json_object'}({pairs})"


def _mix_columns(salt: int) -> str:
    """type, domain, group and priority columns shared by history and active rows."""
    domains = [(p, t.split("::")[0]) for p, t in TYPES]
    tenant = _hash(salt + 4, TENANTS)
    group = f"CASE WHEN {_hash(salt + 3, 10)} < 3 THEN NULL ELSE 'tenant-' || {tenant} END"
    return (
        f"{_pick(_hash(salt + 1, 100), TYPES)} AS task_type, "
        f"{_pick(_hash(salt + 1, 100), domains)} AS domain, {group} AS grp, "
        f"{_pick(_hash(salt + 5, 100), PRIORITY, quote=False)} AS priority"
    )


# --- fill -------------------------------------------------------------------------------------


def fill_history(n: int) -> None:
    """``n`` finished tasks, ids 1..n, finishing over the last day (the newest ids last)."""
    prefix, source = _series()
    failed = "st IN ('failed', 'dead_letter')"
    sql = f"""{prefix}
        INSERT INTO taskmill_task_history (id, task_type, domain, key, label, priority, status,
            payload, group_key, retry_count, max_retries, rescue_count, last_error, traceback,
            created_at, started_at, finished_at, duration_ms, read_bytes, write_bytes,
            net_rx_bytes, net_tx_bytes)
        SELECT i, task_type, domain, 'h-' || i, 'job ' || i, priority, st, {_json("'n', i")}, grp,
            CASE WHEN {failed} THEN 3 ELSE 0 END, 3, 0,
            CASE WHEN {failed} THEN 'TimeoutError: upstream did not answer' ELSE '' END,
            CASE WHEN {failed} THEN 'Traceback (most recent call last): ...' ELSE '' END,
            {_ago("age + dur / 1000.0 + wait")},
            CASE WHEN st = 'cancelled' THEN NULL ELSE {_ago("age + dur / 1000.0")} END,
            {_ago("age")},
            CASE WHEN st = 'cancelled' THEN NULL ELSE dur END,
            {_hash(6, 1_000_000)}, {_hash(7, 100_000)}, 0, 0
        FROM (
            SELECT i, {_mix_columns(0)},
                {_pick(_hash(10, 100), HISTORY_STATUS)} AS st,
                (%s - i) * {HISTORY_SECONDS}.0 / %s AS age,
                20 + {_hash(11, 2000)} + CASE WHEN {_hash(12, 100)} < 3 THEN 60000 ELSE 0 END
                    AS dur,
                {_hash(13, 300)} AS wait
            FROM {source}
        ) AS x"""
    _execute(sql, [n, n, n])
    _execute(
        "INSERT INTO taskmill_task_history_tag (history_id, key, value) "
        "SELECT id, 'customer', 'cust-' || (id %% 500) FROM taskmill_task_history "
        "WHERE id %% 10 = 0",
        [],
    )


def fill_active(n: int, first_id: int) -> None:
    """``n`` active tasks with ids after ``first_id``, submitted over the last two hours."""
    prefix, source = _series()
    sql = f"""{prefix}
        INSERT INTO taskmill_task (id, task_type, domain, key, label, priority, status, payload,
            group_key, fail_fast, on_dependency_failure, max_retries, ttl_from, created_at,
            run_after, started_at, first_started_at, pause_reason, paused_at, progress)
        SELECT {int(first_id)} + i, task_type, domain, 'a-' || i, 'job ' || i, priority, st,
            {_json("'n', i")}, grp, TRUE, 'cancel', 3, 'submission', {_ago("age")},
            CASE WHEN st = 'pending' AND {_hash(24, 100)} < 5 THEN {_ago("-3600")} END,
            CASE WHEN st = 'running' THEN {_ago("age / 2")} END,
            CASE WHEN st = 'running' THEN {_ago("age / 2")} END,
            CASE WHEN st = 'paused' THEN 'manual' ELSE '' END,
            CASE WHEN st = 'paused' THEN {_ago("age / 2")} END,
            CASE WHEN st = 'running' AND {_hash(26, 2)} = 0 THEN {_hash(25, 100)} / 100.0 END
        FROM (
            SELECT i, {_mix_columns(20)},
                {_pick(_hash(30, 100), ACTIVE_STATUS)} AS st,
                (%s - i) * {ACTIVE_SECONDS}.0 / %s AS age
            FROM {source}
        ) AS x"""
    _execute(sql, [n, n, n])
    _execute(
        "INSERT INTO taskmill_task_tag (task_id, key, value) "
        "SELECT id, 'customer', 'cust-' || (id %% 500) FROM taskmill_task WHERE id %% 3 = 0",
        [],
    )
    _execute(
        "INSERT INTO taskmill_task_tag (task_id, key, value) SELECT id, 'region', "
        "CASE id %% 3 WHEN 0 THEN 'eu' WHEN 1 THEN 'us' ELSE 'ap' END "
        "FROM taskmill_task WHERE id %% 4 = 0",
        [],
    )
    _execute(
        "INSERT INTO taskmill_task_dependency (task_id, depends_on_id) "
        "SELECT id, id - 1 FROM taskmill_task WHERE status = 'blocked'",
        [],
    )
    for statement in connection.ops.sequence_reset_sql(no_style(), [Task]):
        _execute(statement, None)
    # Running tasks belong to live workers, half each, under one lease per worker.
    running = Task.objects.filter(status="running")
    middle = first_id + n // 2
    for index in range(WORKERS):
        worker = Worker.objects.create(
            id=uuid.uuid4(),
            name=f"bench-{index}",
            hostname="bench",
            pid=1000 + index,
            concurrency=2000,
            status="running",
        )
        part = running.filter(id__lt=middle) if index == 0 else running.filter(id__gte=middle)
        part.update(worker_id=worker.id, lease_token=uuid.uuid4())


def _execute(sql: str, params: Sequence[object] | None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def analyze() -> None:
    """Planner statistics, and on PostgreSQL the visibility map too (VACUUM): autovacuum's
    insert trigger would do both within a minute of a fill like this, so without it the
    numbers would depend on whether it had run yet."""
    tables = ["taskmill_task", "taskmill_task_history", "taskmill_task_tag"]
    tables += ["taskmill_task_history_tag", "taskmill_task_dependency"]
    for table in tables:
        _execute(f"VACUUM (ANALYZE) {table}" if _pg() else f"ANALYZE {table}", None)


# --- timing -------------------------------------------------------------------------------------


@dataclass
class StatementLog:
    """An execute wrapper: per SQL text, how often it ran, its total and its slowest time."""

    runs: dict[str, list[Any]] = field(default_factory=dict)  # sql -> [count, total, max, params]

    def __call__(
        self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any
    ) -> Any:
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            elapsed = time.perf_counter() - started
            entry = self.runs.setdefault(sql, [0, 0.0, 0.0, None])
            entry[0] += 1
            entry[1] += elapsed
            if elapsed >= entry[2]:
                entry[2], entry[3] = elapsed, params

    def slowest(self, top: int, requests: int) -> list[dict[str, Any]]:
        """The ``top`` statements by time spent per request (a fast statement run once per
        task type can cost more than one slow one)."""
        ranked = sorted(self.runs.items(), key=lambda item: -item[1][1])[:top]
        return [
            {
                "ms_per_request": entry[1] / requests * 1000,
                "max_ms": entry[2] * 1000,
                "mean_ms": entry[1] / entry[0] * 1000,
                "count": entry[0],
                "sql": sql,
                "params": [str(p) for p in entry[3] or ()],
                "explain": _explain(sql, entry[3]) if index < EXPLAIN_TOP else None,
            }
            for index, (sql, entry) in enumerate(ranked)
        ]


def _explain(sql: str, params: Any) -> list[str] | None:
    """EXPLAIN ANALYZE of a read statement on PostgreSQL (rolled back, to be safe)."""
    if not _pg() or not sql.lstrip().upper().startswith(("SELECT", "WITH")):
        return None
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
        plan = [row[0] for row in cursor.fetchall()]
        transaction.set_rollback(True)
    return plan


def time_view(client: Client, url: str, requests: int) -> dict[str, Any]:
    """``WARMUP`` untimed GETs, then ``requests`` timed ones; every answer must be a 200."""
    for _ in range(WARMUP):
        client.get(url)
    log = StatementLog()
    elapsed: list[float] = []
    with connection.execute_wrapper(log):
        for _ in range(requests):
            started = time.perf_counter()
            response = client.get(url)
            elapsed.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                raise RuntimeError(f"GET {url}: {response.status_code} {response.content[:300]!r}")
    cuts = statistics.quantiles(elapsed, n=20, method="inclusive")
    return {
        "url": url,
        "requests": requests,
        "ms": {"p50": statistics.median(elapsed), "p95": cuts[18], "max": max(elapsed)},
        "statements_per_request": sum(e[0] for e in log.runs.values()) / requests,
        "sql_ms_per_request": sum(e[1] for e in log.runs.values()) * 1000 / requests,
        "bytes": len(response.content),
        "slowest": log.slowest(5, requests),
    }


def run(ctx: Context) -> dict[str, Any]:
    """Fill, analyze, then time each view of ``ENDPOINTS``."""
    scale = 1 if _pg() else 10
    history, active = ctx.sizes.operator_history // scale, ctx.sizes.operator_active // scale
    if scale > 1:
        print(f"  SQLite: a tenth of the rows ({history:,} history, {active:,} active)", flush=True)
    fresh_database()
    started = time.perf_counter()
    with transaction.atomic():
        fill_history(history)
        fill_active(active, first_id=history)
    fill_seconds = time.perf_counter() - started
    analyze()
    analyze_seconds = time.perf_counter() - started - fill_seconds
    print(f"  filled in {fill_seconds:.1f}s, analyzed in {analyze_seconds:.1f}s", flush=True)
    user = get_user_model().objects.create_superuser("operator", "operator@example.com", None)
    client = Client()
    client.force_login(user)
    result: dict[str, Any] = {
        "history_rows": history,
        "active_rows": active,
        "fill_seconds": fill_seconds,
        "analyze_seconds": analyze_seconds,
        "endpoints": {},
    }
    for key, name in ENDPOINTS.items():
        timed = time_view(client, reverse(name), ctx.sizes.operator_requests)
        result["endpoints"][key] = timed
        ms, top = timed["ms"], timed["slowest"][0]
        print(
            f"  {key}: p50 {ms['p50']:.0f} ms, p95 {ms['p95']:.0f} ms, max {ms['max']:.0f} ms;"
            f" {timed['statements_per_request']:.0f} statements/request,"
            f" costliest {top['ms_per_request']:.0f} ms/request: {top['sql'][:90]}",
            flush=True,
        )
    return result
