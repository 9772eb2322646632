"""Schedule ticks across three workers while they are SIGKILLed and restarted (G5).

Two schedules fire every second, one with ``catch_up`` and one without. Whatever the kills do,
every occurrence (a slot on the schedule's grid) is submitted at most once: no two history rows
carry the same tick. With ``catch_up`` nothing is skipped silently either: every slot from the
first tick up to the schedule's next one was submitted or counted in ``skipped_count`` (pile-up
prevention, the only documented reason to skip). Without it, missed slots collapse into the next
one, so only "at most once, on the grid" holds. Every submitted occurrence completes, and runs
twice only when a worker running it was killed.

Set TASKMILL_CHAOS_SEED to replay a run.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import pytest

from taskmill_django.cron import RecurringSchedule
from taskmill_django.enums import HistoryStatus
from taskmill_django.models import Schedule, ScheduleTick, Task, TaskHistory
from taskmill_django.store.recurring import set_paused
from tests.conftest import TaskLog, WorkerProcess, wait_until
from tests.testapp.tasks import record

pytestmark = pytest.mark.django_db(transaction=True)


def start_schedule(n: int, catch_up: bool) -> tuple[int, datetime]:
    """A schedule of ``record(n=n)`` every second; returns its id and first tick."""
    outcome = record.using(
        recurring=RecurringSchedule(interval=1, catch_up=catch_up), key=f"ticks-{n}"
    ).submit(n=n)
    assert outcome.schedule_id is not None
    first = ScheduleTick.objects.filter(schedule_id=outcome.schedule_id).get()
    return outcome.schedule_id, first.tick_at


@dataclass
class TickChaos:
    workers: int
    kill_every: float
    kill_for: float
    seed: int = field(
        default_factory=lambda: int(os.environ.get("TASKMILL_CHAOS_SEED", random.randrange(10**6)))
    )
    killed: list[int] = field(default_factory=list)

    def run(self, worker_factory: Callable[..., WorkerProcess]) -> list[WorkerProcess]:
        rng = random.Random(self.seed)
        alive = [worker_factory("--concurrency", "1") for _ in range(self.workers)]
        stop = time.monotonic() + self.kill_for
        while time.monotonic() < stop:
            time.sleep(self.kill_every * rng.uniform(0.5, 1.5))
            victim = alive.pop(rng.randrange(len(alive)))
            victim.kill()
            victim.wait(30)
            self.killed.append(victim.pid)
            alive.append(worker_factory("--concurrency", "1"))
        time.sleep(2.0)  # a quiet stretch: the survivors keep the schedules going
        return alive

    def violations(
        self, task_log: TaskLog, schedule_id: int, n: int, first: datetime, exact: bool
    ) -> list[str]:
        found: list[str] = []
        schedule = Schedule.objects.get(id=schedule_id)
        rows = list(TaskHistory.objects.filter(payload__n=n))
        # Each occurrence is submitted under a key naming its tick: two rows with one key would
        # be one tick fired twice.
        keys = [row.key for row in rows]
        if len(keys) != len(set(keys)):
            found.append(f"schedule {schedule_id}: a tick was submitted twice: {sorted(keys)}")
        if len(rows) != schedule.occurrence_count:
            found.append(
                f"schedule {schedule_id}: {len(rows)} tasks, "
                f"occurrence_count={schedule.occurrence_count}"
            )
        # The newest tick rows (all of them in a short run) link each tick to its task.
        ticks = dict(
            ScheduleTick.objects.filter(schedule_id=schedule_id).values_list("tick_at", "task_id")
        )
        off_grid = [t for t in ticks if (t - first).total_seconds() % 1.0]
        if off_grid:
            found.append(f"schedule {schedule_id}: ticks off the 1 s grid: {off_grid[:10]}")
        unknown = set(ticks.values()) - {row.id for row in rows}
        if unknown:
            found.append(f"schedule {schedule_id}: ticks point at no history row: {unknown}")
        if exact and schedule.next_run_at is not None:
            # With catch_up, next_run_at moves one slot per occurrence fired or skipped.
            slots = round((schedule.next_run_at - first).total_seconds())
            if slots != schedule.occurrence_count + schedule.skipped_count:
                found.append(
                    f"schedule {schedule_id}: {slots} slots passed, {schedule.occurrence_count}"
                    f" fired, {schedule.skipped_count} skipped by pile-up prevention"
                )
        not_completed = [(r.id, r.status) for r in rows if r.status != HistoryStatus.COMPLETED]
        if not_completed:
            found.append(f"schedule {schedule_id}: not completed: {not_completed[:10]}")
        killed = set(self.killed)
        runs: dict[int, list[int]] = {}
        for event in task_log.events("run"):
            runs.setdefault(event["task_id"], []).append(event["pid"])
        for row in rows:
            pids = runs.get(row.id, [])
            if not pids:
                found.append(f"task {row.id} completed without running")
            elif sum(pid not in killed for pid in pids) > 1:
                found.append(f"task {row.id} ran twice on surviving workers: {pids}")
        return found


def run_tick_chaos(worker_factory, task_log, chaos: TickChaos, min_ticks: int) -> None:
    exact, exact_first = start_schedule(1, catch_up=True)
    collapsing, collapsing_first = start_schedule(2, catch_up=False)
    survivors = chaos.run(worker_factory)
    for schedule_id in (exact, collapsing):
        set_paused(schedule_id, True)
    # Paused under the schedule's row lock: no occurrence can be submitted after this point.
    wait_until(lambda: not Task.objects.exists(), timeout=60)

    counts = Schedule.objects.values_list("id", "occurrence_count", "skipped_count")
    report = f"seed={chaos.seed} killed={chaos.killed} (id, fired, skipped)={list(counts)}"
    print(report)  # shown with -s, and on failure
    violations = chaos.violations(task_log, exact, 1, exact_first, exact=True)
    violations += chaos.violations(task_log, collapsing, 2, collapsing_first, exact=False)
    for worker in survivors:
        if worker.proc.poll() is not None:
            violations.append(f"worker {worker.pid} exited:\n{worker.output()[-3000:]}")
    assert not violations, f"{report}\n" + "\n".join(violations)
    fired = TaskHistory.objects.filter(payload__n=1).count()
    assert fired >= min_ticks, f"{report}: only {fired} ticks fired"
    assert len(chaos.killed) >= 3, report


def test_schedules__one_task_per_tick_across_three_workers_killed_and_restarted(
    worker_factory, task_log
):
    chaos = TickChaos(workers=3, kill_every=1.5, kill_for=9.0)
    run_tick_chaos(worker_factory, task_log, chaos, min_ticks=5)


@pytest.mark.chaos
def test_schedules__one_task_per_tick_over_two_minutes_of_kills(worker_factory, task_log):
    chaos = TickChaos(workers=3, kill_every=1.0, kill_for=120.0)
    run_tick_chaos(worker_factory, task_log, chaos, min_ticks=60)
