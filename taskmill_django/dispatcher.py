"""The worker loop: wake (NOTIFY or poll) → claim → execute → write outcomes in batches →
heartbeat → maintenance. ``runtaskmill`` only parses flags and calls ``Dispatcher.run``.

Threads: the main thread owns the loop and every write of claims, outcomes and heartbeats; a
fixed pool of threads runs sync task code; one event-loop thread runs ``async def`` tasks;
on PostgreSQL one thread LISTENs so idle workers wake as soon as work is submitted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import signal
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import (
    DatabaseError,
    InterfaceError,
    close_old_connections,
    connection,
)

from . import executor, signals
from .conf import app_settings
from .context import TaskContext
from .domain import TaskDefinition
from .enums import INTERRUPTIONS, InterruptReason
from .exceptions import ValidationError
from .models import Task
from .policy import io, pressure
from .policy.config import Policy
from .store import claim, control, cycle, lifecycle, maintenance, recurring, workers
from .store.db import send_task_signal

logger = logging.getLogger(__name__)

_DB_ERRORS = (DatabaseError, InterfaceError)
# A submission statement of at least this many rows (its NOTIFY payload) makes every
# listening worker check the planner statistics at once.
BULK_ROWS = 500


@dataclass
class DispatcherOptions:
    concurrency: int = 4
    domains: Sequence[str] | None = None
    name: str = ""
    burst: bool = False
    shutdown_timeout: float | None = None
    poll_interval: float | None = None
    install_signal_handlers: bool = True


@dataclass
class _Running:
    task: Task
    ctx: TaskContext
    definition: TaskDefinition | None
    future: Any = None


@dataclass
class _Stats:
    completed: int = 0
    failed: int = 0
    retried: int = 0
    lost: int = 0
    since_prune: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


class Dispatcher:
    """One worker process. Safe to run many, on many machines, against one database."""

    def __init__(self, options: DispatcherOptions) -> None:
        if options.concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.options = options
        self.name = options.name or f"{socket.gethostname()}:{os.getpid()}"
        self.worker_id: uuid.UUID | None = None
        self.running: dict[int, _Running] = {}
        self.outcomes: queue.SimpleQueue[lifecycle.Outcome] = queue.SimpleQueue()
        self.unwritten: list[lifecycle.Outcome] = []
        self.work: queue.SimpleQueue[_Running | None] = queue.SimpleQueue()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.stats = _Stats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: list[threading.Thread] = []
        self._next_heartbeat = 0.0
        self._beat_stop = threading.Event()
        self._lost_id: uuid.UUID | None = None  # a worker id whose row the heartbeat missed
        self._beat_thread: threading.Thread | None = None
        self._alive_at = time.monotonic()  # last pass of the main loop, seen by the heartbeat
        self._next_progress = 0.0
        self._next_timers = 0.0
        self.policy: Policy | None = None
        self._pressure_sources = pressure.load_sources(
            list(app_settings.PRESSURE_SOURCES or []), bool(app_settings.RESOURCE_MONITORING)
        )
        self._io_capacity = io.parse_capacity(app_settings.IO_CAPACITY)
        self._io_meter = (
            io.load_meter(app_settings.IO_SAMPLER) if app_settings.RESOURCE_MONITORING else None
        )
        self.io_report: dict[str, Any] | None = None
        self._next_expiry = 0.0
        self._next_stats = 0.0
        self._bulk_arrived = False  # set by the listener: a large batch was just submitted
        self._next_status = 0.0

    # --- settings ------------------------------------------------------------------------

    @property
    def poll_interval(self) -> float:
        return float(self.options.poll_interval or app_settings.POLL_INTERVAL)

    @property
    def shutdown_timeout(self) -> float:
        if self.options.shutdown_timeout is not None:
            return float(self.options.shutdown_timeout)
        return float(app_settings.SHUTDOWN_TIMEOUT)

    # --- lifecycle -----------------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped (signal, ``stop()``) or, with ``burst``, until nothing is left."""
        if self.options.install_signal_handlers:
            self._install_signal_handlers()
        self._register()
        self._start_threads()
        logger.info(
            "worker started name=%s id=%s concurrency=%s domains=%s",
            self.name,
            self.worker_id,
            self.options.concurrency,
            ",".join(self.options.domains or []) or "all",
        )
        self._guarded(maintenance.rescue_orphans)
        self._guarded(maintenance.settle_stale_dependencies)
        self._sync_schedules()
        try:
            self._loop_until_stopped()
        finally:
            self._shutdown()
        return 0

    def stop(self) -> None:
        if not self.stopping.is_set():
            logger.info("worker stopping name=%s running=%s", self.name, len(self.running))
        self.stopping.set()
        self.wake.set()

    def _install_signal_handlers(self) -> None:
        def handle(signum: int, frame: Any) -> None:
            if self.stopping.is_set() and signum == signal.SIGINT:
                logger.warning("second interrupt: releasing running tasks now")
                self._deadline = 0.0
            self.stop()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    def _register(self) -> None:
        self.worker_id = self._retrying(
            lambda: workers.register_worker(
                self.name, os.getpid(), self.options.concurrency, self.options.domains
            )
        )

    def _start_threads(self) -> None:
        for index in range(self.options.concurrency):
            thread = threading.Thread(
                target=self._pool_thread, name=f"taskmill-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        if connection.vendor == "postgresql":
            threading.Thread(target=self._listen, name="taskmill-listen", daemon=True).start()
        self._beat_thread = threading.Thread(
            target=self._beat_loop, name="taskmill-heartbeat", daemon=True
        )
        self._beat_thread.start()

    # --- the loop ------------------------------------------------------------------------

    def _loop_until_stopped(self) -> None:
        backoff = 0.5
        while not self.stopping.is_set():
            self._alive_at = time.monotonic()
            try:
                idle = self._step()
                backoff = 0.5
            except _DB_ERRORS as exc:
                logger.warning("database error, retrying in %.1fs: %s", backoff, exc)
                self._reset_connection()
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            if idle is None:
                break  # burst mode: nothing left
            if idle:
                self.wake.wait(self._sleep_time())
                self.wake.clear()

    def _step(self) -> bool | None:
        """One pass. Returns True when idle, False when busy, None when a burst run is done."""
        now = time.monotonic()
        if now >= self._next_heartbeat:
            self._heartbeat()
            self._next_heartbeat = now + float(app_settings.HEARTBEAT_INTERVAL)
        if now >= self._next_stats or self._bulk_arrived:
            self._refresh_planner_stats(now)
        fresh_policy = now >= self._next_timers
        if fresh_policy:
            self._timers(now)
            self._next_timers = now + min(self.poll_interval, 1.0)
        if self.running and now >= self._next_progress:
            self._save_progress()
            self._next_progress = now + float(app_settings.PROGRESS_INTERVAL)
        batch = self._collect_outcomes()
        free = self.options.concurrency - (len(self.running) - len(batch))
        limit = min(free, int(app_settings.CLAIM_BATCH_SIZE))
        assert self.worker_id is not None  # noqa: S101 - set in run()
        # Outcomes of the last batch and the claim of the next share one short transaction:
        # one commit per cycle instead of two (and on PostgreSQL one round trip for both).
        applied, claimed = cycle.write_and_claim(
            batch, self.worker_id, limit, self.options.domains, self.policy
        )
        self._account(batch, applied)
        for task in claimed:
            self._start(task)
        if claimed and signals.task_dispatched.receivers:
            for task in claimed:
                send_task_signal(
                    signals.task_dispatched,
                    task.task_type,
                    task_id=task.id,
                    worker_id=self.worker_id,
                    priority=task.priority,
                    effective_priority=task.effective_priority,
                )
        if not claimed and claim.claim_deferred(self.worker_id):
            return False  # the claim gave way to a cluster-wide lock mode change: claim again
        if self.options.burst and not claimed and not self.running and self.outcomes.empty():
            if not fresh_policy or batch:
                # The policy may be stale (a preemptor just finished, perhaps in the outcomes
                # written after it was loaded): look again before leaving.
                self._next_timers = 0.0
                return False
            return None
        # Idle when every slot is busy (an outcome will wake us) or the queue had less than asked.
        return (free <= 0 or len(claimed) < free) and self.outcomes.empty()

    def _sleep_time(self) -> float:
        now = time.monotonic()
        until = min(self._next_heartbeat, self._next_timers)
        if self.running:
            until = min(until, self._next_progress)
        return min(self.poll_interval, max(until - now, 0.0))

    def _start(self, task: Task) -> None:
        ctx, definition = executor.build_context(task)
        item = _Running(task, ctx, definition)
        self.running[task.id] = item
        if definition is not None and definition.is_async:
            loop = self._event_loop()
            item.future = asyncio.run_coroutine_threadsafe(self._run_async(item), loop)
        else:
            self.work.put(item)

    def _pool_thread(self) -> None:
        while True:
            item = self.work.get()
            if item is None:
                return
            self._report(executor.run_sync(item.task, item.ctx, item.definition))

    async def _run_async(self, item: _Running) -> None:
        assert item.definition is not None  # noqa: S101 - only async definitions come here
        self._report(await executor.run_async(item.task, item.ctx, item.definition))

    def _report(self, outcome: lifecycle.Outcome) -> None:
        self.outcomes.put(outcome)
        self.wake.set()

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="taskmill-async", daemon=True).start()
            self._loop = loop
        return self._loop

    # --- writing outcomes ------------------------------------------------------------------

    def _collect_outcomes(self) -> list[lifecycle.Outcome]:
        """Outcomes not yet written: leftovers of a failed write plus newly reported ones."""
        while True:
            try:
                self.unwritten.append(self.outcomes.get_nowait())
            except queue.Empty:
                return list(self.unwritten)

    def _write_outcomes(self) -> None:
        batch = self._collect_outcomes()
        if batch:
            self._account(batch, lifecycle.apply_outcomes(batch))

    def _account(self, batch: list[lifecycle.Outcome], applied: lifecycle.Applied) -> None:
        """After commit: forget written (or fenced-off) tasks and update counters."""
        self.unwritten = self.unwritten[len(batch) :]
        for outcome in batch:
            item = self.running.get(outcome.task_id)
            if item is not None and item.task.lease_token == outcome.lease_token:
                del self.running[outcome.task_id]
            self.stats.by_kind[outcome.kind] = self.stats.by_kind.get(outcome.kind, 0) + 1
        self.stats.lost += len(applied.lost)
        self.stats.completed += sum(1 for o in applied.written if o.kind == lifecycle.COMPLETED)
        self.stats.since_prune += len(applied.written)
        if app_settings.RETENTION and self.stats.since_prune >= int(app_settings.PRUNE_INTERVAL):
            self.stats.since_prune = 0
            maintenance.apply_retention()

    # --- schedules and expiry -------------------------------------------------------------

    def _sync_schedules(self) -> None:
        try:
            recurring.sync_declared_schedules()
        except (ValidationError, TypeError, ValueError) as exc:
            logger.error("declarative schedules not synced: %s", exc)
        except _DB_ERRORS as exc:
            logger.warning("declarative schedules not synced (database error): %s", exc)
            self._reset_connection()

    def _timers(self, now: float) -> None:
        """Time-driven work, at most every poll interval (never on each claim cycle)."""
        control.resume_expired_group_pauses()
        if control.resume_preempted():
            self.wake.set()
        self.policy = control.load_policy(
            pressure.measure(self._pressure_sources), self._measure_io()
        )
        if self.policy.preemptor_priority is not None:
            # A task claimed under a policy older than the urgent submission escaped its
            # preemption: every worker re-applies it while a preemptor is active.
            control.preempt_below(self.policy.preemptor_priority)
        if recurring.fire_due_schedules():
            self.wake.set()
        if now >= self._next_expiry:
            self._next_expiry = now + float(app_settings.EXPIRY_SWEEP_INTERVAL)
            maintenance.expire_due()

    def _refresh_planner_stats(self, now: float) -> None:
        """Every second, and at once when a large batch arrives: claims planned with statistics
        of a nearly empty table sort every pending row instead of walking the dispatch index.
        The submitter's counters can reach ``pg_stat_user_tables`` a moment after its NOTIFY,
        so a batch that changed nothing yet is looked at again shortly."""
        hinted, self._bulk_arrived = self._bulk_arrived, False
        analyzed = maintenance.refresh_planner_stats()
        self._next_stats = now + (0.25 if hinted and not analyzed else 1.0)

    def _measure_io(self) -> frozenset[str]:
        """Fold a new IO reading into the averages; the saturated directions (none without
        RESOURCE_MONITORING)."""
        if self._io_meter is None:
            return frozenset()
        rates = self._io_meter.update(time.monotonic())
        self.io_report = io.report(rates, self._io_capacity)
        return io.saturated(rates, self._io_capacity)

    # --- heartbeat, cancellation, progress -------------------------------------------------

    def _beat_loop(self) -> None:
        """Refresh the heartbeat from its own thread and connection, so a main loop that waits
        (for SQLite's write lock, a slow claim, a database restart) never looks dead."""
        interval = float(app_settings.HEARTBEAT_INTERVAL)
        stalled_after = float(app_settings.LEASE_TIMEOUT)
        try:
            while not self._beat_stop.wait(interval):
                worker_id = self.worker_id
                if worker_id is None:
                    continue
                if time.monotonic() - self._alive_at > stalled_after:
                    # A main loop stuck this long is not waiting, it is hung: stop vouching
                    # for it so its tasks are rescued.
                    logger.error("main loop stalled; heartbeats paused until it moves")
                    continue
                status = "stopping" if self.stopping.is_set() else "running"
                try:
                    if not workers.heartbeat(worker_id, len(self.running), status, self.io_report):
                        self._lost_id = worker_id
                        self.wake.set()
                except _DB_ERRORS as exc:
                    logger.warning("heartbeat failed, retrying: %s", exc)
                    self._reset_connection()
        finally:
            connection.close()

    def _stop_heartbeats(self) -> None:
        self._beat_stop.set()
        if self._beat_thread is not None:
            self._beat_thread.join(10)

    def _heartbeat(self) -> None:
        """Main-loop work at the heartbeat interval: react to a lost worker row, save
        progress, honour cancel requests, release stray claims, rescue orphans."""
        assert self.worker_id is not None  # noqa: S101
        if self._lost_id is not None and self._lost_id == self.worker_id:
            self._lost_id = None
            self._declared_dead()
            return
        self._save_progress()
        for task_id, reason in workers.cancel_requests(self.worker_id, list(self.running)).items():
            self._cancel(task_id, reason)
        stray = workers.stray_claims(self.worker_id, list(self.running))
        if stray:
            logger.warning("releasing claims this worker is not running count=%s", len(stray))
            lifecycle.apply_outcomes(
                [
                    lifecycle.Outcome(t.id, t.lease_token, lifecycle.RELEASE, t.task_type)
                    for t in stray
                ]
            )
        maintenance.rescue_orphans()
        if time.monotonic() >= self._next_status:
            self._next_status = time.monotonic() + 60
            logger.info(
                "status name=%s running=%s completed=%s outcomes=%s lost=%s",
                self.name,
                len(self.running),
                self.stats.completed,
                self.stats.by_kind,
                self.stats.lost,
            )
            maintenance.forget_dead_workers()

    def _declared_dead(self) -> None:
        """Our worker row vanished: others may have rescued our tasks. Their outcomes will be
        fenced off anyway; cancel them so no work is wasted, and come back under a new id."""
        logger.warning("worker row missing (declared dead); cancelling tasks and re-registering")
        for task_id in list(self.running):
            self._cancel(task_id, InterruptReason.SHUTDOWN)
        self._register()

    def _cancel(self, task_id: int, reason: str) -> None:
        item = self.running.get(task_id)
        if item is None or item.ctx.is_cancelled():
            return
        item.ctx.cancel(reason)
        if reason not in INTERRUPTIONS:
            # A slow hook must not delay heartbeats: run it beside the loop.
            threading.Thread(
                target=executor.run_on_cancel,
                args=(item.ctx, item.definition),
                name=f"taskmill-on-cancel-{task_id}",
                daemon=True,
            ).start()
        if item.future is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(item.future.cancel)

    def _save_progress(self) -> None:
        reports = {}
        for task_id, item in self.running.items():
            values = item.ctx.progress.take_unsaved()
            if values is not None:
                reports[task_id] = values
        if reports:
            leases = {i: self.running[i].task.lease_token for i in reports}
            workers.save_progress(leases, reports)
            if signals.task_progress.receivers:
                for task_id, values in reports.items():
                    send_task_signal(
                        signals.task_progress,
                        self.running[task_id].task.task_type,
                        task_id=task_id,
                        fraction=values["progress"],
                        message=values["progress_message"],
                    )

    # --- PostgreSQL wake-ups ---------------------------------------------------------------

    def _listen(self) -> None:
        """LISTEN on a dedicated connection; any NOTIFY wakes the loop at once."""
        try:
            import psycopg
        except ImportError:
            logger.info("psycopg 3 not installed: waking by polling every %ss", self.poll_interval)
            return

        params = connection.get_connection_params()
        params.pop("cursor_factory", None)
        params.pop("context", None)
        while not self.stopping.is_set():
            try:
                with psycopg.connect(**params, autocommit=True) as conn:
                    conn.execute("LISTEN taskmill")
                    while not self.stopping.is_set():
                        for notice in conn.notifies(timeout=1.0, stop_after=1):
                            if notice.payload.isdigit() and int(notice.payload) >= BULK_ROWS:
                                self._bulk_arrived = True
                            self.wake.set()
            except Exception as exc:
                logger.debug("listen connection lost: %s", exc)
                self.stopping.wait(1.0)

    # --- shutdown --------------------------------------------------------------------------

    _deadline: float = 0.0

    def _shutdown(self) -> None:
        self.stopping.set()
        self._deadline = time.monotonic() + self.shutdown_timeout
        while self.running and time.monotonic() < self._deadline:
            self._alive_at = time.monotonic()
            try:
                self._write_outcomes()
                if time.monotonic() >= self._next_heartbeat:
                    self._heartbeat()
                    self._next_heartbeat = time.monotonic() + float(app_settings.HEARTBEAT_INTERVAL)
            except _DB_ERRORS as exc:
                logger.warning("database error during shutdown: %s", exc)
                self._reset_connection()
            self.wake.wait(0.05)
            self.wake.clear()
        for task_id in list(self.running):
            self._cancel(task_id, InterruptReason.SHUTDOWN)
        self._release_unfinished()
        for _ in self._threads:
            self.work.put(None)
        self._stop_heartbeats()
        if self.worker_id is not None:
            self._retrying(lambda: workers.deregister_worker(self.worker_id), attempts=3)
        logger.info("worker stopped name=%s completed=%s", self.name, self.stats.completed)

    def _release_unfinished(self) -> None:
        """Tasks still running at the deadline go back to pending (not failed, no retry spent)."""
        grace = time.monotonic() + 0.5  # let tasks that noticed cancellation report first
        while self.running and time.monotonic() < grace:
            self._retrying(self._write_outcomes, attempts=3)
            self.wake.wait(0.05)
            self.wake.clear()
        self._retrying(self._write_outcomes, attempts=3)
        leftovers = [
            lifecycle.Outcome(i.task.id, i.task.lease_token, lifecycle.RELEASE, i.task.task_type)
            for i in self.running.values()
        ]
        if leftovers:
            logger.info("releasing unfinished tasks count=%s", len(leftovers))
            self._retrying(lambda: lifecycle.apply_outcomes(leftovers), attempts=3)
            self.running.clear()

    # --- resilience ------------------------------------------------------------------------

    def _guarded(self, func: Any) -> Any:
        try:
            return func()
        except _DB_ERRORS as exc:
            logger.warning("database error: %s", exc)
            self._reset_connection()
            return None

    def _retrying(self, func: Any, attempts: int = 0) -> Any:
        """Call ``func`` until it succeeds (forever when attempts=0), backing off on DB errors."""
        delay, tries = 0.5, 0
        while True:
            try:
                return func()
            except _DB_ERRORS as exc:
                tries += 1
                if attempts and tries >= attempts:
                    logger.error("giving up after %s attempts: %s", tries, exc)
                    return None
                logger.warning("database error, retrying in %.1fs: %s", delay, exc)
                self._reset_connection()
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    @staticmethod
    def _reset_connection() -> None:
        try:
            connection.close()
        except _DB_ERRORS:
            pass
        close_old_connections()
