"""The measurements, run inside one Django process per database (bench/run.py starts it).

Every scenario starts from a freshly created and migrated database. Workers are real
``manage.py runtaskmill --settings=bench.settings`` subprocesses; the bench process only submits
and watches the tables.
"""

from __future__ import annotations

import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.db import connection, transaction
from django.db.models import QuerySet

from bench.benchapp.tasks import noop, stamp
from bench.cpu import CpuMeter
from taskmill_django.domain import TaskDefinition
from taskmill_django.models import Task, TaskHistory, Worker

ROOT = Path(__file__).resolve().parent.parent
BATCH_CHUNK = 1000
STALL_SECONDS = 30.0


@dataclass(frozen=True)
class Sizes:
    """How much work each scenario does; ``--quick`` shrinks everything."""

    single: int = 2000
    batch: int = 50_000
    process: int = 10_000
    latency: int = 200
    # 2 workers at the library default (--concurrency 4) and at the high-throughput setting.
    concurrencies: tuple[int, ...] = (4, 32)
    worker_counts: tuple[int, ...] = (2,)
    gate_concurrencies: tuple[int, ...] = (8, 32)  # bench/gates.py
    async_concurrency: int = 32  # async bodies (``anoop``) on the workers' event loops
    # bench/operator.py (PostgreSQL; SQLite uses a tenth) and its timed requests per view.
    operator_history: int = 1_000_000
    operator_active: int = 100_000
    operator_requests: int = 20

    @classmethod
    def tiny(cls) -> Sizes:
        """Only for the smoke test (TASKMILL_BENCH_TINY): proves the run works, measures
        nothing."""
        return cls(single=20, batch=2000, process=200, latency=5, operator_requests=2)

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            single=300,
            batch=5000,
            process=2000,
            latency=40,
            operator_history=100_000,
            operator_active=10_000,
            operator_requests=10,
        )


@dataclass
class Context:
    db: str
    workdir: Path
    sizes: Sizes
    analyze_after_fill: bool = False
    worker_logs: list[Path] = field(default_factory=list)


# --- database -----------------------------------------------------------------------------------


def _admin_connect() -> Any:
    """An autocommit connection to the ``postgres`` maintenance database."""
    import psycopg

    params = dict(connection.get_connection_params())
    params.pop("cursor_factory", None)
    params.pop("context", None)
    params["dbname"] = "postgres"
    return psycopg.connect(**params, autocommit=True)


def fresh_database() -> None:
    """Drop and recreate the bench database, then ``migrate`` it."""
    connection.close()
    name = settings.DATABASES["default"]["NAME"]
    if connection.vendor == "postgresql":
        with _admin_connect() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{name}"')
    else:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{name}{suffix}").unlink(missing_ok=True)
    call_command("migrate", verbosity=0, interactive=False)


def drop_database() -> None:
    connection.close()
    name = settings.DATABASES["default"]["NAME"]
    if connection.vendor == "postgresql":
        with _admin_connect() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    else:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{name}{suffix}").unlink(missing_ok=True)


def server_version() -> str:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SHOW server_version")
            return "PostgreSQL " + cursor.fetchone()[0]
        cursor.execute("SELECT sqlite_version()")
        return "SQLite " + cursor.fetchone()[0]


# --- worker subprocesses ------------------------------------------------------------------------


