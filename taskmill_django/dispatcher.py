"""One worker process, put together from parts that each do one job on their own thread:

- ``worker.loop.ClaimLoop`` (the main thread): write outcomes, claim, hand tasks to the pool;
- ``worker.pool.TaskPool``: threads for sync task bodies, an event loop for async ones;
- ``worker.heartbeat.Heartbeat``: the lease, progress, cancel requests, lost leases, fencing;
- ``worker.listener.Listener`` (PostgreSQL): wake-ups on NOTIFY;
- ``worker.upkeep.Upkeep``: rescue, pauses, schedules, expiry, retention, statistics.

The heartbeat, listener and upkeep have database connections of their own, so none of them
waits on the claim loop or on each other. ``runtaskmill`` only parses flags and calls
``Dispatcher.run``.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import DatabaseError, InterfaceError, connection

from . import registry
from .conf import app_settings
from .enums import InterruptReason
from .exceptions import ValidationError
from .store import lifecycle, maintenance, recurring, workers
from .worker import connections
from .worker.heartbeat import Heartbeat, Identity
from .worker.listener import Listener, listen_alias
from .worker.loop import DB_ERRORS, ClaimLoop, reset_connection
from .worker.pool import Running, TaskPool
from .worker.upkeep import Upkeep

logger = logging.getLogger(__name__)


@dataclass
class DispatcherOptions:
    concurrency: int = 4
    domains: Sequence[str] | None = None
    name: str = ""
    burst: bool = False
    shutdown_timeout: float | None = None
    poll_interval: float | None = None
    install_signal_handlers: bool = True
    # Stop gracefully (for a supervisor to start a fresh process) after claiming this many
    # tasks, or once resident memory passes this many MB.
    max_tasks: int | None = None
    max_memory_mb: float | None = None


class Dispatcher:
    """One worker process. Safe to run many, on many machines, against one database."""

    def __init__(self, options: DispatcherOptions) -> None:
        if options.concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.options = options
        self.name = options.name or f"{socket.gethostname()}:{os.getpid()}"
        self.stopping = threading.Event()
        self.identity = Identity(
            self.name, os.getpid(), options.concurrency, list(options.domains or []) or None
        )
        self.running = Running()
        self.loop = ClaimLoop(
            identity=self.identity,
            running=self.running,
            pool=TaskPool(options.concurrency, lambda e, o: self.loop.report(e, o)),
            concurrency=options.concurrency,
            domains=options.domains,
            burst=options.burst,
            poll_interval=self.poll_interval,
            stopping=self.stopping,
            on_maintenance_due=lambda: self.upkeep.run_due_now(),
            on_retention_due=lambda: self.upkeep.request("retention"),
            on_recycle=self._recycle,
            max_tasks=options.max_tasks,
            max_memory_mb=options.max_memory_mb,
        )
        self.pool = self.loop.pool
        self.upkeep = Upkeep(
            wake=self.loop.wake.set,
            status_line=self._status_line,
            rescuer=lambda: self.heartbeat.rescuer(),
        )
        self.heartbeat = Heartbeat(
            self.identity,
            self.running,
            self.pool,
            stopping=self.stopping,
            loop_alive_at=lambda: self.loop.alive_at,
            io_report=lambda: self.loop.io_report,
            wake=self.loop.wake.set,
            saved_progress=self.loop.progress_saved,
        )
        self.listener: Listener | None = None
        # A second interrupt: release running tasks now, also when it arrives before the
        # shutdown wait has begun.
        self._release_now = threading.Event()

    @property
    def worker_id(self) -> Any:
        return self.identity.worker_id

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
        alias = listen_alias()
        connections.install(tuple({"default", alias or "default"}))
        connections.mark_worker_thread()
        connection.close()  # reopened with the worker's bounds at its next query
        self._retrying(self.identity.register)
        self._banner(alias)
        self._guarded(maintenance.rescue_orphans)
        self._guarded(maintenance.settle_stale_dependencies)
        self._sync_schedules()
        self.pool.start()
        self.heartbeat.start()
        self.upkeep.start()
        if alias is not None:
            self.listener = Listener(alias, self.loop.wake.set, self.upkeep.bulk_arrived)
            self.listener.start()
        try:
            self.loop.run()
        finally:
            self._shutdown()
        return 0

    def stop(self) -> None:
        if not self.stopping.is_set():
            logger.info(
                "worker stopping name=%s running=%s: waiting up to %ss for running tasks "
                "(interrupt again to release them now)",
                self.name,
                len(self.running),
                f"{self.shutdown_timeout:g}",
            )
        self.stopping.set()
        self.loop.wake.set()

    def _recycle(self, why: str) -> None:
        if not self.stopping.is_set():
            logger.info("worker recycling name=%s: %s", self.name, why)
        self.stop()

    def _install_signal_handlers(self) -> None:
        def handle(signum: int, frame: Any) -> None:
            if self.stopping.is_set() and signum == signal.SIGINT:
                logger.warning("second interrupt: releasing running tasks now")
                self._release_now.set()
                self.loop.wake.set()
            self.stop()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    def _banner(self, listen: str | None) -> None:
        types = sorted(
            d.task_type
            for d in registry.all_tasks()
            if not self.options.domains or d.domain.name in self.options.domains
        )
        logger.info(
            "worker started name=%s id=%s concurrency=%s domains=%s database=%s wake=%s "
            "heartbeat=%ss lease=%ss task_types=%s",
            self.name,
            self.identity.worker_id,
            self.options.concurrency,
            ",".join(self.options.domains or []) or "all",
            connection.vendor,
            "listen" if listen else f"poll every {self.poll_interval:g}s",
            app_settings.HEARTBEAT_INTERVAL,
            app_settings.LEASE_TIMEOUT,
            ",".join(types) or "none",
        )

    def _status_line(self) -> None:
        stats = self.loop.stats
        outcomes = ", ".join(f"{count} {kind}" for kind, count in sorted(stats.by_kind.items()))
        logger.info(
            "status name=%s running=%s completed=%s outcomes=%s lost_leases=%s",
            self.name,
            len(self.running),
            stats.completed,
            outcomes or "none yet",
            stats.lost,
        )

    def _sync_schedules(self) -> None:
        try:
            recurring.sync_declared_schedules()
        except (ValidationError, TypeError, ValueError) as exc:
            logger.error("declarative schedules not synced: %s", exc)
        except DB_ERRORS as exc:
            logger.warning("declarative schedules not synced (database error): %s", exc)
            reset_connection()

    # --- shutdown --------------------------------------------------------------------------

    def _shutdown(self) -> None:
        """Stop claiming; give running tasks ``shutdown_timeout`` to finish while their
        outcomes are written (the heartbeat keeps the leases); then release the rest."""
        self.stopping.set()
        if self.listener is not None:
            self.listener.stop()
        self.upkeep.stop()
        deadline = time.monotonic() + self.shutdown_timeout
        while self.running and time.monotonic() < deadline and not self._release_now.is_set():
            self.loop.alive_at = time.monotonic()
            self._guarded(self.loop.write_pending)
            self.loop.wake.wait(0.05)
            self.loop.wake.clear()
        for execution in self.running.snapshot():
            self.pool.cancel(execution, InterruptReason.SHUTDOWN)
        self._release_unfinished()
        self.pool.stop()
        self._retrying(self.loop.counts.flush, attempts=3)
        self.heartbeat.stop()
        if self.identity.worker_id is not None:
            worker_id = self.identity.worker_id
            self._retrying(lambda: workers.deregister_worker(worker_id), attempts=3)
        connections.uninstall()
        logger.info("worker stopped name=%s completed=%s", self.name, self.loop.stats.completed)

    def _release_unfinished(self) -> None:
        """Tasks still running at the deadline go back to pending (not failed, no retry spent)."""
        grace = time.monotonic() + 0.5  # let tasks that noticed the shutdown report first
        while self.running and time.monotonic() < grace:
            self._retrying(self.loop.write_pending, attempts=3)
            self.loop.wake.wait(0.05)
            self.loop.wake.clear()
        self._retrying(self.loop.write_pending, attempts=3)
        leftovers = [
            lifecycle.Outcome(e.task.id, e.task.lease_token, lifecycle.RELEASE, e.task.task_type)
            for e in self.running.snapshot()
            if not e.reported and e.task.lease_token is not None
        ]
        if leftovers:
            logger.info("releasing unfinished tasks count=%s", len(leftovers))
            self._retrying(lambda: lifecycle.apply_outcomes(leftovers), attempts=3)
            for outcome in leftovers:
                self.running.discard(outcome.task_id, outcome.lease_token)

    # --- resilience ------------------------------------------------------------------------

    def _guarded(self, func: Any) -> Any:
        try:
            return func()
        except DB_ERRORS as exc:
            logger.warning("database error: %s", exc)
            reset_connection()
            return None

    def _retrying(self, func: Any, attempts: int = 0) -> Any:
        """Call ``func`` until it succeeds (forever when attempts=0), backing off on DB errors."""
        delay, tries = 0.5, 0
        while True:
            try:
                return func()
            except (DatabaseError, InterfaceError) as exc:
                tries += 1
                if attempts and tries >= attempts:
                    logger.error("giving up after %s attempts: %s", tries, exc)
                    return None
                logger.warning("database error, retrying in %.1fs: %s", delay, exc)
                reset_connection()
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
