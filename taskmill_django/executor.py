"""Run one claimed task and classify how the attempt ended. Never touches the database itself:
the dispatcher writes the returned Outcome in a batch, fenced by the lease."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import traceback as tb
from typing import Any

from django.db import close_old_connections

from . import registry, tracing
from .context import TaskContext
from .domain import TaskDefinition
from .enums import INTERRUPTIONS, HistoryStatus, InterruptReason
from .exceptions import PermanentError
from .models import Task
from .redaction import mask_text
from .retry import RetryPolicy
from .storable import storable_json, storable_text
from .store import lifecycle

logger = logging.getLogger(__name__)

# Characters of an attempt's error message and traceback kept (the traceback keeps its end).
ERROR_LIMIT = 4000
TRACEBACK_LIMIT = 20000


def build_context(task: Task) -> tuple[TaskContext, TaskDefinition | None]:
    definition = registry.find_task(task.task_type)
    return TaskContext(task, definition.domain if definition else None), definition


def run_sync(
    task: Task,
    ctx: TaskContext,
    definition: TaskDefinition | None,
    *,
    manage_connections: bool = True,
) -> lifecycle.Outcome:
    """Run a sync task function in the calling (pool) thread, inside its trace span."""
    with _span(task) as span:
        outcome = _run_sync(task, ctx, definition, manage_connections=manage_connections)
        tracing.record_outcome(span, outcome.kind, outcome.error)
    return outcome


def _span(task: Task) -> Any:
    return tracing.task_span(task.id, task.task_type, task.retry_count + 1, task.trace_context)


def _run_sync(
    task: Task,
    ctx: TaskContext,
    definition: TaskDefinition | None,
    *,
    manage_connections: bool,
) -> lifecycle.Outcome:
    """Run a sync task function in the calling (pool) thread.

    Pool threads own their connections: stale ones are closed around each task, as Django
    does around a request. ``manage_connections=False`` leaves the caller's connection alone
    (``testing.run_pending`` inside a test transaction).
    """
    started = time.monotonic()
    if ctx.is_cancelled():  # asked to stop while it waited in the worker's buffer
        return finish(not_started(task, ctx, definition), ctx, started)
    if manage_connections:
        close_old_connections()
    try:
        if definition is None:
            raise PermanentError(f"unknown task type {task.task_type!r}: not registered here")
        result = _entry_point(task, definition)(*_arguments(task, ctx), **task.payload)
    except BaseException as exc:
        outcome = classify_failure(task, ctx, definition, exc)
    else:
        outcome = success(task, ctx, result)
    finally:
        if manage_connections:
            close_old_connections()
    return finish(outcome, ctx, started)


async def run_async(task: Task, ctx: TaskContext, definition: TaskDefinition) -> lifecycle.Outcome:
    """Run an ``async def`` task on the worker's event loop, inside its trace span."""
    with _span(task) as span:
        outcome = await _run_async(task, ctx, definition)
        tracing.record_outcome(span, outcome.kind, outcome.error)
    return outcome


async def _run_async(task: Task, ctx: TaskContext, definition: TaskDefinition) -> lifecycle.Outcome:
    started = time.monotonic()
    if ctx.is_cancelled():
        return finish(not_started(task, ctx, definition), ctx, started)
    try:
        result = _entry_point(task, definition)(*_arguments(task, ctx), **task.payload)
        if asyncio.iscoroutine(result):
            result = await result
    except asyncio.CancelledError as exc:
        outcome = classify_failure(task, ctx, definition, exc)
    except Exception as exc:
        outcome = classify_failure(task, ctx, definition, exc)
    else:
        outcome = success(task, ctx, result)
    return finish(outcome, ctx, started)


def _entry_point(task: Task, definition: TaskDefinition) -> Any:
    """The executor, or its ``finalize`` hook once all spawned children have finished."""
    if task.is_finalizing:
        return definition.finalize_func or (lambda ctx, memo, **payload: memo)
    return definition.func


def _arguments(task: Task, ctx: TaskContext) -> tuple[Any, ...]:
    return (ctx, task.memo) if task.is_finalizing else (ctx,)


def run_on_cancel(ctx: TaskContext, definition: TaskDefinition | None) -> None:
    """Call the task's ``on_cancel`` hook (sync hooks only run here; errors are logged)."""
    hook = definition.on_cancel_func if definition else None
    if hook is None:
        return
    try:
        result = hook(ctx, **ctx.record.payload)
        if asyncio.iscoroutine(result):
            result.close()
            logger.warning(
                "on_cancel of %s is async; only sync hooks are supported", ctx.record.task_type
            )
    except Exception as exc:
        # Not logger.exception: the traceback's message may echo payload values, and log
        # lines carry only what redaction lets through.
        record = ctx.record
        logger.error(
            "on_cancel hook failed task_id=%s type=%s\n%s",
            record.id,
            record.task_type,
            mask_text(_format_traceback(exc), record.task_type, record.payload),
        )


