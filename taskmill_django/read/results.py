"""Results: the terminal record of a task, read now (``result``) or waited for (``wait``).

A task's result is its history row (``status``, ``result``, ``last_error``). Waiting never
holds a transaction open: each check is two short reads, the active row first and then the
history row, so a task that moves to history between them is still found (the move is one
transaction: when the active row is gone, the history row is there).

On PostgreSQL a waiter LISTENs on ``taskmill_result`` and marks the task ``has_waiter``; the
transaction that writes the task's terminal outcome then notifies it, so the waiter wakes at
once instead of polling. Outcomes nobody waits for send nothing. Elsewhere (or behind a
transaction pooler without ``LISTEN_DATABASE``) the waiter polls at a growing interval.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from django.db import connections
from django.db.models import Q
from django.db.utils import DEFAULT_DB_ALIAS

from ..conf import app_settings
from ..exceptions import ResultTimeout, TaskNotFound, ValidationError
from ..models import Task, TaskHistory
from ..store.db import RESULT_CHANNEL
from .queries import EVERYTHING

if TYPE_CHECKING:
    import psycopg

logger = logging.getLogger(__name__)

MAX_POLL = 1.0  # seconds between checks when polling, once the interval has grown
SAFETY_RECHECK = 5.0  # seconds between checks while listening: a lost notification is caught


def result(task_id: int, scope: Q = EVERYTHING) -> TaskHistory | None:
    """The history record of task ``task_id`` once it is terminal; None while it is active.

    Raises TaskNotFound when the task is neither active nor in history: no such id, or it
    finished and its history row was pruned (``RETENTION``, ``prune_history_*``)."""
    record, _status = _check(task_id, scope)
    return record


def _check(task_id: int, scope: Q) -> tuple[TaskHistory | None, str]:
    status = Task.objects.filter(scope, id=task_id).values_list("status", flat=True).first()
    if status is not None:
        return None, status
    record = TaskHistory.objects.filter(scope, id=task_id).first()
    if record is None:
        raise TaskNotFound(
            f"no task with id {task_id}: it is neither active nor in history (never "
            "submitted, or finished and its history row was pruned)"
        )
    return record, record.status


def _seconds(timeout: float | timedelta | None) -> float | None:
    if timeout is None:
        return None
    value = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValidationError("timeout", f"must be None or seconds >= 0, got {timeout!r}")
    return float(value)


def _poll_seconds(poll: float) -> float:
    if isinstance(poll, bool) or not isinstance(poll, int | float) or poll <= 0:
        raise ValidationError("poll", f"must be a number of seconds > 0, got {poll!r}")
    return float(poll)


def _task_id(task_id: int | None) -> int:
    if task_id is None:
        raise ValidationError(
            "id",
            "this submission created no task to wait for (a schedule whose first run lies "
            "in the future, or a task kept out by testing.capture(queue=False))",
        )
    return task_id


def wait(
    task_id: int | None,
    timeout: float | timedelta | None = None,
    poll: float = 0.05,
    scope: Q = EVERYTHING,
) -> TaskHistory:
    """Block until task ``task_id`` is terminal and return its history record.

    Raises ResultTimeout (a TimeoutError) after ``timeout`` seconds (None: no limit) and
    TaskNotFound when the task is gone from both tables (see ``result``)."""
    task_id = _task_id(task_id)
    limit, interval = _seconds(timeout), _poll_seconds(poll)
    deadline = None if limit is None else time.monotonic() + limit
    with _listening(task_id) as session:
        while True:
            record, status = _check(task_id, scope)
            if record is not None:
                return record
            left = _left(deadline, task_id, limit, status)
            if session is not None:
                _next_notice(session, task_id, min(left, SAFETY_RECHECK))
            else:
                time.sleep(min(left, interval))
                interval = min(interval * 1.5, max(MAX_POLL, poll))


async def await_result(
    task_id: int | None,
    timeout: float | timedelta | None = None,
    poll: float = 0.05,
    scope: Q = EVERYTHING,
) -> TaskHistory:
    """``wait`` for async code: the event loop runs on while the task is not done."""
    task_id = _task_id(task_id)
    limit, interval = _seconds(timeout), _poll_seconds(poll)
    deadline = None if limit is None else time.monotonic() + limit
    check = sync_to_async(_check)
    session = await _alisten(task_id)
    try:
        while True:
            record, status = await check(task_id, scope)
            if record is not None:
                return record
            left = _left(deadline, task_id, limit, status)
            if session is not None:
                await _anext_notice(session, task_id, min(left, SAFETY_RECHECK))
            else:
                await asyncio.sleep(min(left, interval))
                interval = min(interval * 1.5, max(MAX_POLL, poll))
    finally:
        if session is not None:
            await session.close()


def _left(deadline: float | None, task_id: int, limit: float | None, status: str) -> float:
    if deadline is None:
        return float("inf")
    left = deadline - time.monotonic()
    if left <= 0:
        raise ResultTimeout(task_id, limit or 0.0, status)
    return left


# --- PostgreSQL: LISTEN for the terminal outcome ---------------------------------------------


def _listen_params() -> dict[str, Any] | None:
    """Connection parameters of a session that may LISTEN, or None to poll instead: not
    PostgreSQL, no psycopg 3, or a transaction pooler without ``LISTEN_DATABASE`` (the same
    rules as the worker's wake-ups, see ``worker.listener``)."""
    alias = app_settings.LISTEN_DATABASE or DEFAULT_DB_ALIAS
    if connections[alias].vendor != "postgresql":
        return None
    if alias == DEFAULT_DB_ALIAS and app_settings.TRANSACTION_POOLING:
        return None
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return None
    params = dict(connections[alias].get_connection_params())
    params.pop("cursor_factory", None)
    params.pop("context", None)
    return params


def _mark_waiter(task_id: int) -> None:
    # After LISTEN: a terminal write that commits from here on notifies this session; one
    # that committed before is found by the check that follows.
    Task.objects.filter(id=task_id, has_waiter=False).update(has_waiter=True)


@contextmanager
def _listening(task_id: int) -> Iterator[psycopg.Connection[Any] | None]:
    params = _listen_params()
    if params is None:
        yield None
        return
    import psycopg

    try:
        session = psycopg.connect(**params, autocommit=True)
    except psycopg.Error as exc:
        logger.warning("cannot LISTEN for task_id=%s, polling instead: %s", task_id, exc)
        yield None
        return
    with session:
        session.execute(f"LISTEN {RESULT_CHANNEL}")
        _mark_waiter(task_id)
        yield session


def _next_notice(session: psycopg.Connection[Any], task_id: int, seconds: float) -> None:
    """Return when ``task_id`` is announced, or after ``seconds``."""
    end = time.monotonic() + seconds
    wanted = str(task_id)
    while (left := end - time.monotonic()) > 0:
        for notice in session.notifies(timeout=left, stop_after=1):
            if notice.payload == wanted:
                return


async def _alisten(task_id: int) -> psycopg.AsyncConnection[Any] | None:
    params = await sync_to_async(_listen_params)()
    if params is None:
        return None
    import psycopg

    try:
        session = await psycopg.AsyncConnection.connect(**params, autocommit=True)
    except psycopg.Error as exc:
        logger.warning("cannot LISTEN for task_id=%s, polling instead: %s", task_id, exc)
        return None
    try:
        await session.execute(f"LISTEN {RESULT_CHANNEL}")
        await sync_to_async(_mark_waiter)(task_id)
    except BaseException:
        await session.close()
        raise
    return session


async def _anext_notice(
    session: psycopg.AsyncConnection[Any], task_id: int, seconds: float
) -> None:
    end = time.monotonic() + seconds
    wanted = str(task_id)
    while (left := end - time.monotonic()) > 0:
        async for notice in session.notifies(timeout=left, stop_after=1):
            if notice.payload == wanted:
                return
