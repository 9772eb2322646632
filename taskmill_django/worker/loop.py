"""The claim loop: write the outcomes of finished bodies and claim the next tasks, one short
transaction per cycle, then hand the claimed tasks to the pool.

This is the worker's hot path, and the only thing its main thread does: heartbeats, wake-ups
and maintenance run on threads and connections of their own, so nothing here waits on them and
they never wait on this (RELIABILITY G12).

One bad outcome never blocks the others or the next claim (G11): text is made storable before
it gets here, and if a batch is still refused as bad data, its outcomes are written one by one
and the one the database refuses is recorded as failed with the reason.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import (
    DatabaseError,
    DataError,
    IntegrityError,
    InterfaceError,
    connection,
    transaction,
)

from .. import executor, signals
from ..conf import app_settings
from ..enums import InterruptReason
from ..models import Task
from ..policy import io, pressure
from ..policy.config import Policy
from ..storable import storable_text
from ..store import control, counters, cycle, lifecycle, workers
from ..store.claim import ClaimState
from ..store.db import send_task_signal
from .heartbeat import Identity
from .pool import Execution, Running, TaskPool

logger = logging.getLogger(__name__)
# One line per task start and end (``runtaskmill -v 2`` turns it on); never payload values.
tasks_logger = logging.getLogger("taskmill_django.tasks")
# Tasks shorter than this on average (ms) are claimed ahead (see ClaimLoop._ahead).
SHORT_TASK_MS = 50

DB_ERRORS = (DatabaseError, InterfaceError)
# What a driver raises for a value it cannot send or the database refuses as data: checked
# before the connection-level errors, which are retried as they are.
DATA_ERRORS = (DataError, IntegrityError, ValueError, TypeError, OverflowError)


@dataclass
class Stats:
    """Counts since this worker started, for its status lines."""

    completed: int = 0
    lost: int = 0
    since_prune: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


class ClaimLoop:
    """Outcomes in, claims out. ``run()`` returns when stopping, or with ``burst`` once nothing
    is runnable."""

    def __init__(
        self,
        *,
        identity: Identity,
        running: Running,
        pool: TaskPool,
        concurrency: int,
        domains: Sequence[str] | None,
        burst: bool,
        poll_interval: float,
        stopping: threading.Event,
        on_maintenance_due: Callable[[], int],
        on_retention_due: Callable[[], None],
        on_recycle: Callable[[str], None],
        max_tasks: int | None = None,
        max_memory_mb: float | None = None,
    ) -> None:
        self.identity = identity
        self.running = running
        self.pool = pool
        self.concurrency = concurrency
        self.domains = domains
        self.burst = burst
        self.poll_interval = poll_interval
        self.stopping = stopping
        self._maintenance_due = on_maintenance_due
        self._retention_due = on_retention_due
        self._recycle = on_recycle
        self.max_tasks = max_tasks
        self.max_memory_mb = max_memory_mb
        self.claimed_total = 0
        # Average run time of recent tasks (ms, moving average); long until one has run.
        self._task_ms = float(SHORT_TASK_MS) * 2
        self._report_lock = threading.Lock()
        self.wake = threading.Event()
        self.stats = Stats()
        self.alive_at = time.monotonic()  # last pass, watched by the heartbeat
        self.policy: Policy | None = None
        self._next_policy = 0.0
        # What this worker's claims carry from one to the next; what was learnt under a policy
        # is dropped when _refresh_policy loads the next one.
        self.claim_state = ClaimState()
        self._outcomes: queue.SimpleQueue[lifecycle.Outcome] = queue.SimpleQueue()
        self._unwritten: list[lifecycle.Outcome] = []
        # Counts of written outcomes not yet stored (see counters.Buffered).
        self.counts = counters.Buffered(float(app_settings.COUNTER_FLUSH_INTERVAL))
        self._progress: queue.SimpleQueue[list[tuple[Execution, dict[str, Any]]]] = (
            queue.SimpleQueue()
        )
        self._check_strays = False
        self._pressure_sources = pressure.load_sources(
            list(app_settings.PRESSURE_SOURCES or []), bool(app_settings.RESOURCE_MONITORING)
        )
        self._io_capacity = io.parse_capacity(app_settings.IO_CAPACITY)
        self._io_meter = (
            io.load_meter(app_settings.IO_SAMPLER) if app_settings.RESOURCE_MONITORING else None
        )
        self.io_report: dict[str, Any] | None = None

    # --- reported by the pool ------------------------------------------------------------

    def progress_saved(self, saved: list[tuple[Execution, dict[str, Any]]]) -> None:
        """Progress the heartbeat just saved (its thread): ``task_progress`` is sent from this
        loop, so a slow receiver never delays a heartbeat."""
        if signals.task_progress.receivers:
            self._progress.put(saved)
            self.wake.set()

    def report(self, execution: Execution, outcome: lifecycle.Outcome) -> None:
        """A body finished (any pool thread), or was given up on at its time limit: queue its
        outcome (the first one only) and wake the loop."""
        with self._report_lock:
            if execution.reported:
                return
            execution.reported = True
        self._outcomes.put(outcome)
        self.wake.set()

    # --- the loop ----------------------------------------------------------------------

    def run(self) -> None:
        backoff = 0.5
        while not self.stopping.is_set():
            self.alive_at = time.monotonic()
            try:
                idle = self.step()
                backoff = 0.5
            except DB_ERRORS as exc:
                logger.warning("database error, retrying in %.1fs: %s", backoff, exc)
                reset_connection()
                self._check_strays = True  # did the failed cycle's claim commit?
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            if idle is None:
                return  # burst: nothing left
            if idle:
                self.wake.wait(self._sleep_time())
                self.wake.clear()
            self._gather()

    def _gather(self) -> None:
        """While bodies run, let their outcomes pile up for a moment before the next cycle.

        Every cycle costs a transaction (BEGIN, a planned claim, a COMMIT with its WAL
        flush) whatever it carries. Bodies that do any I/O hand the GIL over, so this loop
        would otherwise wake for each one or two that finished and pay a whole cycle to
        write them and claim one or two more. Waiting up to ``COALESCE_WINDOW`` for the rest
        of the pool (an idle worker, or one whose every body has reported, goes on at once)
        keeps batches large at the price of that much pickup delay for a busy worker.
        """
        window = float(app_settings.COALESCE_WINDOW)
        if window <= 0 or self._outcomes.empty():
            return
        deadline = time.monotonic() + window
        while any(not e.reported for e in self.running.snapshot()):
            left = deadline - time.monotonic()
            if left <= 0 or self.stopping.is_set():
                return
            self.wake.wait(left)
            self.wake.clear()

    def step(self) -> bool | None:
        """One cycle. True when idle, False when busy, None when a burst run is done."""
        now = time.monotonic()
        fresh_policy = now >= self._next_policy
        if fresh_policy:
            self._refresh_policy()
            self._next_policy = now + min(self.poll_interval, 1.0)
            self._check_memory()
        self._police_time_limits(now)
        if self._check_strays:
            self._release_strays()
        self._send_progress()
        batch = self._collect()
        worker_id = self.identity.worker_id
        assert worker_id is not None  # noqa: S101 - registered before the loop starts
        ahead = self._ahead()
        free = self.concurrency + ahead - (len(self.running) - len(batch))
        self.claim_state.held_per_slot = (self.concurrency + ahead) / self.concurrency
        limit = min(free, int(app_settings.CLAIM_BATCH_SIZE))
        if self.max_tasks is not None:
            limit = min(limit, self.max_tasks - self.claimed_total)
        try:
            # Outcomes of the last batch and the claim of the next share one short
            # transaction: one commit per cycle (on PostgreSQL one round trip for both).
            applied, claimed = cycle.write_and_claim(
                batch, worker_id, limit, self.domains, self.policy, self.claim_state, self.counts
            )
        except DATA_ERRORS as exc:
            self._write_one_by_one(batch, exc)
            return False  # claim in the next cycle
        self._account(batch, applied)
        for task in claimed:
            self._start(task)
        self.claimed_total += len(claimed)
        if self.max_tasks is not None and self.claimed_total >= self.max_tasks:
            self._recycle(f"it has run {self.claimed_total} tasks (--max-tasks)")
        if claimed and signals.task_dispatched.receivers:
            for task in claimed:
                send_task_signal(
                    signals.task_dispatched,
                    task.task_type,
                    task_id=task.id,
                    worker_id=worker_id,
                    priority=task.priority,
                    effective_priority=task.effective_priority,
                )
        if not claimed and self.claim_state.take_deferred():
            return False  # the claim gave way to a cluster-wide lock mode change: claim again
        if self.burst and not claimed and not self.running and self._outcomes.empty():
            if not fresh_policy or batch:
                # The policy may be stale (a preemptor just finished, perhaps in the outcomes
                # written after it was loaded): look again before leaving.
                self._next_policy = 0.0
                return False
            if self._maintenance_due():
                return False  # a schedule fired or a pause ended: there may be work now
            return None
        # Idle when every slot is busy (an outcome will wake us) or the queue had less than asked.
        return (free <= 0 or len(claimed) < free) and self._outcomes.empty()

    def _send_progress(self) -> None:
        while True:
            try:
                saved = self._progress.get_nowait()
            except queue.Empty:
                return
            for execution, values in saved:
                send_task_signal(
                    signals.task_progress,
                    execution.task.task_type,
                    task_id=execution.task_id,
                    fraction=values["progress"],
                    message=values["progress_message"],
                )

    def _ahead(self) -> int:
        """How many tasks to claim beyond the free threads: while tasks are short, the next
        ones wait in the pool's queue so the threads never idle through a claim's round
        trip. Long tasks are not claimed ahead: they would hold leases and cluster slots
        while they wait."""
        limit = app_settings.claim_ahead(self.concurrency)
        if limit <= 0 or self._task_ms > SHORT_TASK_MS:
            return 0
        return limit

    def _sleep_time(self) -> float:
        until = self._next_policy
        for execution in self.running.snapshot():
            if not execution.reported:
                until = min(until, execution.stop_by or execution.deadline or until)
        return max(min(self.poll_interval, until - time.monotonic()), 0.0)

    def _start(self, task: Task) -> None:
        ctx, definition = executor.build_context(task)
        execution = Execution(task, ctx, definition)
        self.running.add(execution)
        if tasks_logger.isEnabledFor(logging.INFO):
            tasks_logger.info(
                "task started task_id=%s type=%s attempt=%s",
                task.id,
                task.task_type,
                task.retry_count + 1,
                extra={
                    "fields": {
                        "event": "task_started",
                        "task_id": task.id,
                        "task_type": task.task_type,
                        "attempt": task.retry_count + 1,
                    }
                },
            )
        self.pool.submit(execution)

    # --- time limits and recycling -----------------------------------------------------

    def _police_time_limits(self, now: float) -> None:
        """Ask bodies past their time limit to stop; give up on those that ignore it for
        ``TIMEOUT_GRACE`` seconds: their slot goes to a fresh thread and the attempt is
        recorded as timed out now."""
        for execution in self.running.snapshot():
            if execution.reported or execution.deadline is None or now < execution.deadline:
                continue
            if execution.stop_by is None:
                if self.pool.cancel(execution, InterruptReason.TIMEOUT):
                    logger.warning(
                        "time limit reached task_id=%s type=%s limit=%ss: asked to stop",
                        execution.task_id,
                        execution.task.task_type,
                        f"{execution.task.timeout_seconds:g}",
                    )
                execution.stop_by = now + float(app_settings.TIMEOUT_GRACE)
            elif (
                now >= execution.stop_by and execution.ctx.cancel_reason == InterruptReason.TIMEOUT
            ):
                outcome = executor.timed_out(execution.task, execution.definition)
                outcome.duration_ms = int((now - (execution.started or now)) * 1000)
                self.report(execution, outcome)
                self.pool.abandon(execution)
                logger.warning(
                    "abandoned task_id=%s type=%s: it ignored its time limit for %ss; its slot "
                    "is freed, its thread left to end on its own (--max-tasks or --max-memory "
                    "let a supervisor recycle this worker)",
                    execution.task_id,
                    execution.task.task_type,
                    app_settings.TIMEOUT_GRACE,
                )

    def _check_memory(self) -> None:
        if self.max_memory_mb is None:
            return
        used = resident_mb()
        if used is not None and used > self.max_memory_mb:
            self._recycle(f"it uses {used:.0f} MB (--max-memory {self.max_memory_mb:g})")

    # --- outcomes ------------------------------------------------------------------------

    def _collect(self) -> list[lifecycle.Outcome]:
        """Outcomes not yet written: leftovers of a failed write plus newly reported ones."""
        while True:
            try:
                self._unwritten.append(self._outcomes.get_nowait())
            except queue.Empty:
                return list(self._unwritten)

    def write_pending(self) -> None:
        """Write what was reported, without claiming (shutdown)."""
        batch = self._collect()
        if not batch:
            return
        try:
            with transaction.atomic(), self.counts.gathering():
                applied = lifecycle.apply_outcomes(batch)
            self._account(batch, applied)
        except DATA_ERRORS as exc:
            self._write_one_by_one(batch, exc)

    def _account(self, batch: list[lifecycle.Outcome], applied: lifecycle.Applied) -> None:
        """After commit: forget written (or fenced-off) tasks and update counters."""
        self._unwritten = self._unwritten[len(batch) :]
        lost = {o.task_id for o in applied.lost}
        for outcome in batch:
            if outcome.duration_ms is not None:
                self._task_ms += (outcome.duration_ms - self._task_ms) * 0.1
            execution = self.running.get(outcome.task_id)
            self.running.discard(outcome.task_id, outcome.lease_token)
            kind = str(outcome.kind)
            self.stats.by_kind[kind] = self.stats.by_kind.get(kind, 0) + 1
            if tasks_logger.isEnabledFor(logging.INFO):
                _log_end(outcome, execution, "lease lost" if outcome.task_id in lost else kind)
        self.stats.lost += len(applied.lost)
        self.stats.completed += sum(1 for o in applied.written if o.kind == lifecycle.COMPLETED)
        self.stats.since_prune += len(applied.written)
        if app_settings.RETENTION and self.stats.since_prune >= int(app_settings.PRUNE_INTERVAL):
            self.stats.since_prune = 0
            self._retention_due()

    def _write_one_by_one(self, batch: list[lifecycle.Outcome], exc: Exception) -> None:
        """A batch the database refused as data: write each outcome alone, so only the bad one
        is affected, and record that one as failed with the reason."""
        logger.error(
            "outcome batch refused (%s: %s); writing its %s outcome(s) one by one",
            type(exc).__name__,
            storable_text(exc, 500),
            len(batch),
        )
        for outcome in batch:
            try:
                applied = lifecycle.apply_outcomes([outcome])
            except DATA_ERRORS as refused:
                applied = self._write_refused(outcome, refused)
            self._account([outcome], applied)

    @staticmethod
    def _write_refused(outcome: lifecycle.Outcome, refused: Exception) -> lifecycle.Applied:
        reason = storable_text(f"{type(refused).__name__}: {storable_text(refused)}", 500)
        logger.error("outcome of task_id=%s could not be stored: %s", outcome.task_id, reason)
        failed = lifecycle.Outcome(
            outcome.task_id,
            outcome.lease_token,
            lifecycle.FAILED,
            outcome.task_type,
            error=f"the outcome of this attempt could not be stored ({reason})",
            duration_ms=outcome.duration_ms,
        )
        try:
            return lifecycle.apply_outcomes([failed])
        except DATA_ERRORS as again:  # not even the plain record: give the outcome up
            logger.error("task_id=%s: failure record refused too: %s", outcome.task_id, again)
            return lifecycle.Applied([], [outcome])

    def _release_strays(self) -> None:
        """After a failed cycle: rows its claim may have committed that nothing runs here go
        back to pending (they would otherwise wait for this worker's lease to run out)."""
        worker_id = self.identity.worker_id
        assert worker_id is not None  # noqa: S101
        stray = workers.stray_claims(worker_id, [e.task_id for e in self.running.snapshot()])
        self._check_strays = False
        if stray:
            logger.warning("releasing claims this worker is not running count=%s", len(stray))
            lifecycle.apply_outcomes(
                [
                    lifecycle.Outcome(t.id, t.lease_token, lifecycle.RELEASE, t.task_type)
                    for t in stray
                    if t.lease_token is not None
                ]
            )

    # --- policy ----------------------------------------------------------------------------

    def _refresh_policy(self) -> None:
        self.policy = control.load_policy(
            pressure.measure(self._pressure_sources), self._measure_io()
        )

    def _measure_io(self) -> tuple[tuple[str, int], ...]:
        """Fold a new IO reading into the averages; the byte budget of each busy direction
        (none without RESOURCE_MONITORING)."""
        if self._io_meter is None:
            return ()
        rates = self._io_meter.update(time.monotonic())
        self.io_report = io.report(rates, self._io_capacity)
        return tuple(sorted(io.budget(rates, self._io_capacity).items()))


def _log_end(outcome: lifecycle.Outcome, execution: Execution | None, kind: str) -> None:
    tasks_logger.info(
        "task finished task_id=%s type=%s outcome=%s duration=%sms",
        outcome.task_id,
        outcome.task_type,
        kind,
        outcome.duration_ms,
        extra={
            "fields": {
                "event": "task_finished",
                "task_id": outcome.task_id,
                "task_type": outcome.task_type,
                "outcome": kind,
                "duration_ms": outcome.duration_ms,
            }
        },
    )


def resident_mb() -> float | None:
    """This process's resident memory in MB (Linux ``/proc``; None where unknown)."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 1_048_576


def reset_connection() -> None:
    """Drop this thread's connection after an error (the next query reconnects)."""
    try:
        connection.close()
    except DB_ERRORS:
        pass
