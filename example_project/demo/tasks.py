"""Demo task types, autodiscovered by taskmill_django like any app's ``tasks.py``.

Three domains show the main ideas:

- ``media``: thumbnails that report progress and honour cancellation, plus an ``async def`` task;
- ``email``: a flaky sender, so retries with backoff, a permanent failure and the dead-letter
  list all show up in the admin after a minute of running;
- ``reports``: a slow background build and a ``publish`` step that depends on it.
"""

from __future__ import annotations

import asyncio
import random
import time

from taskmill_django import (
    Domain,
    IoBudget,
    PermanentError,
    Priority,
    RetryableError,
    RetryPolicy,
    TaskContext,
)

media = Domain("media", default_priority=Priority.NORMAL, default_tags={"app": "demo"})

# Short backoff so a demo run shows several attempts within seconds.
email = Domain(
    "email",
    default_priority=Priority.HIGH,
    default_retry=RetryPolicy.exponential(3, initial=0.2, maximum=2.0),
)

reports = Domain("reports", default_priority=Priority.BACKGROUND)

# Addresses that make the demo sender misbehave on purpose.
ALWAYS_TIMES_OUT = "flaky-relay@example.invalid"
BOUNCES = "nobody@example.invalid"


def _sleep(ctx: TaskContext, seconds: float) -> None:
    """Sleep, but give up early when the task is cancelled or the worker shuts down.

    Raising RetryableError on cancellation is the conventional way out: the worker records the
    cancellation (or releases the task on shutdown) and spends no retry on it.
    """
    if ctx.wait_cancelled(seconds):
        raise RetryableError(f"interrupted: {ctx.cancel_reason}")


@media.task(
    "thumbnail",
    expected_io=IoBudget.disk(4096, 1024),
    # One thumbnail per (path, size): resubmitting the same pair is a duplicate.
    key=lambda path, size: f"{path}@{size}",
)
def thumbnail(ctx: TaskContext, path: str, size: int) -> dict[str, object]:
    """Pretend to resize an image in a few steps, reporting progress after each."""
    steps = 5
    for step in range(steps):
        _sleep(ctx, 0.1 + random.random() * 0.2)  # noqa: S311 - demo timing only
        ctx.progress.report_fraction(step + 1, steps, f"resizing {path} to {size}px")
    ctx.record_read_bytes(4096)
    ctx.record_write_bytes(size * 4)
    return {"path": path, "size": size, "output": f"thumbs/{size}/{path}"}


@media.task("transcode", priority=Priority.BACKGROUND)
async def transcode(ctx: TaskContext, video: str, seconds: float = 1.0) -> str:
    """An ``async def`` task: it runs on the worker's event loop, not in a pool thread."""
    chunks = 4
    for chunk in range(chunks):
        await asyncio.sleep(seconds / chunks)
        ctx.progress.report_fraction(chunk + 1, chunks, f"transcoding {video}")
    return f"{video}.webm"


@email.task("send")
def send(ctx: TaskContext, to: str, subject: str) -> str:
    """Send an email through an unreliable relay.

    About one attempt in three times out (retried with backoff); one address always times out
    (dead-lettered once the retries are spent); one bounces (failed at once, no retry).
    """
    time.sleep(0.05)
    if to == BOUNCES:
        raise PermanentError(f"550 mailbox {to} does not exist")
    if to == ALWAYS_TIMES_OUT or random.random() < 0.3:  # noqa: S311 - demo flakiness
        raise RetryableError(f"relay timed out (attempt {ctx.record.retry_count + 1})")
    return f"sent {subject!r} to {to}"


@reports.task("build")
def build_report(ctx: TaskContext, month: str) -> dict[str, object]:
    """A slow report: a few seconds of work, checking for cancellation between pages."""
    pages = 10
    for page in range(pages):
        _sleep(ctx, 0.3)
        ctx.progress.report_fraction(page + 1, pages, f"page {page + 1} of {pages}")
    return {"month": month, "pages": pages}


@reports.task("publish")
def publish_report(ctx: TaskContext, month: str) -> str:
    """Runs only after ``reports::build`` for the same month completed (see the demo command)."""
    _sleep(ctx, 0.2)
    return f"published report {month}"
