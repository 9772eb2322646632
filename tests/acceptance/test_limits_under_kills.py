"""Cluster limits while workers are SIGKILLed and restarted (G6).

An execution ledger (tests/testapp/tasks.py ``ledger``) records when each attempt began and
ended; an attempt cut short by a kill ends at the kill. From it: the global cap and a group's cap
are never exceeded at any instant, and a task type's token bucket never starts more than its
burst plus its rate over any stretch of time (claim times by the database clock). Afterwards, once
the killed workers' leases expired, the whole cap is usable again: no slot leaked.

Set TASKMILL_CHAOS_SEED to replay a run.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from taskmill_django import scheduler
from taskmill_django.enums import HistoryStatus, TaskStatus
from taskmill_django.models import Task, TaskHistory
from taskmill_django.policy.ratelimit import RateLimit
from tests.conftest import TaskLog, WorkerProcess, wait_until
from tests.testapp.tasks import ledger

pytestmark = pytest.mark.django_db(transaction=True)

CAP = 4
NARROW = 1  # the cap of group "narrow"


@dataclass
class Killer:
    workers: int
    concurrency: int
    kill_every: float
    kill_for: float
    seed: int = field(
        default_factory=lambda: int(os.environ.get("TASKMILL_CHAOS_SEED", random.randrange(10**6)))
    )
    kills: dict[int, float] = field(default_factory=dict)  # pid -> time.time() of the kill
    alive: list[WorkerProcess] = field(default_factory=list)

    def run(self, worker_factory: Callable[..., WorkerProcess], task_log: TaskLog) -> None:
        rng = random.Random(self.seed)
        flags = ("--concurrency", str(self.concurrency))
        self.alive = [worker_factory(*flags) for _ in range(self.workers)]
        stop = time.monotonic() + self.kill_for
        while time.monotonic() < stop and Task.objects.exists():
            time.sleep(self.kill_every * rng.uniform(0.5, 1.5))
            # A worker in the middle of an attempt, when there is one (soon, once they are
            # up): a kill that interrupts nothing tests nothing.
            deadline = time.monotonic() + 5.0
            while not (busy := self._busy(task_log)) and time.monotonic() < deadline:
                time.sleep(0.02)
            candidates = busy or self.alive
            victim = candidates[rng.randrange(len(candidates))]
            self.alive.remove(victim)
            victim.kill()
            self.kills[victim.pid] = time.time()
            victim.wait(30)
            self.alive.append(worker_factory(*flags))

    def _busy(self, task_log: TaskLog) -> list[WorkerProcess]:
        ended = {(e["pid"], e["task_id"]) for e in task_log.events("end")}
        running = {
            e["pid"] for e in task_log.events("begin") if (e["pid"], e["task_id"]) not in ended
        }
        return [w for w in self.alive if w.pid in running]

    def report(self) -> str:
        return f"seed={self.seed} killed={sorted(self.kills)}"


def attempts(task_log: TaskLog, kills: dict[int, float]) -> list[dict]:
    """Each attempt: its ``begin`` event with an ``until`` (its end, or its worker's kill)."""
    ends = {(e["pid"], e["task_id"]): e["at"] for e in task_log.events("end")}
    found = []
    for begin in task_log.events("begin"):
        until = ends.get((begin["pid"], begin["task_id"]), kills.get(begin["pid"]))
        assert until is not None, f"attempt neither ended nor was killed: {begin}"
        found.append({**begin, "until": until})
    return found


def most_at_once(runs: list[dict]) -> int:
    """The largest number of attempts running at one instant (an end before a start at a tie)."""
    edges = sorted([(r["at"], 1) for r in runs] + [(r["until"], -1) for r in runs])
    most = current = 0
    for _, step in edges:
        current += step
        most = max(most, current)
    return most


def assert_drained_and_completed(ids: list[int], killer: Killer) -> None:
    wait_until(lambda: not Task.objects.exists(), timeout=90)
    statuses = dict(TaskHistory.objects.values_list("id", "status"))
    assert set(statuses) == set(ids), killer.report()
    assert set(statuses.values()) == {HistoryStatus.COMPLETED}, killer.report()
    crashed = [w.pid for w in killer.alive if w.proc.poll() is not None]
    assert not crashed, f"{killer.report()}: workers exited {crashed}"


def run_caps(worker_factory, task_log, killer: Killer, tasks: int) -> None:
    scheduler.set_max_concurrency(CAP)
    scheduler.set_group_limit("narrow", NARROW)
    rng = random.Random(killer.seed)
    narrow = ledger.using(group="narrow")
    ids = [
        (narrow if n % 3 == 0 else ledger).submit(seconds=round(rng.uniform(0.1, 0.4), 3), n=n).id
        for n in range(tasks)
    ]
    killer.run(worker_factory, task_log)
    assert_drained_and_completed(ids, killer)

    runs = attempts(task_log, killer.kills)
    assert most_at_once(runs) <= CAP, killer.report()
    assert most_at_once([r for r in runs if r["group"] == "narrow"]) <= NARROW, killer.report()
    assert any(r["pid"] in killer.kills and r["until"] == killer.kills[r["pid"]] for r in runs), (
        f"{killer.report()}: no kill interrupted an attempt"
    )

    # No leak: the killed workers' slots came back, so CAP long tasks run side by side now.
    fresh = [ledger.submit(seconds=30.0, n=tasks + n).id for n in range(CAP)]
    running = Task.objects.filter(id__in=fresh, status=TaskStatus.RUNNING)
    wait_until(lambda: running.count() == CAP, timeout=30)
    assert Task.objects.filter(status=TaskStatus.RUNNING).count() == CAP


def test_limits__caps_hold_while_workers_are_killed_and_no_slot_leaks(worker_factory, task_log):
    killer = Killer(workers=3, concurrency=3, kill_every=1.5, kill_for=8.0)
    run_caps(worker_factory, task_log, killer, tasks=60)


@pytest.mark.chaos
def test_limits__caps_hold_over_a_minute_of_kills(worker_factory, task_log):
    killer = Killer(workers=4, concurrency=3, kill_every=1.0, kill_for=60.0)
    run_caps(worker_factory, task_log, killer, tasks=600)


def run_rate(worker_factory, task_log, killer: Killer, tasks: int, limit: RateLimit) -> None:
    scheduler.set_rate_limit(ledger.task_type, limit)
    ids = [r.id for r in ledger.submit_batch([{"seconds": 0.02, "n": n} for n in range(tasks)])]
    killer.run(worker_factory, task_log)
    assert_drained_and_completed(ids, killer)

    # Claim times come from the database clock, where the bucket is kept. Between any two
    # claims, at most burst + rate x elapsed tokens were there to spend. Slack: a row's
    # started_at and the bucket's refill time are read by different statements of the claim,
    # some milliseconds apart (under half a token here; a leaked or reset bucket is a burst).
    claims = sorted(r["claimed"] for r in attempts(task_log, killer.kills))
    assert len(claims) >= tasks, killer.report()
    worst = max(
        (j - i + 1) - (limit.burst + limit.rate * (claims[j] - claims[i] + 0.05))
        for i in range(len(claims))
        for j in range(i, len(claims))
    )
    assert worst <= 1e-6, f"{killer.report()}: {worst:.2f} starts over the token bucket"


def test_limits__rate_limit_holds_while_workers_are_killed(worker_factory, task_log):
    killer = Killer(workers=3, concurrency=3, kill_every=1.5, kill_for=6.0)
    run_rate(worker_factory, task_log, killer, tasks=50, limit=RateLimit.per_second(8))


@pytest.mark.chaos
def test_limits__rate_limit_holds_over_a_minute_of_kills(worker_factory, task_log):
    killer = Killer(workers=4, concurrency=3, kill_every=1.0, kill_for=60.0)
    run_rate(worker_factory, task_log, killer, tasks=600, limit=RateLimit.per_second(10))
