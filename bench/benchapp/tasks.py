"""The "bench" domain: no-op tasks for throughput and a time-stamping task for latency."""

from __future__ import annotations

import asyncio
import time

from bench.body import append_line
from taskmill_django import Domain, TaskContext

bench = Domain("bench")


@bench.task("noop")
def noop(ctx: TaskContext, **payload: object) -> None:
    """Appends one line to a file and returns: what is left is the scheduler's own cost."""
    append_line(payload.get("n"))


@bench.task("anoop")
async def anoop(ctx: TaskContext, **payload: object) -> None:
    """The async counterpart, run on the worker's event loop: yields to the loop once, as any
    awaited I/O does, and returns."""
    await asyncio.sleep(0)


@bench.task("stamp")
def stamp(ctx: TaskContext, **payload: object) -> float:
    """Returns the wall-clock time at which the task body started (stored as the result)."""
    return time.time()
