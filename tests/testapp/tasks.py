"""Task types used by the test suite. Side effects go to files under TASKMILL_TEST_LOG so that
worker subprocesses and the test process can compare notes."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

from django.dispatch import receiver

from taskmill_django import Domain, PermanentError, Priority, RetryableError, RetryPolicy, signals
from taskmill_django.context import TaskContext

tests = Domain("tests")


@receiver(signals.task_progress)
def _progress_seen(
    sender: object, task_id: int, fraction: float, message: str, **kw: object
) -> None:
    """Lets tests see ``task_progress`` as sent inside a worker process."""
    _log("progress_signal", task_id=task_id, fraction=fraction, message=message)


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


@tests.task("unstorable_result")
def unstorable_result(ctx: TaskContext, kind: str) -> object:
    """Returns a value ``json`` can write but the database's JSON type rejects."""
    return {"nan": float("nan"), "nul": "a\x00b", "set": {1}}[kind]


# Text no database stores as it is: PostgreSQL refuses NUL, UTF-8 encoders lone surrogates.
BAD_TEXT = {"nul": "bad\x00byte", "surrogate": "bad\udcffname", "huge": "x" * 3_000_000}


@tests.task("bad_text", retry=RetryPolicy.constant(1, 0))
def bad_text(ctx: TaskContext, kind: str, where: str) -> str:
    """Puts unstorable text where a worker must write it: the error of a failure (retried
    once, then dead-lettered), a progress message, or the result."""
    text = BAD_TEXT[kind]
    if where == "progress":
        ctx.progress.report(0.5, text)
        time.sleep(1.5)  # long enough for a heartbeat to persist the progress
        return "done"
    if where == "result":
        return text
    raise ValueError(f"cannot open {text}")


@tests.task("steps")
def steps(ctx: TaskContext, count: int, seconds: float = 0.05) -> dict[str, int]:
    """``count`` short waits: unlike a deadline, the work left does not shrink while the
    process is frozen. Stops at once when cancelled."""
    _log("start", task_id=ctx.task_id)
    for _ in range(count):
        if ctx.wait_cancelled(seconds):
            _log("noticed_cancel", task_id=ctx.task_id, reason=ctx.cancel_reason)
            raise RetryableError("cancelled")
    _log("done", task_id=ctx.task_id)
    return {"pid": os.getpid()}


@tests.task("huge_io")
def huge_io(ctx: TaskContext) -> None:
    """Reports more bytes read than any database integer column holds."""
    ctx.record_read_bytes(2**70)


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


@tests.task("limited", timeout=0.5, retry=RetryPolicy.constant(1, 0))
def limited(ctx: TaskContext, seconds: float) -> None:
    """Cooperative, with a time limit of half a second: stops when asked."""
    _log("start", task_id=ctx.task_id)
    if ctx.wait_cancelled(seconds):
        _log("noticed_cancel", task_id=ctx.task_id, reason=ctx.cancel_reason)
        raise RetryableError("stopped")
    _log("done", task_id=ctx.task_id)


@limited.on_cancel
def limited_cancelled(ctx: TaskContext, **payload: object) -> None:
    _log("on_cancel", task_id=ctx.task_id, reason=ctx.cancel_reason)


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


@workflows.task("async_fan_out")
async def async_fan_out(ctx: TaskContext) -> str:
    """Spawning from ``async def`` tasks: one async child, which adds three siblings."""
    await ctx.aspawn_child(async_first_part)
    return "spawned"


@workflows.task("async_first_part")
async def async_first_part(ctx: TaskContext) -> int:
    _log("part", task_id=ctx.task_id, part=0)
    await ctx.aspawn_sibling(fan_part, part=1)
    await ctx.aspawn_siblings(fan_part, [{"part": 2}, {"part": 3}])
    return 0


@workflows.task("fan_part", retry=RetryPolicy.constant(0, 0))
def fan_part(ctx: TaskContext, part: int, fail: bool = False) -> int:
    _log("part", task_id=ctx.task_id, part=part)
    if fail:
        raise PermanentError(f"part {part} fails")
    return part


# --- workflows across domains, siblings, schedules (tests/db/test_workflows.py & co.) -------


@other.task("wf_step")
def other_wf_step(ctx: TaskContext, n: int = 0) -> dict[str, int]:
    _log("step", task_id=ctx.task_id, n=n, domain="other")
    return {"n": n}


