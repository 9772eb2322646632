"""The task pool: where claimed tasks run, and the record of what runs.

Sync task bodies run on a fixed set of threads, ``async def`` bodies on one event loop thread.
Nothing here touches the database: a finished body's outcome goes to ``report``, and the claim
loop writes it. A body that must stop (cancelled, paused, lease lost, time limit) is asked to
through its context; one that ignores the request past its grace period is abandoned: its slot
goes to a fresh thread and whatever it does afterwards is never written.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import executor
from ..context import TaskContext
from ..domain import TaskDefinition
from ..enums import INTERRUPTIONS
from ..models import Task
from ..store.lifecycle import Outcome

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Execution:
    """One claimed task on its way through this worker."""

    task: Task
    ctx: TaskContext
    definition: TaskDefinition | None
    # When its body began (None while it waits in the pool's queue, claimed ahead).
    started: float | None = None
    # Monotonic time by which the body must be done (time limit), and by which it must have
    # stopped once asked (grace), None without a limit.
    deadline: float | None = None
    stop_by: float | None = None
    future: Any = None
    # Set once its outcome was reported (or given up on): nothing more is asked of it.
    reported: bool = False
    abandoned: bool = False

    @property
    def task_id(self) -> int:
        return self.task.id


class Running:
    """The executions this worker holds, shared by the claim loop (which adds and removes them)
    and the heartbeat (which reads them), hence the lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_id: dict[int, Execution] = {}

    def add(self, execution: Execution) -> None:
        with self._lock:
            self._by_id[execution.task_id] = execution

    def get(self, task_id: int) -> Execution | None:
        with self._lock:
            return self._by_id.get(task_id)

    def discard(self, task_id: int, lease_token: Any) -> None:
        """Forget ``task_id`` if it still runs under ``lease_token`` (a later claim of the same
        task, after a rescue, keeps its own entry)."""
        with self._lock:
            execution = self._by_id.get(task_id)
            if execution is not None and execution.task.lease_token == lease_token:
                del self._by_id[task_id]

    def snapshot(self) -> list[Execution]:
        with self._lock:
            return list(self._by_id.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_id)

    def __bool__(self) -> bool:
        return len(self) > 0


class TaskPool:
    """Threads for sync bodies, an event loop for async ones; ``report`` receives outcomes."""

    def __init__(self, concurrency: int, report: Callable[[Execution, Outcome], None]) -> None:
        self._report = report
        # In dispatch order: a task claimed ahead never keeps a more urgent one waiting.
        self._work: queue.PriorityQueue[tuple[int, int, Execution | None]] = queue.PriorityQueue()
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._concurrency = concurrency
        self._lock = threading.Lock()

    def start(self) -> None:
        for _ in range(self._concurrency):
            self._spawn()

    def submit(self, execution: Execution) -> None:
        """Run ``execution``'s body (on the event loop when it is ``async def``)."""
        if execution.definition is not None and execution.definition.is_async:
            loop = self._event_loop()
            execution.future = asyncio.run_coroutine_threadsafe(self._run_async(execution), loop)
        else:
            self._work.put((execution.task.priority, execution.task_id, execution))

    def cancel(self, execution: Execution, reason: str) -> bool:
        """Ask the body to stop for ``reason``; False when it was asked already."""
        ctx = execution.ctx
        if ctx.is_cancelled():
            return False
        ctx.cancel(reason)
        if reason not in INTERRUPTIONS:
            # A slow hook must not delay the caller (the heartbeat, the claim loop).
            threading.Thread(
                target=executor.run_on_cancel,
                args=(ctx, execution.definition),
                name=f"taskmill-on-cancel-{execution.task_id}",
                daemon=True,
            ).start()
        if execution.future is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(execution.future.cancel)
        return True

    def abandon(self, execution: Execution) -> None:
        """Give up waiting for a body that ignores its stop request: a fresh thread takes its
        slot; the old one ends whenever the body returns, and its outcome is dropped."""
        execution.abandoned = True
        if execution.future is None:
            self._spawn()

    def stop(self) -> None:
        """Let every idle thread end (bodies still running are not waited for)."""
        with self._lock:
            count = len(self._threads)
        for _ in range(count):
            self._work.put((LAST, 0, None))

    def _spawn(self) -> None:
        with self._lock:
            index = len(self._threads)
            thread = threading.Thread(target=self._serve, name=f"taskmill-{index}", daemon=True)
            self._threads.append(thread)
        thread.start()

    def _serve(self) -> None:
        while True:
            execution = self._work.get()[2]
            if execution is None:
                return
            begin(execution)
            outcome = executor.run_sync(execution.task, execution.ctx, execution.definition)
            if execution.abandoned:
                logger.warning(
                    "abandoned task finished task_id=%s type=%s: its outcome is dropped",
                    execution.task_id,
                    execution.task.task_type,
                )
                return  # a replacement thread already serves this slot
            self._report(execution, outcome)

    async def _run_async(self, execution: Execution) -> None:
        assert execution.definition is not None  # noqa: S101 - only async definitions come here
        begin(execution)
        outcome = await executor.run_async(execution.task, execution.ctx, execution.definition)
        if not execution.abandoned:
            self._report(execution, outcome)

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(
                    target=loop.run_forever, name="taskmill-async", daemon=True
                ).start()
                self._loop = loop
            return self._loop


# Sorts after every priority: threads finish the queued work before they stop.
LAST = 1 << 16


def begin(execution: Execution) -> None:
    """Its body starts now: the time limit counts from here, not from the claim."""
    execution.started = time.monotonic()
    if execution.task.timeout_seconds:
        execution.deadline = execution.started + execution.task.timeout_seconds
