"""Growth: does the hot path stay flat as the queue and the history grow? PostgreSQL only.

``pending``: for each size P, P pending ``noop`` tasks are filled with one set-based
``INSERT ... SELECT`` over ``generate_series`` (no statistics afterwards, as after a bulk
load, unless ``--analyze-after-fill``), then 2 workers x 32 start on them and run until half
the queue (at most the processing size) is done and 50 probes (below) were sent, but never
past three quarters of the queue. The processing rate at that depth comes from
those tasks' ``finished_at`` (the first tenth left out: start-up), so the workers' start-up and
the bench's polling stay out of it. Meanwhile the bench submits a ``stamp``
task more urgent than the backlog every 20 ms; the time from its insert to its claim (both
database clock; the claim's is its transaction's start, so a claim that began just before the
insert and still found it reads slightly negative) is the claim latency at that depth: how
long an urgent task waits behind a deep queue for the next claim. ``run_ms`` is from just
before ``submit()`` to the body's first line (wall clock), which adds the submit's commit and
the wait in the worker's queue of tasks claimed ahead. Probing starts when both workers have
registered and a task has finished.

``history``: for each size H, H finished tasks are filled as bench/operator.py fills them (a
day of mixed outcomes, with tags), analyzed (autovacuum would have), then: the processing rate
of the processing scenario's N tasks into that history (every finish inserts into it),
``submit()`` one at a time, and the pickup latency of an idle worker.

Sizes come from ``--pending`` and ``--history`` (comma-separated); the defaults run in a few
minutes. 1,000,000 pending or 10,000,000 history rows take minutes each to fill: on request.
"""

from __future__ import annotations

import time
from typing import Any

from django.db import connection, transaction

from bench import operator
from bench.benchapp.tasks import noop, stamp
from bench.scenarios import Context, Workers, _percentiles, fresh_database, pickup_latency
from bench.scenarios import processing as process_scenario
from taskmill_django.models import Task, TaskHistory

WORKERS = 2
CONCURRENCY = 32
PROBE_EVERY = 0.02
MIN_PROBES = 50
PROBE_PRIORITY = 64  # more urgent than the backlog's 128, not enough to preempt


def fill_pending(n: int) -> None:
    """``n`` pending ``noop`` tasks at the default priority, oldest first."""
    with connection.cursor() as cursor:
        cursor.execute(
            """INSERT INTO taskmill_task (task_type, domain, key, label, priority, status,
                payload, fail_fast, on_dependency_failure, max_retries, ttl_from, created_at)
            SELECT %s, %s, md5('p' || i), '', 128, 'pending', jsonb_build_object('n', i),
                TRUE, 'cancel', 3, 'submission', STATEMENT_TIMESTAMP()
            FROM generate_series(1, %s) AS s(i)""",
            [noop.task_type, noop.domain.name, n],
        )


def _history_fill(n: int) -> None:
    """Finished tasks with ids 1..n, and the task id sequence moved past them."""
    with transaction.atomic():
        operator.fill_history(n)
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT setval(pg_get_serial_sequence('taskmill_task', 'id'), %s)", [n + 1]
            )
    operator.analyze()