@workflows.task("wf_step")
def wf_step(ctx: TaskContext, n: int = 0) -> dict[str, int]:
    _log("step", task_id=ctx.task_id, n=n, domain="flows")
    return {"n": n}


@workflows.task("wf_family")
def wf_family(ctx: TaskContext, children: list[dict]) -> dict[str, int]:
    """Spawns one child per spec ``{"task": "part" | "siblings", "payload": {...},
    "options": {...}}``; without a finalize hook it completes with this memo as result."""
    kinds = {"part": fan_part, "siblings": wf_siblings}
    for spec in children:
        task = kinds[spec["task"]]
        ctx.spawn_child(task.using(**spec.get("options", {})), **spec.get("payload", {}))
    return {"children": len(children)}


@workflows.task("wf_siblings", retry=RetryPolicy.constant(0, 0))
def wf_siblings(
    ctx: TaskContext, parts: list[int], one_by_one: bool = False, duplicate: str = "skip"
) -> dict[str, object]:
    """Spawns ``fan_part`` siblings (one call each, or one ``spawn_siblings`` batch); a
    refused spawn is returned as the result instead of failing the task."""
    from taskmill_django import DuplicateTaskError, ValidationError

    call = fan_part.using(duplicate=duplicate)
    try:
        if one_by_one:
            ids = [ctx.spawn_sibling(call, part=part).id for part in parts]
        else:
            ids = [o.id for o in ctx.spawn_siblings(call, [{"part": p} for p in parts])]
    except (DuplicateTaskError, ValidationError) as exc:
        _log("spawn_refused", task_id=ctx.task_id, error=type(exc).__name__)
        return {"error": type(exc).__name__, "field": getattr(exc, "field", None)}
    return {"siblings": ids}


@tests.task("async_sleep")
async def async_sleep(ctx: TaskContext, seconds: float) -> None:
    """An async task that sleeps; cancellation reaches it as CancelledError."""
    _log("start", task_id=ctx.task_id)
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        _log("noticed_cancel", task_id=ctx.task_id, reason=ctx.cancel_reason)
        raise
    _log("done", task_id=ctx.task_id)


@tests.task("poison")
def poison(ctx: TaskContext) -> None:
    """Kills the worker process running it, on every attempt (a crash-looping task)."""
    import signal

    _log("start", task_id=ctx.task_id, rescue_count=ctx.record.rescue_count)
    os.kill(os.getpid(), signal.SIGKILL)


@tests.task("charge", sensitive=("card.number", "pin"), retry=RetryPolicy.constant(0, 0))
def charge(
    ctx: TaskContext,
    card: dict,
    pin: str,
    api_key: str = "",
    amount: int = 0,
    fail: bool = False,
    hold: bool = False,
) -> dict[str, object]:
    """Carries secrets: ``card.number`` and ``pin`` are declared sensitive, ``api_key`` is a
    SENSITIVE_KEYS name. Records what it received; with ``fail`` its error echoes them all;
    with ``hold`` it runs until cancelled (and its ``on_cancel`` fails echoing them)."""
    _log("charge", task_id=ctx.task_id, number=card.get("number"), pin=pin, api_key=api_key)
    if fail:
        raise ValueError(f"card declined: card={card!r} pin={pin} api_key={api_key} {ctx.record}")
    deadline = time.monotonic() + 60
    while hold and not ctx.is_cancelled() and time.monotonic() < deadline:
        time.sleep(0.05)
    return {"charged": amount, "receipt": {"api_key": api_key}}


@charge.on_cancel
def _charge_cancelled(
    ctx: TaskContext, card: dict, pin: str, api_key: str = "", **rest: object
) -> None:
    raise RuntimeError(f"refund failed: card={card!r} pin={pin} api_key={api_key}")


@tests.task("ledger", retry=RetryPolicy.constant(0, 0))
def ledger(ctx: TaskContext, seconds: float, n: int = 0) -> dict[str, int]:
    """One execution-ledger line per attempt: when it began and ended by this machine's clock,
    and when it was claimed by the database's clock (the moment a rate-limit token was spent)."""
    started = ctx.record.started_at
    _log(
        "begin",
        task_id=ctx.task_id,
        n=n,
        at=time.time(),
        claimed=started.timestamp() if started else None,
        group=ctx.record.group_key,
        key=ctx.record.key,
    )
    ctx.wait_cancelled(seconds)
    _log("end", task_id=ctx.task_id, n=n, at=time.time())
    return {"pid": os.getpid()}
