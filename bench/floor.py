"""The same-sitting floor: what PostgreSQL itself does per task, measured in the same run.

On a shared machine absolute rates move by tens of percent with whatever else runs; a rate
divided by a floor measured on the same server at the same moment moves far less. So every run
on PostgreSQL measures, with raw SQL through psycopg on a plain two-table schema (the one of
peers-bench's raw-SQL contender, created next to taskmill's tables):

- ``floor_insert``: single-row ``INSERT`` in a loop, each its own transaction: the floor of
  ``submit()`` one at a time. Measured in rounds alternating with ``submit()`` (``enqueue``),
  so that a burst of load elsewhere hits both alike.
- ``floor_copy``: ``COPY`` of 1,000 rows per transaction, the floor of ``submit_batch()``,
  alternating with it the same way.
- ``floor_claim``: two bench/rawloop.py processes claiming 100 tasks per statement with
  ``FOR UPDATE SKIP LOCKED``, running bench/body.py's body per task and moving each batch to a
  done table (peers-bench's ``raw-b100-p2``): the ceiling of processing. Timed exactly like the
  processing scenario, with its CPU time per task (bench/cpu.py); run before the first and
  after the last processing run, and the mean of the two is the floor.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import psycopg
from django.db import connection

from bench.benchapp.tasks import noop
from bench.cpu import CpuMeter
from bench.scenarios import BATCH_CHUNK, ROOT, Context, fresh_database
from taskmill_django.models import Task

SCHEMA = """
CREATE TABLE floor_job (
    id          bigserial PRIMARY KEY,
    priority    int         NOT NULL DEFAULT 0,
    status      smallint    NOT NULL DEFAULT 0,
    n           bigint      NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    started_at  timestamptz
);
CREATE INDEX floor_job_ready ON floor_job (priority, id) WHERE status = 0;
CREATE TABLE floor_done (
    id bigint PRIMARY KEY, priority int, n bigint,
    created_at timestamptz, started_at timestamptz, finished_at timestamptz
);
"""
CLAIM_BATCH = 100
PROCESSES = 2
COPY_CHUNK = 1000
ROUNDS = 10


def dsn() -> str:
    params = dict(connection.get_connection_params())
    for key in ("cursor_factory", "context", "prepare_threshold"):
        params.pop(key, None)
    return psycopg.conninfo.make_conninfo(**{k: v for k, v in params.items() if v is not None})


def _connect() -> psycopg.Connection[Any]:
    """An autocommit connection to the bench database with the floor's tables in it."""
    conn = psycopg.connect(dsn(), autocommit=True)
    if conn.execute("SELECT to_regclass('floor_job')").fetchone() == (None,):
        conn.execute(SCHEMA)
    return conn


def enqueue(ctx: Context) -> dict[str, Any]:
    """``submit()`` and ``submit_batch()`` in rounds alternating with their floors."""
    fresh_database()
    results: dict[str, Any] = {}
    with _connect() as conn:
        single, insert = _rounds(
            ctx.sizes.single,
            lambda start, stop: [noop.submit(n=i) for i in range(start, stop)],
            lambda start, stop: [
                conn.execute("INSERT INTO floor_job (n) VALUES (%s)", (i,))
                for i in range(start, stop)
            ],
        )
        results["enqueue_single"], results["floor_insert"] = single, insert
    fresh_database()
    with _connect() as conn:
        payloads = [{"n": i} for i in range(ctx.sizes.batch)]

        def submit_batch(start: int, stop: int) -> None:
            if start < 0:  # the warm-up
                noop.submit_batch([{"n": start}])
                return
            for first in range(start, stop, BATCH_CHUNK):
                noop.submit_batch(payloads[first : min(stop, first + BATCH_CHUNK)])

        def copy(start: int, stop: int) -> None:
            for first in range(start, stop, COPY_CHUNK):
                with conn.cursor().copy("COPY floor_job (n) FROM STDIN") as writer:
                    for i in range(first, min(stop, first + COPY_CHUNK)):
                        writer.write_row((i,))

        batch, copied = _rounds(ctx.sizes.batch, submit_batch, copy)
        results["enqueue_batch"], results["floor_copy"] = batch, copied
        results["enqueue_batch"]["chunk"] = BATCH_CHUNK
        results["floor_copy"]["chunk"] = COPY_CHUNK
        if Task.objects.count() != ctx.sizes.batch + 1:
            raise RuntimeError("submit_batch() did not insert every task")
    return results


