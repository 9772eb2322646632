"""Upkeep: the periodic work any live worker does for the cluster, off the claim path.

Rescuing orphans, lifting pauses, firing schedules, sweeping expired tasks, pruning history,
refreshing planner statistics and forgetting long-dead workers run here, on a thread and a
database connection of their own, as a table of timers. None of it may delay a claim or a
heartbeat (RELIABILITY G12), and each job works in bounded batches under a time budget per
round: a million history rows to prune take many short rounds, never one long transaction, and
the other timers still run between them.

Every job is safe to run on many workers at once (row locks with SKIP LOCKED, unique ticks,
fenced updates), so each worker simply runs all of them.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from django.db import DatabaseError, InterfaceError, connection

from ..conf import app_settings
from ..store import control, maintenance, recurring
from .connections import mark_worker_thread

logger = logging.getLogger(__name__)

# Seconds of work per round before the thread looks at its timers again; a job that is not
# done (a large prune) continues in the next round.
ROUND_BUDGET = 0.5
# Seconds after which an unfinished job continues.
CONTINUE_AFTER = 0.05
# Seconds before a job that met a database error is tried again (at most its own interval).
RETRY_AFTER = 2.0


@dataclass
class Timer:
    """One periodic job. ``run`` gets the round's deadline (``time.monotonic()``) and returns
    True when it did something the claim loop should look at at once (new work), False when
    done, or None when it stopped at the deadline and wants to continue soon."""

    name: str
    every: float
    run: Callable[[float], bool | None]
    next_at: float = 0.0


class Upkeep:
    """Runs the timers on its own thread; ``wake`` tells the claim loop about new work."""

    def __init__(
        self,
        wake: Callable[[], None],
        status_line: Callable[[], None],
        rescuer: Callable[[], uuid.UUID | None],
    ) -> None:
        self._wake = wake
        self._stop = threading.Event()
        self._poke = threading.Event()
        self._thread: threading.Thread | None = None
        self._bulk_hint = False
        self._rescuer = rescuer
        tick = min(float(app_settings.POLL_INTERVAL), 1.0)
        heartbeat = float(app_settings.HEARTBEAT_INTERVAL)
        self.timers = {
            timer.name: timer
            for timer in (
                Timer("rescue", heartbeat, self._rescue),
                Timer("pauses", tick, _pauses),
                Timer("schedules", tick, _schedules),
                Timer("expiry", float(app_settings.EXPIRY_SWEEP_INTERVAL), _expiry),
                Timer("retention", 60.0, _retention),
                Timer("planner", 1.0, self._planner),
                Timer("workers", 60.0, _forget_workers),
                Timer("status", 60.0, lambda deadline: _status(status_line)),
            )
        }
        # The first status line comes after a minute, not at start (the banner says it all).
        self.timers["status"].next_at = time.monotonic() + 60.0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="taskmill-upkeep", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._poke.set()
        if self._thread is not None:
            self._thread.join(10)

    def request(self, name: str) -> None:
        """Run timer ``name`` at the next round (a bulk submission arrived, retention is due)."""
        self.timers[name].next_at = 0.0
        self._poke.set()

    def _rescue(self, deadline: float) -> bool:
        rescuer = self._rescuer()
        if rescuer is None:
            return False  # not healthy ourselves: leave rescuing to others for now
        return maintenance.rescue_orphans(rescuer=rescuer) > 0

    def bulk_arrived(self) -> None:
        """A large batch was just submitted: check the planner statistics at once."""
        self._bulk_hint = True
        self.request("planner")

    def _planner(self, deadline: float) -> bool:
        """Claims planned with statistics of a nearly empty table sort every pending row
        instead of walking the dispatch index: analyze once the table changed a lot. The
        submitter's counters can reach ``pg_stat_user_tables`` a moment after its NOTIFY, so a
        batch that changed nothing yet is looked at again shortly."""
        hinted, self._bulk_hint = self._bulk_hint, False
        if not maintenance.refresh_planner_stats() and hinted:
            self.timers["planner"].next_at = time.monotonic() + 0.25
        return False

    def run_due_now(self) -> int:
        """Run the jobs that can make tasks runnable (pauses, schedules) in the calling thread;
        how many reported new work. A burst worker asks before it leaves."""
        deadline = time.monotonic() + ROUND_BUDGET
        return sum(
            bool(self._call(self.timers[name], deadline)) for name in ("pauses", "schedules")
        )

    def _run(self) -> None:
        mark_worker_thread()
        try:
            while not self._stop.is_set():
                self._round()
                self._poke.wait(self._sleep_time())
                self._poke.clear()
        finally:
            connection.close()

    def _round(self) -> None:
        deadline = time.monotonic() + ROUND_BUDGET
        for timer in self.timers.values():
            if self._stop.is_set():
                return
            now = time.monotonic()
            if now < timer.next_at:
                continue
            if now >= deadline:
                return  # the rest run in the next round
            result = self._call(timer, deadline)
            if result is None:
                timer.next_at = time.monotonic() + CONTINUE_AFTER
            elif timer.next_at <= now:  # not rescheduled by a failure
                timer.next_at = now + timer.every
            if result:
                self._wake()

    def _call(self, timer: Timer, deadline: float) -> bool | None:
        try:
            return timer.run(deadline)
        except (DatabaseError, InterfaceError) as exc:
            logger.warning("%s: database error, retrying: %s", timer.name, exc)
            _reset_connection()
        except Exception:
            # A bug or bad data in one job must not stop upkeep (nor the worker).
            logger.exception("%s failed; retrying later", timer.name)
        timer.next_at = time.monotonic() + min(RETRY_AFTER, timer.every)
        return False

    def _sleep_time(self) -> float:
        soonest = min(timer.next_at for timer in self.timers.values())
        return min(max(soonest - time.monotonic(), 0.0), 1.0)


def _pauses(deadline: float) -> bool:
    """Timed group pauses that ran out, and preemption: re-applied while a preemptor is active
    (a task claimed under a policy older than the urgent submission escaped it), lifted when
    none is left."""
    resumed = bool(control.resume_expired_group_pauses())
    preemptor = control.preemptor_priority()
    if preemptor is None:
        resumed = control.resume_preempted() > 0 or resumed
    else:
        control.preempt_below(preemptor)
    return resumed


def _schedules(deadline: float) -> bool:
    return recurring.fire_due_schedules() > 0


def _expiry(deadline: float) -> bool:
    maintenance.expire_due()
    return False


def _retention(deadline: float) -> bool | None:
    if not app_settings.RETENTION:
        return False
    maintenance.apply_retention(deadline)
    return None if time.monotonic() >= deadline else False


def _forget_workers(deadline: float) -> bool:
    maintenance.forget_dead_workers()
    return False


def _status(status_line: Callable[[], None]) -> bool:
    status_line()
    return False


def _reset_connection() -> None:
    try:
        connection.close()
    except (DatabaseError, InterfaceError):
        pass