def success(task: Task, ctx: TaskContext, result: Any) -> lifecycle.Outcome:
    if ctx.cancel_reason == InterruptReason.TIMEOUT:
        # Stopped at its time limit, it returned early: the work is not done.
        return timed_out(task, registry.find_task(task.task_type))
    # A result the database would reject must not fail the whole batch of outcomes it is
    # written in: strings are made storable (NUL, lone surrogates), and a value that is not
    # JSON at all (an object, NaN, Infinity) is dropped with a warning.
    try:
        result = storable_json(result)
        json.dumps(result, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        logger.warning("task_id=%s returned a value that is not JSON; it is not stored", task.id)
        result = None
    return lifecycle.Outcome(
        task.id, task.lease_token, lifecycle.COMPLETED, task.task_type, result=result
    )


def classify_failure(
    task: Task, ctx: TaskContext, definition: TaskDefinition | None, exc: BaseException
) -> lifecycle.Outcome:
    trace = storable_text(_format_traceback(exc), TRACEBACK_LIMIT, keep="tail")
    if ctx.cancel_reason == InterruptReason.TIMEOUT:
        return timed_out(task, definition, trace)
    error = storable_text(f"{type(exc).__name__}: {storable_text(exc)}", ERROR_LIMIT)
    base = lifecycle.Outcome(task.id, task.lease_token, "", task.task_type, error, trace)
    if ctx.is_cancelled() and ctx.cancel_reason in INTERRUPTIONS:
        # Interrupted, not failed: back to pending without spending a retry.
        base.kind = lifecycle.RELEASE
        return base
    if ctx.is_cancelled():
        base.kind = ctx.cancel_reason or HistoryStatus.CANCELLED
        return base
    if isinstance(exc, PermanentError):
        base.kind = lifecycle.FAILED
    else:
        _retry_or_dead_letter(base, task, definition)
    _log_failure(base, task)
    return base


def not_started(
    task: Task, ctx: TaskContext, definition: TaskDefinition | None
) -> lifecycle.Outcome:
    """The end of an attempt stopped before its body began (cancelled, paused, shut down or
    its lease lost while it waited for a free thread): as if the body had raised at once."""
    return classify_failure(task, ctx, definition, NotStarted(ctx.cancel_reason))


class NotStarted(Exception):
    """An attempt was stopped before its body began."""

    def __str__(self) -> str:
        return f"stopped before it started ({self.args[0]})"


def timed_out(task: Task, definition: TaskDefinition | None, trace: str = "") -> lifecycle.Outcome:
    """The attempt ran past its time limit: a failure, retried per the task's policy."""
    limit = f"{task.timeout_seconds:g}" if task.timeout_seconds is not None else "?"
    base = lifecycle.Outcome(
        task.id, task.lease_token, "", task.task_type, f"timed out after {limit} s", trace
    )
    _retry_or_dead_letter(base, task, definition)
    _log_failure(base, task)
    return base


def _retry_or_dead_letter(
    base: lifecycle.Outcome, task: Task, definition: TaskDefinition | None
) -> None:
    if task.retry_count < task.max_retries:
        policy = (definition.retry if definition else None) or RetryPolicy.constant(
            task.max_retries, 0
        )
        base.kind = lifecycle.RETRY
        base.retry_delay = policy.delay_for(task.retry_count + 1)
    else:
        base.kind = lifecycle.DEAD_LETTER


def _log_failure(outcome: lifecycle.Outcome, task: Task) -> None:
    logger.warning(
        "task failed task_id=%s type=%s outcome=%s error=%s",
        outcome.task_id,
        outcome.task_type,
        outcome.kind,
        mask_text(outcome.error, task.task_type, task.payload),
    )


def _format_traceback(exc: BaseException) -> str:
    try:
        return "".join(tb.format_exception(exc))
    except Exception as problem:  # an exception whose __str__ raises breaks the formatter
        return f"(traceback unavailable: {type(problem).__name__})"


def finish(outcome: lifecycle.Outcome, ctx: TaskContext, started: float) -> lifecycle.Outcome:
    outcome.duration_ms = int((time.monotonic() - started) * 1000)
    outcome.io = {k: v for k, v in ctx.io.items() if v}
    return outcome
