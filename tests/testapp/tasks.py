"""Task types used by the test suite. Side effects go to files under TASKMILL_TEST_LOG so that
worker subprocesses and the test process can compare notes."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

from taskmill_django import Domain, PermanentError, Priority, RetryableError, RetryPolicy
from taskmill_django.context import TaskContext

tests = Domain("tests")
other = Domain("other", default_priority=Priority.HIGH)


def _log(event: str, **data: object) -> None:
    path = os.environ.get("TASKMILL_TEST_LOG")
    if not path:
        return
    line = json.dumps({"event": event, "pid": os.getpid(), **data})
    with Path(path).open("a") as handle:  # O_APPEND: lines from many processes do not mix
        handle.write(line + "\n")


@tests.task("noop")
def noop(ctx: TaskContext, **payload: object) -> None:
    return None


@tests.task("record")
def record(ctx: TaskContext, n: int = 0, **payload: object) -> dict[str, int]:
    _log("run", task_id=ctx.task_id, n=n, priority=ctx.record.priority)
    return {"n": n}


@tests.task("echo")
def echo(ctx: TaskContext, value: object = None) -> object:
    return value


@tests.task("sleep")
def sleep(ctx: TaskContext, seconds: float, n: int = 0) -> None:
    _log("start", task_id=ctx.task_id, n=n)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if ctx.wait_cancelled(0.02):
            _log("noticed_cancel", task_id=ctx.task_id, n=n, reason=ctx.cancel_reason)
            raise RetryableError("cancelled")
    _log("done", task_id=ctx.task_id, n=n)


@sleep.on_cancel
def sleep_cancelled(ctx: TaskContext, **payload: object) -> None:
    _log("on_cancel", task_id=ctx.task_id)


@tests.task("progress")
def progress(ctx: TaskContext, seconds: float = 2.0) -> None:
    ctx.progress.report(0.5, "halfway")
    ctx.wait_cancelled(seconds)


@tests.task("flaky", retry=RetryPolicy.constant(2, 0))
def flaky(ctx: TaskContext, fail_times: int) -> str:
    if ctx.record.retry_count < fail_times:
        raise RetryableError(f"attempt {ctx.record.retry_count} fails")
    return "ok"


@tests.task("boom", retry=RetryPolicy.constant(1, 0))
def boom(ctx: TaskContext) -> None:
    raise ValueError("boom")


@tests.task("permanent")
def permanent(ctx: TaskContext) -> None:
    raise PermanentError("no way")


@tests.task("keyed", key=lambda path, size: path)
def keyed(ctx: TaskContext, path: str, size: int) -> None:
    return None


@tests.task("async_echo")
async def async_echo(ctx: TaskContext, value: object = None) -> object:
    await asyncio.sleep(0.01)
    return value


@other.task("noop")
def other_noop(ctx: TaskContext) -> None:
    return None


@tests.task("stubborn")
def stubborn(ctx: TaskContext, seconds: float) -> dict[str, int]:
    """Ignores cancellation: always works ``seconds``, then returns the pid that ran it, so a
    zombie worker really tries to write its outcome after it is resumed."""
    _log("start", task_id=ctx.task_id, rescue_count=ctx.record.rescue_count)
    time.sleep(seconds)
    _log("done", task_id=ctx.task_id)
    return {"pid": os.getpid()}


workflows = Domain("flows")


@workflows.task("fan_out")
def fan_out(ctx: TaskContext, parts: int, fail_part: int = -1) -> dict[str, int]:
    for part in range(parts):
        ctx.spawn_child(fan_part, part=part, fail=part == fail_part)
    return {"parts": parts}


@fan_out.finalize
def fan_out_finalize(ctx: TaskContext, memo: dict[str, int], **payload: object) -> dict[str, int]:
    _log("finalize", task_id=ctx.task_id, memo=memo)
    return {"finalized": memo["parts"]}


@workflows.task("fan_part", retry=RetryPolicy.constant(0, 0))
def fan_part(ctx: TaskContext, part: int, fail: bool = False) -> int:
    _log("part", task_id=ctx.task_id, part=part)
    if fail:
        raise PermanentError(f"part {part} fails")
    return part
