"""The "bench" domain: a no-op task for throughput and a time-stamping task for latency."""

from __future__ import annotations

import os
import tempfile
import time

from taskmill_django import Domain, TaskContext

bench = Domain("bench")


_log: int | None = None


def _append_line(n: object) -> None:
    """One small append to a per-process file: the least a real task body does, and like any
    I/O it releases the GIL once (a body that never does lets the worker's claim loop wait
    for the whole pool, which real workloads never see)."""
    global _log
    if _log is None:
        folder = os.environ.get("TASKMILL_BENCH_LOG_DIR") or tempfile.gettempdir()
        _log = os.open(
            os.path.join(folder, f"taskmill-bench-{os.getpid()}.log"),
            os.O_WRONLY | os.O_APPEND | os.O_CREAT,
            0o644,
        )
    os.write(_log, f"{n} {time.time():.6f}\n".encode())


@bench.task("noop")
def noop(ctx: TaskContext, **payload: object) -> None:
    """Appends one line to a file and returns: what is left is the scheduler's own cost."""
    _append_line(payload.get("n"))


@bench.task("stamp")
def stamp(ctx: TaskContext, **payload: object) -> float:
    """Returns the wall-clock time at which the task body started (stored as the result)."""
    return time.time()