class Workers:
    """``runtaskmill`` subprocesses sharing the bench database; stopped with SIGTERM."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        count: int,
        concurrency: int,
        extra: Sequence[str] = (),
        env_extra: Mapping[str, str] | None = None,
    ) -> None:
        env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
        env.update(env_extra or {})
        for _ in range(count):
            log_path = self.ctx.workdir / f"worker-{len(self.ctx.worker_logs)}.log"
            self.ctx.worker_logs.append(log_path)
            with log_path.open("wb") as log:
                proc = subprocess.Popen(
                    [
                        sys.executable,
                        str(ROOT / "manage.py"),
                        "runtaskmill",
                        "--settings=bench.settings",
                        "--concurrency",
                        str(concurrency),
                        *extra,
                    ],
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            self.procs.append(proc)

    def wait_registered(self, count: int, timeout: float = 60.0) -> None:
        """Block until ``count`` worker rows exist: start-up time stays out of the measurement."""
        deadline = time.monotonic() + timeout
        while Worker.objects.count() < count:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"worker exited early (code {proc.returncode}); see logs")
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers did not register within {timeout}s")
            time.sleep(0.05)
        # The first claim pass runs right after registration; give it a moment to go idle.
        time.sleep(0.3)

    def sample(self, label: str) -> list[subprocess.Popen[bytes]]:
        """With TASKMILL_BENCH_PYSPY=<dir>, attach ``py-spy record`` to every worker."""
        out_dir = os.environ.get("TASKMILL_BENCH_PYSPY")
        py_spy = Path(sys.executable).parent / "py-spy"
        if not out_dir or not py_spy.exists():
            return []
        samplers = []
        for index, proc in enumerate(self.procs):
            target = Path(out_dir) / f"{self.ctx.db}-{label}-{index}.txt"
            command = [str(py_spy), "record", "--pid", str(proc.pid), "--format", "raw"]
            command += ["--rate", "200", "--nonblocking", "--threads", "-o", str(target)]
            samplers.append(
                subprocess.Popen(
                    command,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        time.sleep(1.0)  # let py-spy attach before the clock starts
        return samplers

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()


# --- scenarios ----------------------------------------------------------------------------------


def enqueue_single(ctx: Context) -> dict[str, Any]:
    """``noop.submit(n=i)`` in a loop: one transaction per task, no worker running."""
    fresh_database()
    n = ctx.sizes.single
    noop.submit(n=-1)  # warm up: connection, first transaction, prepared caches
    started = time.perf_counter()
    for i in range(n):
        noop.submit(n=i)
    elapsed = time.perf_counter() - started
    assert Task.objects.count() == n + 1
    return {"n": n, "seconds": elapsed, "rate": n / elapsed}


def enqueue_batch(ctx: Context) -> dict[str, Any]:
    """``noop.submit_batch`` with chunks of 1000 payloads (one transaction per call)."""
    fresh_database()
    n = ctx.sizes.batch
    payloads = [{"n": i} for i in range(n)]
    noop.submit_batch([{"n": -1}])
    started = time.perf_counter()
    for start in range(0, n, BATCH_CHUNK):
        noop.submit_batch(payloads[start : start + BATCH_CHUNK])
    elapsed = time.perf_counter() - started
    assert Task.objects.count() == n + 1
    return {"n": n, "chunk": BATCH_CHUNK, "seconds": elapsed, "rate": n / elapsed}


def processing(
    ctx: Context,
    worker_count: int,
    concurrency: int,
    *,
    groups: Sequence[str] = (),
    worker_env: Mapping[str, str] | None = None,
    setup: Callable[[], None] | None = None,
    time_limit: float | None = None,
    task: TaskDefinition = noop,
) -> dict[str, Any]:
    """Drain N no-op tasks with ``worker_count`` processes of ``--concurrency concurrency``.

    Workers start on an empty queue and register first; then all N tasks are inserted in one
    transaction (so they become visible at once) and the clock runs from that commit until the
    active table is empty. bench/gates.py adds ``groups`` (tasks spread over them, interleaved
    in runs of chunk/len(groups) ids), ``worker_env`` (settings for the workers) and ``setup``
    (runs on the fresh database before the workers start, e.g. runtime overrides) and
    ``time_limit`` (stop the clock there; the rate is then over the part that finished).
    ``task`` is ``noop`` (a thread per slot) or ``anoop`` (async: the workers' event loop).
    CPU time per task of the workers and of the server backends is measured over the same
    window (bench/cpu.py).
    """
    fresh_database()
    if setup is not None:
        setup()
    n = ctx.sizes.process
    workers = Workers(ctx)
    try:
        workers.start(worker_count, concurrency, env_extra=worker_env)
        workers.wait_registered(worker_count)
        samplers = workers.sample(f"{worker_count}w-c{concurrency}")
        payloads = [{"n": i} for i in range(n)]
        insert_started = time.perf_counter()
        meter = CpuMeter([proc.pid for proc in workers.procs], connection)
        with transaction.atomic():
            for start in range(0, n, BATCH_CHUNK):
                chunk = payloads[start : start + BATCH_CHUNK]
                if not groups:
                    task.submit_batch(chunk)
                for index, group in enumerate(groups):
                    task.using(group=group).submit_batch(chunk[index :: len(groups)])
            meter.start()  # from here the workers' CPU goes to these tasks
        if ctx.analyze_after_fill and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE taskmill_task")
        started = time.perf_counter()
        started_wall = time.time()
        insert_seconds = started - insert_started
        timeout = time_limit or max(120.0, n / 50)
        timed_out = False
        last_left, last_change = n, started
        while Task.objects.exists():
            now = time.perf_counter()
            if now - started > timeout:
                timed_out = True
                break
            if now - last_change > 5.0:  # no visible progress for a while: look closer
                left = Task.objects.count()
                if left < last_left:
                    last_left, last_change = left, now
                elif now - last_change > STALL_SECONDS:
                    raise RuntimeError(
                        f"no task finished for {STALL_SECONDS:.0f}s ({left} left); workers stuck"
                    )
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
        meter.stop()
        # Counted before the workers stop: a run cut by its time limit must not be credited
        # with what they finish while shutting down.
        # Only this run's tasks: bench/growth.py fills history beforehand.
        ours = TaskHistory.objects.filter(task_type=task.task_type)
        completed = ours.filter(status="completed").count()
        for sampler in samplers:
            sampler.send_signal(signal.SIGINT)
            sampler.wait(30)
    finally:
        workers.stop()
    if not timed_out and completed != n:
        raise RuntimeError(f"{completed} of {n} tasks completed; the rest failed or vanished")
    per_worker = sorted(
        (c for c in _count_by_worker(ours).values()),
        reverse=True,
    )
    last_finish = ours.order_by("-finished_at").values_list("finished_at", flat=True)[:1]
    db_elapsed = last_finish[0].timestamp() - started_wall if last_finish else None
    return {
        "n": n,
        "workers": worker_count,
        "concurrency": concurrency,
        "insert_seconds": insert_seconds,
        "seconds": elapsed,
        "rate": completed / elapsed,
        # From the commit to the last history row's finished_at: no polling granularity.
        "rate_by_finished_at": completed / db_elapsed if db_elapsed else None,
        "completed": completed,
        "per_worker": per_worker,
        "timed_out": timed_out,
        "task": task.task_type,
        "cpu": meter.per_task(completed),
    }


def _count_by_worker(history: QuerySet[TaskHistory]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for worker_id in history.values_list("worker_id", flat=True).iterator():
        counts[str(worker_id)] = counts.get(str(worker_id), 0) + 1
    return counts


def pickup_latency(
    ctx: Context, poll_interval: float | None = None, *, fresh: bool = True, n: int | None = None
) -> dict[str, Any]:
    """One idle worker; submit ``stamp`` tasks one at a time with small random gaps.

    ``db_ms`` is ``started_at - created_at`` (both written by the database clock: insert and
    claim); ``e2e_ms`` is from just before ``submit()`` to the first line of the task body
    (wall clock, same machine), so it adds the submit commit and the thread hand-off;
    ``submit_ms`` and ``start_ms`` are those two additions (the database runs on the same
    machine, so its clock is the bench's).
    bench/growth.py runs it on a database it filled (``fresh=False``).
    """
    if fresh:
        fresh_database()
    n = n or ctx.sizes.latency
    rng = random.Random(20240601)
    extra = ["--poll-interval", str(poll_interval)] if poll_interval else []
    workers = Workers(ctx)
    submitted: dict[int, float] = {}
    try:
        workers.start(1, 4, extra)
        workers.wait_registered(1)
        for i in range(n + 5):  # the first five warm the worker up and are not counted
            before = time.time()
            outcome = stamp.submit(i=i)
            if i >= 5:
                submitted[outcome.id] = before
            _wait_finished(outcome.id)
            time.sleep(rng.uniform(0.005, 0.030))
    finally:
        workers.stop()
    rows = TaskHistory.objects.filter(id__in=list(submitted)).values_list(
        "id", "created_at", "started_at", "result"
    )
    db_ms, e2e_ms, submit_ms, start_ms = [], [], [], []
    for task_id, created_at, started_at, result in rows:
        db_ms.append((started_at - created_at).total_seconds() * 1000)
        e2e_ms.append((float(result) - submitted[task_id]) * 1000)
        # The database and the bench share the machine's clock: split the way in three.
        submit_ms.append((created_at.timestamp() - submitted[task_id]) * 1000)
        start_ms.append((float(result) - started_at.timestamp()) * 1000)
    return {
        "n": len(db_ms),
        "poll_interval": poll_interval,
        "db_ms": _percentiles(db_ms),
        "e2e_ms": _percentiles(e2e_ms),
        # Before submit() to the insert's timestamp; the claim's timestamp to the body.
        "submit_ms": _percentiles(submit_ms),
        "start_ms": _percentiles(start_ms),
    }


def _wait_finished(task_id: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not TaskHistory.objects.filter(id=task_id).exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"task {task_id} was not picked up within {timeout}s")
        time.sleep(0.003)


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    # (quantiles() needs two points; a tiny growth run may probe once)
    cuts = statistics.quantiles(
        ordered * (2 if len(ordered) == 1 else 1), n=100, method="inclusive"
    )
    return {
        "p50": cuts[49],
        "p90": cuts[89],
        "p99": cuts[98],
        "max": ordered[-1],
        "mean": statistics.fmean(ordered),
    }
