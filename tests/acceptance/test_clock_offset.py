"""Processes whose clocks are ten minutes off (G7): every deadline compared in SQL is computed
from the database's clock, so a skewed worker neither skips nor doubles schedule ticks, expires
nothing early or late, and rescues no live worker's task; a skewed submitter stores the same
deadlines as a punctual one.

The clocks are faked with libfaketime (Debian's ``faketime`` package) on the subprocesses only;
the database and this test keep the machine's true time. PostgreSQL only: SQLite runs inside
each process, so there a process's clock is the database's clock.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from taskmill_django.cron import RecurringSchedule
from taskmill_django.enums import HistoryStatus, TaskStatus
from taskmill_django.models import Schedule, ScheduleTick, Task, TaskHistory
from taskmill_django.store.recurring import set_paused
from tests.acceptance.conftest import LIBFAKETIME
from tests.acceptance.support import subprocess_env, worker_id_of
from tests.conftest import ROOT, wait_until
from tests.testapp.tasks import record, sleep

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.postgres_only,
    pytest.mark.faketime,
]


def skewed(offset: str) -> dict[str, str]:
    """Environment that shifts a process's wall clock by ``offset`` ("+10m", "-10m")."""
    return {
        "LD_PRELOAD": str(LIBFAKETIME),
        "FAKETIME": offset,
        "DONT_FAKE_MONOTONIC": "1",  # timeouts and sleeps keep working as they should
    }


SUBMITTER = """
import datetime, sys
import django
django.setup()
from tests.testapp.tasks import record
now = datetime.datetime.now(datetime.UTC)
later = record.using(ttl=60, run_after=datetime.timedelta(seconds=30))
outcome = later.submit(n=int(sys.argv[1]))
print(outcome.id, now.timestamp())
"""


def submit_skewed(offset: str, n: int) -> tuple[int, float]:
    """Submit from a process whose clock is ``offset`` off; (task id, its idea of now)."""
    done = subprocess.run(
        [sys.executable, "-c", SUBMITTER, str(n)],
        cwd=ROOT,
        env=subprocess_env(**skewed(offset)),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    task_id, seen = done.stdout.split()
    return int(task_id), float(seen)


def test_clock_offset__skewed_processes_keep_ticks_deadlines_and_leases(worker_factory, task_log):
    fast, slow = skewed("+10m"), skewed("-10m")
    # The faked clocks really are off: otherwise this test proves nothing.
    task_id, seen = submit_skewed("+10m", 1)
    assert seen - time.time() > 500
    fast_deadline = Task.objects.get(id=task_id).expires_at
    task_id, seen = submit_skewed("-10m", 2)
    assert time.time() - seen > 500
    slow_deadline = Task.objects.get(id=task_id).expires_at
    # Deadlines start from the database clock (this machine's true time here).
    for deadline in (fast_deadline, slow_deadline):
        assert abs((deadline - timezone.now()).total_seconds() - 60) < 10, deadline

    settings = {"EXPIRY_SWEEP_INTERVAL": 0.2}
    behind = worker_factory("--concurrency", "2", settings=settings, environ=slow)
    long_id = sleep.submit(seconds=5.0).id
    wait_until(lambda: task_log.events("start"), timeout=30)
    ahead = worker_factory("--concurrency", "2", settings=settings, environ=fast)
    worker_id_of(ahead)

    every_second = record.using(recurring=RecurringSchedule(interval=1), key="skew")
    schedule_id = every_second.submit(n=0).schedule_id
    assert schedule_id is not None
    keeps = record.using(ttl=20, run_after=timedelta(seconds=60)).submit(n=3).id
    expires = record.using(ttl=1, run_after=timedelta(seconds=60)).submit(n=4).id
    time.sleep(6.0)
    set_paused(schedule_id, True)
    paused_at = timezone.now()
    wait_until(lambda: TaskHistory.objects.filter(id=long_id).exists(), timeout=30)
    wait_until(lambda: not Task.objects.filter(status=TaskStatus.RUNNING).exists(), timeout=30)

    # Schedule: one task per tick, on the grid, none in the future, none skipped for minutes.
    tick_rows = ScheduleTick.objects.filter(schedule_id=schedule_id)
    ticks = sorted(tick_rows.values_list("tick_at", flat=True))
    schedule = Schedule.objects.get(id=schedule_id)
    assert len(ticks) == schedule.occurrence_count >= 4, (ticks, schedule.occurrence_count)
    assert all((t - ticks[0]).total_seconds() % 1.0 == 0 for t in ticks), ticks
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(ticks)]
    assert max(gaps) <= 3, gaps
    assert ticks[-1] <= paused_at and (paused_at - ticks[-1]).total_seconds() < 3, ticks
    assert schedule.next_run_at is not None
    assert abs((schedule.next_run_at - paused_at).total_seconds()) < 3, schedule.next_run_at
    tick_tasks = TaskHistory.objects.filter(id__in=tick_rows.values("task_id"))
    wait_until(lambda: tick_tasks.count() == len(ticks), timeout=30)  # the last may be pending
    runs = [e["task_id"] for e in task_log.events("run") if e["n"] == 0]
    assert len(runs) == len(set(runs)) == len(ticks)

    # TTL: the sweep (run by both workers) expired the due task, and only it.
    wait_until(lambda: TaskHistory.objects.filter(id=expires).exists(), timeout=10)
    assert TaskHistory.objects.get(id=expires).status == HistoryStatus.EXPIRED
    assert Task.objects.get(id=keeps).status == TaskStatus.PENDING

    # Leases: the task of the slow worker was never rescued by the fast one.
    row = TaskHistory.objects.get(id=long_id)
    assert (row.status, row.rescue_count) == (HistoryStatus.COMPLETED, 0)
    assert [e["pid"] for e in task_log.events("start")] == [behind.pid]
    assert behind.proc.poll() is None and ahead.proc.poll() is None
