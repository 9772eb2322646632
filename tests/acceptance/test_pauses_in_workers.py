"""Pauses across real ``runtaskmill`` processes: a pause of the whole scheduler, of a domain or of
a group stops its running tasks too (they wait ``paused``, no retry spent, and run again on
resume), and nothing of it starts until the pause is lifted.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from taskmill_django import scheduler
from taskmill_django.models import PausedGroup, Task, TaskHistory, Worker
from tests.acceptance.support import STAMP_SLACK, finished, worker_id_of
from tests.conftest import wait_until
from tests.testapp.tasks import other_wf_step, record, sleep

pytestmark = pytest.mark.django_db(transaction=True)


def reloaded_policy(worker: Any, since: datetime) -> None:
    """Wait until ``worker`` has kept looping for a while after ``since``: it reloads its
    policy every poll interval (0.1 s here), so by then it obeys a change made at ``since``.
    Until then a claim may still use the policy it loaded before (allowed by design)."""
    worker_id = worker_id_of(worker)
    wait_until(
        lambda: Worker.objects.filter(
            id=worker_id, heartbeat_at__gte=since + timedelta(seconds=0.3)
        ).exists(),
        timeout=30,
    )


def parked(task_id: int) -> Task:
    """Wait until the task's worker has stopped it and it waits paused."""
    return wait_until(lambda: Task.objects.filter(id=task_id, status="paused").first(), timeout=30)


def starts(task_log: Any, n: int) -> int:
    return len([e for e in task_log.events("start") if e["n"] == n])


def test_pause_all__running_task_waits_paused_and_nothing_starts_until_resume_all(
    worker_factory, task_log
):
    worker = worker_factory("--concurrency", "2")
    long = sleep.submit(seconds=2.0, n=1).id
    wait_until(lambda: task_log.events("start"), timeout=60)

    assert scheduler.pause_all() == 1

    row = parked(long)
    assert (row.pause_reason, row.retry_count) == ("all_paused", 0)
    reloaded_policy(worker, timezone.now())
    waiting = [record.submit(n=n).id for n in range(10, 13)]
    reloaded_policy(worker, timezone.now() + timedelta(seconds=0.7))  # two free slots, unused
    assert not task_log.events("run")
    assert Task.objects.filter(id__in=waiting, status="pending").count() == 3
    assert Task.objects.get(id=long).status == "paused"

    assert scheduler.resume_all() == 1

    wait_until(lambda: finished([long, *waiting]), timeout=60)
    done = TaskHistory.objects.get(id=long)
    assert (done.status, done.retry_count, starts(task_log, 1)) == ("completed", 0, 2)
    assert [e["reason"] for e in task_log.events("noticed_cancel")] == ["all_paused"]


def test_pause_domain__running_task_is_paused_and_resumes_later(worker_factory, task_log):
    worker = worker_factory("--concurrency", "3")
    handle = scheduler.domain("tests")
    long = sleep.submit(seconds=2.0, n=1).id
    wait_until(lambda: task_log.events("start"), timeout=60)

    assert handle.pause() == 1

    assert parked(long).pause_reason == "domain_paused"
    reloaded_policy(worker, timezone.now())
    later = record.submit(n=5).id
    other = other_wf_step.submit(n=6).id
    wait_until(lambda: finished([other]), timeout=30)  # other domains keep running
    reloaded_policy(worker, timezone.now())
    assert Task.objects.get(id=later).status == "pending"
    assert Task.objects.get(id=long).status == "paused"

    assert handle.resume() == 1

    wait_until(lambda: finished([long, later]), timeout=60)
    row = TaskHistory.objects.get(id=long)
    assert (row.status, row.retry_count) == ("completed", 0)
    assert [e["reason"] for e in task_log.events("noticed_cancel")] == ["domain_paused"]


def test_pause_group__running_task_is_paused_and_restarts_on_resume(worker_factory, task_log):
    worker = worker_factory("--concurrency", "3")
    long = sleep.using(group="uploads").submit(seconds=2.0, n=1).id
    wait_until(lambda: task_log.events("start"), timeout=60)

    assert scheduler.pause_group("uploads") == 1

    row = parked(long)
    assert (row.pause_reason, row.retry_count) == ("group_paused", 0)
    reloaded_policy(worker, timezone.now())
    other = sleep.using(group="reports").submit(seconds=0.1, n=2).id
    wait_until(lambda: finished([other]), timeout=30)  # other groups keep running
    reloaded_policy(worker, timezone.now())
    assert Task.objects.get(id=long).status == "paused"

    assert scheduler.resume_group("uploads") is True

    wait_until(lambda: finished([long]), timeout=60)
    done = TaskHistory.objects.get(id=long)
    assert (done.status, done.retry_count, starts(task_log, 1)) == ("completed", 0, 2)
    assert [e["reason"] for e in task_log.events("noticed_cancel")] == ["group_paused"]


def test_pause_group__timed_pause_of_a_running_task_resumes_it_at_its_time(
    worker_factory, task_log
):
    worker_factory("--concurrency", "2")
    long = sleep.using(group="uploads").submit(seconds=2.0, n=1).id
    wait_until(lambda: task_log.events("start"), timeout=60)
    until = timezone.now() + timedelta(seconds=1.5)

    assert scheduler.pause_group("uploads", until=until) == 1

    assert parked(long).pause_reason == "group_paused"
    wait_until(lambda: finished([long]), timeout=60)
    done = TaskHistory.objects.get(id=long)
    assert (done.status, done.retry_count, starts(task_log, 1)) == ("completed", 0, 2)
    assert done.started_at >= until - STAMP_SLACK  # its second attempt began after the pause
    assert not PausedGroup.objects.exists()


def test_pause_group__timed_pause_resumes_by_itself(worker_factory):
    worker = worker_factory("--concurrency", "4")
    worker_id_of(worker)
    scheduler.pause_group("g")
    reloaded_policy(worker, timezone.now())
    outcomes = [record.using(group="g").submit(n=n) for n in range(3)]
    free = [record.using(group="h").submit(n=n).id for n in range(10, 13)]
    grouped = [o.id for o in outcomes]

    until = timezone.now() + timedelta(seconds=1.5)
    scheduler.pause_group("g", until=until)

    assert all(o.group_paused for o in outcomes)
    wait_until(lambda: finished(grouped + free), timeout=60)
    grouped_starts = TaskHistory.objects.filter(id__in=grouped).values_list("started_at", flat=True)
    free_starts = TaskHistory.objects.filter(id__in=free).values_list("started_at", flat=True)
    assert min(grouped_starts) >= until - STAMP_SLACK
    assert max(free_starts) < min(grouped_starts)  # the rest of the queue was not held up
    wait_until(lambda: not PausedGroup.objects.exists(), timeout=30)
