"""SIGKILL chaos (research §5 T2): workers are killed at random while they drain a queue, and
replacements are started. Afterwards every task finished exactly once, as completed, none was lost
or left running, and a task ran more than once only because a worker running it was killed.

Set TASKMILL_CHAOS_SEED to replay a run; the seed, the killed pids and every broken invariant are
in the failure message.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from taskmill_django.enums import HistoryStatus
from taskmill_django.models import Task, TaskHistory
from tests.conftest import TaskLog, WorkerProcess, wait_until
from tests.testapp.tasks import sleep

pytestmark = pytest.mark.django_db(transaction=True)


@dataclass
class Chaos:
    tasks: int
    workers: int
    concurrency: int
    work_seconds: tuple[float, float]
    kill_every: float
    kill_for: float
    drain_timeout: float
    seed: int = field(
        default_factory=lambda: int(os.environ.get("TASKMILL_CHAOS_SEED", random.randrange(10**6)))
    )
    killed: list[int] = field(default_factory=list)
    submitted: list[int] = field(default_factory=list)
    survivors: list[WorkerProcess] = field(default_factory=list)

    def run(self, worker_factory: Callable[..., WorkerProcess], task_log: TaskLog) -> list[str]:
        rng = random.Random(self.seed)
        low, high = self.work_seconds
        payloads = [
            {"seconds": round(rng.uniform(low, high), 3), "n": n} for n in range(self.tasks)
        ]
        self.submitted = [outcome.id for outcome in sleep.submit_batch(payloads)]
        flags = ("--concurrency", str(self.concurrency))
        alive = [worker_factory(*flags) for _ in range(self.workers)]
        stop_killing = time.monotonic() + self.kill_for
        while time.monotonic() < stop_killing and Task.objects.exists():
            time.sleep(self.kill_every)  # the killer's pace; nothing waits on a process here
            victim = alive.pop(rng.randrange(len(alive)))
            victim.kill()
            victim.wait(30)
            self.killed.append(victim.pid)
            alive.append(worker_factory(*flags))
        wait_until(lambda: not Task.objects.exists(), timeout=self.drain_timeout)
        self.survivors = alive
        return self.violations(task_log)

    def violations(self, task_log: TaskLog) -> list[str]:
        found = []
        history = {row.id: row for row in TaskHistory.objects.all()}
        if set(history) != set(self.submitted):
            lost = sorted(set(self.submitted) - set(history))
            extra = sorted(set(history) - set(self.submitted))
            found.append(f"history ids differ: lost={lost[:20]} unexpected={extra[:20]}")
        if Task.objects.exists():
            found.append(f"active rows left: {list(Task.objects.values_list('id', 'status'))}")
        not_completed = {
            i: r.status for i, r in history.items() if r.status != HistoryStatus.COMPLETED
        }
        if not_completed:
            found.append(f"not completed: {dict(list(not_completed.items())[:20])}")
        killed = set(self.killed)
        runs: dict[int, list[int]] = {}
        for event in task_log.events("start"):
            runs.setdefault(event["task_id"], []).append(event["pid"])
        never_ran = set(self.submitted) - set(runs)
        if never_ran:
            found.append(f"completed without running: {sorted(never_ran)[:20]}")
        uncaused = {i: pids for i, pids in runs.items() if sum(p not in killed for p in pids) > 1}
        if uncaused:
            found.append(f"ran twice on surviving workers: {dict(list(uncaused.items())[:20])}")
        too_many = {i: r.rescue_count for i, r in history.items() if r.rescue_count > len(killed)}
        if too_many:
            found.append(f"rescued more often than workers were killed: {too_many}")
        crashed = [w for w in self.survivors if w.proc.poll() is not None]
        for worker in crashed:
            found.append(f"worker {worker.pid} exited on its own:\n{worker.output()[-3000:]}")
        if not any(r.rescue_count for r in history.values()):
            found.append("no task was ever rescued: the kills did not exercise anything")
        return found

    def report(self) -> str:
        rescued = sum(TaskHistory.objects.values_list("rescue_count", flat=True))
        return f"seed={self.seed} killed={self.killed} rescues={rescued}"


def test_chaos__sigkill_every_second_loses_nothing_and_completes_each_task_once(
    worker_factory, task_log
):
    chaos = Chaos(
        tasks=600,
        workers=3,
        concurrency=2,
        work_seconds=(0.03, 0.12),
        kill_every=1.0,
        kill_for=10.0,
        drain_timeout=150.0,  # a bound, not a wait: a loaded 2-core machine drains slowly
    )
    violations = chaos.run(worker_factory, task_log)
    print(chaos.report())  # shown with -s, and on failure
    assert len(chaos.killed) >= 3, chaos.report()
    assert not violations, f"{chaos.report()}\n" + "\n".join(violations)


@pytest.mark.chaos
def test_chaos__sigkill_for_a_minute_over_5000_tasks(worker_factory, task_log):
    chaos = Chaos(
        tasks=5000,
        workers=4,
        concurrency=3,
        work_seconds=(0.01, 0.1),
        kill_every=1.0,
        kill_for=60.0,
        drain_timeout=120.0,
    )
    violations = chaos.run(worker_factory, task_log)
    print(chaos.report())  # shown with -s, and on failure
    assert len(chaos.killed) >= 10, chaos.report()
    assert not violations, f"{chaos.report()}\n" + "\n".join(violations)