def at_pending(ctx: Context, pending: int) -> dict[str, Any]:
    fresh_database()
    started = time.perf_counter()
    with transaction.atomic():
        fill_pending(pending)
    fill_seconds = time.perf_counter() - started
    if ctx.analyze_after_fill:
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE taskmill_task")
    target = min(pending // 2, ctx.sizes.process)
    workers = Workers(ctx)
    probes: list[int] = []
    submitted: dict[int, float] = {}
    try:
        workers.start(WORKERS, CONCURRENCY)
        workers.wait_registered(WORKERS)
        registered = time.time()
        deadline = time.perf_counter() + max(120.0, target / 50)
        finished = TaskHistory.objects.filter(task_type=noop.task_type)
        # Probes start once the workers claim (with a full queue the first one to register
        # starts before the second has): neither start-up is claim latency.
        while not finished.exists():
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{pending:,} pending: no task finished in time")
            time.sleep(0.005)
        first_finish = time.time() - registered
        done = 0
        # Until the rate has its tasks and the latency its probes, while the queue is deep.
        while (done < target or len(probes) < MIN_PROBES) and done < pending * 3 // 4:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{pending:,} pending: {done} of {target} done in time")
            before = time.time()
            probe = stamp.using(priority=PROBE_PRIORITY).submit(i=len(probes)).id
            assert probe is not None  # no dedup key: always a new task
            probes.append(probe)
            submitted[probe] = before
            time.sleep(PROBE_EVERY)
            done = finished.count()
        left = Task.objects.filter(task_type=noop.task_type).count()
        time.sleep(0.5)  # the last probes' claims
    finally:
        workers.stop()
    times = list(
        TaskHistory.objects.filter(task_type=noop.task_type)
        .order_by("finished_at")
        .values_list("finished_at", flat=True)[:target]
    )
    first = target // 10
    elapsed = (times[-1] - times[first]).total_seconds()
    rows = TaskHistory.objects.filter(id__in=probes).values_list(
        "id", "created_at", "started_at", "result"
    )
    claim_ms = [(s - c).total_seconds() * 1000 for _, c, s, _ in rows if s is not None]
    run_ms = [(float(r) - submitted[i]) * 1000 for i, _, _, r in rows if r is not None]
    return {
        "pending": pending,
        "fill_seconds": fill_seconds,
        "workers": WORKERS,
        "concurrency": CONCURRENCY,
        "completed": done,
        "timed": len(times) - 1 - first,
        "first_finish_after_registered_s": first_finish,
        "pending_at_end": left,
        "seconds": elapsed,
        "rate": (len(times) - 1 - first) / elapsed if elapsed > 0 else None,
        "claim_ms": _percentiles(claim_ms),
        "run_ms": _percentiles(run_ms),
        "probes": len(probes),
    }


def at_history(ctx: Context, history: int) -> dict[str, Any]:
    started = time.perf_counter()
    fill_seconds: list[float] = []

    def fill() -> None:
        _history_fill(history)
        fill_seconds.append(time.perf_counter() - started)

    processed = process_scenario(ctx, WORKERS, CONCURRENCY, setup=fill)
    n = ctx.sizes.single
    clock = time.perf_counter()
    for i in range(n):
        noop.submit(n=i)
    submit_seconds = time.perf_counter() - clock
    Task.objects.all().delete()
    latency = pickup_latency(ctx, fresh=False, n=max(20, ctx.sizes.latency // 2))
    return {
        "history": history,
        "fill_seconds": fill_seconds[0],
        "process_rate": processed["rate"],
        "process_cpu": processed["cpu"],
        "submit_rate": n / submit_seconds,
        "claim_ms": latency["db_ms"],
    }


def run(ctx: Context, pending: list[int], history: list[int]) -> dict[str, Any]:
    results: dict[str, Any] = {"pending": [], "history": []}
    for size in pending:
        print(f"  {size:,} pending ...", flush=True)
        r = at_pending(ctx, size)
        results["pending"].append(r)
        print(
            f"    filled in {r['fill_seconds']:.1f}s; {r['rate'] or 0:,.0f} tasks/s over"
            f" {r['timed']:,}; claim p50 {r['claim_ms'].get('p50', 0):.1f} ms,"
            f" p99 {r['claim_ms'].get('p99', 0):.1f} ms; submit to body p50"
            f" {r['run_ms'].get('p50', 0):.1f} ms, p99 {r['run_ms'].get('p99', 0):.1f} ms",
            flush=True,
        )
    for size in history:
        print(f"  {size:,} history rows ...", flush=True)
        r = at_history(ctx, size)
        results["history"].append(r)
        print(
            f"    filled in {r['fill_seconds']:.1f}s; processing {r['process_rate']:,.0f}/s,"
            f" submit() {r['submit_rate']:,.0f}/s, claim p50 {r['claim_ms']['p50']:.1f} ms,"
            f" p99 {r['claim_ms']['p99']:.1f} ms",
            flush=True,
        )
    return results
