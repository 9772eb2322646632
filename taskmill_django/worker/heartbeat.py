"""The heartbeat: the worker's lease, renewed from its own thread and connection.

Every lease this worker holds hangs on its worker row's ``heartbeat_at``; a row silent past
``LEASE_TIMEOUT`` (database clock) lets any worker rescue its tasks. So the renewal never waits
behind the claim loop, maintenance or a task body, and each beat also:

- persists throttled progress reports (fenced by lease);
- reads the rows of the tasks running here: a cancel or pause request is passed to the body; a
  row whose lease changed, that left ``running`` or the active table was rescued: the body is
  asked to stop at once with ``lease_lost`` (its outcome, if any, is fenced off anyway);
- finds the worker row gone or declared dead: every body is stopped the same way and the worker
  registers again under a new id.

Self-fencing (RELIABILITY G12): a worker that could not renew its lease for ``fence_after``
seconds stops its bodies itself, before anyone may rescue them: a rescue needs ``LEASE_TIMEOUT``
of silence since the last renewal, and ``fence_after`` is ``LEASE_TIMEOUT - HEARTBEAT_INTERVAL``
(a system check keeps it at least two heartbeats long). The same happens when the claim loop
has not moved for longer than a statement may take: a hung loop would never write outcomes.

Rescuing others is left to healthy workers: one whose own lease is not fresh, or that has just
come back from an outage of its own, waits (``rescuer()``). After a database restart every
lease looks stale, and the first worker back must not take the others' tasks before they had
``LEASE_TIMEOUT`` to renew.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from django.db import DatabaseError, InterfaceError, connection

from ..conf import app_settings
from ..enums import InterruptReason, TaskStatus, WorkerStatus
from ..store import workers
from .connections import mark_worker_thread
from .pool import Execution, Running, TaskPool

logger = logging.getLogger(__name__)


class Identity:
    """This worker's current id (a new one after it was declared dead) and name."""

    def __init__(self, name: str, pid: int, concurrency: int, domains: list[str] | None) -> None:
        self.name, self.pid, self.concurrency, self.domains = name, pid, concurrency, domains
        self.worker_id: uuid.UUID | None = None

    def register(self) -> uuid.UUID:
        self.worker_id = workers.register_worker(
            self.name,
            self.pid,
            self.concurrency,
            self.domains,
            app_settings.claim_ahead(self.concurrency),
        )
        return self.worker_id


def fence_after() -> float:
    """Seconds without a renewed lease after which a worker stops its own task bodies: one
    heartbeat before anyone may rescue them."""
    return float(app_settings.LEASE_TIMEOUT) - float(app_settings.HEARTBEAT_INTERVAL)


def loop_stall_limit() -> float:
    """Seconds the claim loop may go without a pass before the worker gives up its leases: a
    statement may legitimately take ``STATEMENT_TIMEOUT``; longer is a hang."""
    statement = float(app_settings.STATEMENT_TIMEOUT or 0) or 300.0
    return statement + float(app_settings.LEASE_TIMEOUT)


