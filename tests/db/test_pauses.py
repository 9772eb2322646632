"""Group and cluster pauses reach running tasks: their stop is requested with a pause reason,
they wait ``paused`` (no retry spent) and run again when the pause is lifted. A task paused for
another reason is never resumed by the wrong pause.

A worker's part (seeing the request at its heartbeat, cancelling the attempt) is played here by
``finish(task, RELEASE)``; tests/acceptance/test_pauses_in_workers.py runs real workers.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from taskmill_django import Priority, scheduler, signals
from taskmill_django.models import PausedGroup, Task
from taskmill_django.store import claim, control, lifecycle, operator
from tests.db.conftest import finish
from tests.testapp.tasks import record, sleep

pytestmark = pytest.mark.django_db


def running(n: int, **options) -> Task:
    """A task of ``record`` claimed by a worker."""
    task_id = record.using(**options).submit(n=n).id
    (task,) = claim.claim_batch(uuid.uuid4(), 1, policy=control.load_policy())
    assert task.id == task_id
    return task


def row(task: Task) -> Task:
    return Task.objects.get(id=task.id)


def test_pause_group__running_task_of_the_group_is_asked_to_pause():
    mine = running(1, group="uploads")
    theirs = running(2, group="reports")
    waiting = record.using(group="uploads").submit(n=3).id

    assert scheduler.pause_group("uploads") == 1

    assert (row(mine).status, row(mine).cancel_reason) == ("running", "group_paused")
    assert row(theirs).cancel_reason == ""
    assert Task.objects.get(id=waiting).status == "pending"  # claims skip it; it stays pending


def test_pause_group__paused_task_keeps_its_retry_count_and_runs_again_on_resume():
    task = running(1, group="uploads")
    scheduler.pause_group("uploads")

    finish(task, lifecycle.RELEASE)

    parked = row(task)
    assert (parked.status, parked.pause_reason, parked.retry_count) == ("paused", "group_paused", 0)
    assert scheduler.resume_group("uploads") is True
    resumed = row(task)
    assert (resumed.status, resumed.pause_reason, resumed.retry_count) == ("pending", "", 0)
    assert [t.id for t in claim.claim_batch(uuid.uuid4(), 5)] == [task.id]


def test_pause_group__a_retryable_failure_while_pausing_spends_no_retry():
    task = running(1, group="uploads")
    scheduler.pause_group("uploads")

    finish(task, lifecycle.RETRY, error="RetryableError: cancelled", retry_delay=5)

    assert (row(task).status, row(task).retry_count) == ("paused", 0)


def test_pause_group__resumed_before_the_worker_noticed_keeps_running():
    task = running(1, group="uploads")
    scheduler.pause_group("uploads")

    scheduler.resume_group("uploads")

    assert (row(task).status, row(task).cancel_reason) == ("running", "")


def test_pause_group__timed_pause_that_ends_resumes_the_tasks_it_paused(
    received, django_capture_on_commit_callbacks
):
    resumed = received(signals.task_resumed)
    task = running(1, group="uploads")
    scheduler.pause_group("uploads", until=timezone.now() + timedelta(hours=1))
    finish(task, lifecycle.RELEASE)
    PausedGroup.objects.update(paused_until=timezone.now() - timedelta(seconds=1))

    with django_capture_on_commit_callbacks(execute=True):
        assert control.resume_expired_group_pauses() == ["uploads"]

    assert row(task).status == "pending"
    assert [e["task_id"] for e in resumed] == [task.id]


def test_resume_group__leaves_tasks_paused_for_other_reasons():
    by_hand = running(1, group="uploads")
    operator.pause_tasks([by_hand.id])
    assert scheduler.pause_group("uploads") == 0  # the earlier request stands
    finish(by_hand, lifecycle.RELEASE)

    scheduler.resume_group("uploads")

    assert (row(by_hand).status, row(by_hand).pause_reason) == ("paused", "manual")


def test_pause_all__running_tasks_everywhere_are_asked_to_pause():
    first = running(1)
    second = running(2, group="uploads")

    assert scheduler.pause_all() == 2

    assert {row(first).cancel_reason, row(second).cancel_reason} == {"all_paused"}


def test_pause_all__keeps_an_earlier_request_and_resume_all_leaves_it_alone():
    low = sleep.using(priority=Priority.BACKGROUND).submit(seconds=1).id
    claim.claim_batch(uuid.uuid4(), 1)
    sleep.using(priority=Priority.REALTIME).submit(seconds=1, n=2)  # preempts low
    assert Task.objects.get(id=low).cancel_reason == "preempted"

    assert scheduler.pause_all() == 0
    finish(Task.objects.get(id=low), lifecycle.RELEASE)
    assert scheduler.resume_all() == 0

    parked = Task.objects.get(id=low)
    assert (parked.status, parked.pause_reason) == ("paused", "preempted")


def test_resume_all__makes_the_tasks_pause_all_paused_pending_again():
    task = running(1)
    scheduler.pause_all()
    finish(task, lifecycle.RELEASE)
    assert (row(task).status, row(task).pause_reason, row(task).retry_count) == (
        "paused",
        "all_paused",
        0,
    )

    assert scheduler.resume_all() == 1

    assert (row(task).status, row(task).retry_count) == ("pending", 0)


def test_resume_all__does_not_lift_a_group_pause():
    task = running(1, group="uploads")
    scheduler.pause_group("uploads")
    scheduler.pause_all()
    finish(task, lifecycle.RELEASE)

    scheduler.resume_all()

    assert (row(task).status, row(task).pause_reason) == ("paused", "group_paused")


def test_snapshot__paused_group_with_its_resume_time_and_tasks():
    task = running(1, group="uploads")
    record.using(group="uploads").submit(n=2)
    until = timezone.now() + timedelta(minutes=5)
    scheduler.pause_group("uploads", until=until)
    finish(task, lifecycle.RELEASE)

    (info,) = scheduler.snapshot().paused_groups

    assert (info.group, info.paused_until, info.paused_count, info.pending_count) == (
        "uploads",
        until,
        1,
        1,
    )
    assert info.paused_at is not None
