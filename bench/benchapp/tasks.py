"""The "bench" domain: a no-op task for throughput and a time-stamping task for latency."""

from __future__ import annotations

import time

from taskmill_django import Domain, TaskContext

bench = Domain("bench")


@bench.task("noop")
def noop(ctx: TaskContext, **payload: object) -> None:
    """Does nothing: what is left is the scheduler's own cost per task."""
    return None


@bench.task("stamp")
def stamp(ctx: TaskContext, **payload: object) -> float:
    """Returns the wall-clock time at which the task body started (stored as the result)."""
    return time.time()