class Heartbeat:
    """Renews the lease every ``HEARTBEAT_INTERVAL`` and keeps the running bodies honest."""

    def __init__(
        self,
        identity: Identity,
        running: Running,
        pool: TaskPool,
        *,
        stopping: threading.Event,
        loop_alive_at: Callable[[], float],
        io_report: Callable[[], dict[str, Any] | None],
        wake: Callable[[], None],
        saved_progress: Callable[[list[tuple[Execution, dict[str, Any]]]], None],
    ) -> None:
        self.identity = identity
        self.running = running
        self.pool = pool
        self.stopping = stopping
        self._loop_alive_at = loop_alive_at
        self._io_report = io_report
        self._wake = wake
        self._saved_progress = saved_progress
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.renewed_at = time.monotonic()  # when the last successful renewal was sent
        self._fenced = False
        self._failing = False
        self._recovered_at = float("-inf")  # renewing again after failures, since then

    def start(self) -> None:
        self.renewed_at = time.monotonic()
        for target, name in ((self._run, "taskmill-heartbeat"), (self._watch, "taskmill-fence")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)

    def _run(self) -> None:
        """Beat every ``HEARTBEAT_INTERVAL``; between beats, save new progress every
        ``PROGRESS_INTERVAL`` when that is shorter."""
        mark_worker_thread()
        interval = float(app_settings.HEARTBEAT_INTERVAL)
        tick = min(interval, float(app_settings.PROGRESS_INTERVAL))
        next_beat = time.monotonic() + interval
        try:
            while not self._stop.wait(tick):
                if self._loop_stalled():
                    continue
                if time.monotonic() >= next_beat - tick / 2:
                    next_beat = time.monotonic() + interval
                    self.beat()
                else:
                    self._save_progress()
        finally:
            connection.close()

    def _watch(self) -> None:
        """Fence on time alone, in a thread of its own: a renewal can itself hang (a dropped
        network path holds it until the socket gives up), and must not delay the fence."""
        interval = float(app_settings.HEARTBEAT_INTERVAL) / 4
        while not self._stop.wait(interval):
            if time.monotonic() - self.renewed_at > fence_after():
                self._fence_all("its lease could not be renewed in time")
            elif self._loop_stalled():
                self._fence_all("the claim loop stopped moving")

    def rescuer(self) -> uuid.UUID | None:
        """This worker's id when it may rescue others' tasks now, else None: its own lease
        was renewed within two heartbeats, and not just after an outage of its own."""
        now = time.monotonic()
        interval = float(app_settings.HEARTBEAT_INTERVAL)
        if now - self.renewed_at > 2 * interval or self._failing:
            return None
        if now - self._recovered_at < float(app_settings.LEASE_TIMEOUT):
            return None
        return self.identity.worker_id

    def _loop_stalled(self) -> bool:
        return time.monotonic() - self._loop_alive_at() > loop_stall_limit()

    def beat(self) -> None:
        """One heartbeat (public for the shutdown path, which beats while it drains)."""
        worker_id = self.identity.worker_id
        if worker_id is None:
            return
        executions = [e for e in self.running.snapshot() if not e.reported]
        status = WorkerStatus.STOPPING if self.stopping.is_set() else WorkerStatus.RUNNING
        sent = time.monotonic()
        progress = self._progress(executions)
        try:
            result = workers.beat(
                worker_id,
                status,
                [e.task_id for e in executions],
                {e.task_id: (lease, values) for e, lease, values in progress},
                self._io_report(),
            )
        except (DatabaseError, InterfaceError) as exc:
            logger.warning("heartbeat failed, retrying: %s", exc)
            self._failing = True
            for execution, _, _ in progress:
                execution.ctx.progress.changed_since_save()
            _reset_connection()
            return
        if not result.renewed:
            self._declared_dead(worker_id)
            return
        self.renewed_at = sent
        self._fenced = False
        if self._failing:
            self._failing = False
            self._recovered_at = time.monotonic()
        self._announce(progress)
        for execution in executions:
            self._judge(execution, result.states.get(execution.task_id))

    def _judge(self, execution: Execution, state: workers.RowState | None) -> None:
        if execution.reported:
            return  # finished meanwhile: its row may have moved to history by its own outcome
        if (
            state is None
            or state.lease_token != execution.task.lease_token
            or state.status != TaskStatus.RUNNING
        ):
            if self.pool.cancel(execution, InterruptReason.LEASE_LOST):
                logger.warning(
                    "lease lost task_id=%s type=%s: the task was rescued; stopping it here",
                    execution.task_id,
                    execution.task.task_type,
                )
        elif state.cancel_reason:
            self.pool.cancel(execution, state.cancel_reason)
            self._wake()

    @staticmethod
    def _progress(
        executions: list[Execution],
    ) -> list[tuple[Execution, uuid.UUID, dict[str, Any]]]:
        """New progress reports of ``executions``, with the lease that fences their write."""
        reports = []
        for execution in executions:
            values = execution.ctx.progress.take_unsaved()
            if values is not None and execution.task.lease_token is not None:
                reports.append((execution, execution.task.lease_token, values))
        return reports

    def _save_progress(self) -> None:
        progress = self._progress([e for e in self.running.snapshot() if not e.reported])
        if not progress:
            return
        try:
            workers.save_progress(
                {e.task_id: lease for e, lease, _ in progress},
                {e.task_id: values for e, _, values in progress},
            )
        except (DatabaseError, InterfaceError) as exc:
            logger.warning("saving progress failed, retrying at the next beat: %s", exc)
            for execution, _, _ in progress:
                execution.ctx.progress.changed_since_save()
            _reset_connection()
            return
        self._announce(progress)

    def _announce(self, progress: list[tuple[Execution, uuid.UUID, dict[str, Any]]]) -> None:
        if progress:
            self._saved_progress([(e, values) for e, _, values in progress])

    def _fence_all(self, why: str) -> None:
        executions = [e for e in self.running.snapshot() if not e.reported]
        stopped = [e for e in executions if self.pool.cancel(e, InterruptReason.LEASE_LOST)]
        if stopped and not self._fenced:
            logger.error("stopping %s running task(s): %s", len(stopped), why)
        self._fenced = True

    def _declared_dead(self, worker_id: uuid.UUID) -> None:
        """Our row is gone or marked dead: our tasks were (or are being) rescued. Stop them and
        come back under a new id, so new claims are not mistaken for the dead worker's."""
        self._fence_all("this worker was declared dead (its tasks were rescued)")
        logger.warning("worker row %s missing or dead; registering again", worker_id)
        try:
            self.identity.register()
        except (DatabaseError, InterfaceError) as exc:
            logger.warning("re-registering failed, retrying: %s", exc)
            _reset_connection()
            return
        self.renewed_at = time.monotonic()


def _reset_connection() -> None:
    try:
        connection.close()
    except (DatabaseError, InterfaceError):
        pass