def _rounds(
    n: int, measured: Callable[[int, int], object], floor: Callable[[int, int], object]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``n`` items each way in ``ROUNDS`` alternating rounds (which goes first alternates
    too), after one warm-up item each; returns (measured, floor) results."""
    measured(-1, 0)
    floor(-1, 0)
    spent = [0.0, 0.0]
    step = max(1, n // ROUNDS)
    for index, start in enumerate(range(0, n, step)):
        stop = min(n, start + step)
        order = [(0, measured), (1, floor)]
        for which, action in order if index % 2 == 0 else order[::-1]:
            began = time.perf_counter()
            action(start, stop)
            spent[which] += time.perf_counter() - began
    return tuple(  # type: ignore[return-value]
        {"n": n, "seconds": seconds, "rate": n / seconds, "rounds": ROUNDS} for seconds in spent
    )


def claim(ctx: Context) -> dict[str, Any]:
    """The raw claim loop over the processing scenario's N tasks, on a fresh database."""
    fresh_database()
    _connect().close()
    return _claim_loop(ctx, ctx.sizes.process)


def mean_claim(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One floor from the runs before and after the processing runs: mean rates and CPU."""
    merged = dict(runs[0])
    for key in ("rate", "rate_by_finished_at"):
        values = [r[key] for r in runs if r.get(key)]
        merged[key] = sum(values) / len(values) if values else None
    cpu = dict(runs[0]["cpu"])
    for key in ("worker_us", "server_us", "total_us"):
        values = [r["cpu"][key] for r in runs if r["cpu"].get(key) is not None]
        cpu[key] = sum(values) / len(values) if values else None
    merged["cpu"] = cpu
    merged["runs"] = runs
    return merged


def _claim_loop(ctx: Context, n: int) -> dict[str, Any]:
    env = dict(os.environ)
    command = [sys.executable, "-m", "bench.rawloop", dsn(), str(CLAIM_BATCH)]
    procs = [
        subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(PROCESSES)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError(f"raw claim loop exited early (code {proc.wait()})")
        with psycopg.connect(dsn()) as conn:  # one transaction: all rows visible at once
            meter = CpuMeter([p.pid for p in procs], connection, frozenset([conn.info.backend_pid]))
            with conn.cursor().copy("COPY floor_job (n) FROM STDIN") as copy:
                for i in range(n):
                    copy.write_row((i,))
            meter.start()
            conn.commit()
            started = time.perf_counter()
            started_wall = time.time()
        deadline = started + max(60.0, n / 100)
        with connection.cursor() as cursor:
            while True:
                cursor.execute("SELECT EXISTS (SELECT 1 FROM floor_job)")
                if not cursor.fetchone()[0]:
                    break
                if time.perf_counter() > deadline:
                    raise RuntimeError("the raw claim loop did not drain its queue")
                time.sleep(0.02)
            elapsed = time.perf_counter() - started
            meter.stop()
            cursor.execute("SELECT count(*), extract(epoch FROM max(finished_at)) FROM floor_done")
            completed, last_finish = cursor.fetchone()
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
    db_elapsed = float(last_finish) - started_wall
    return {
        "n": n,
        "processes": PROCESSES,
        "claim_batch": CLAIM_BATCH,
        "seconds": elapsed,
        "completed": completed,
        "rate": completed / elapsed,
        "rate_by_finished_at": completed / db_elapsed if db_elapsed > 0 else None,
        "cpu": meter.per_task(completed),
    }
