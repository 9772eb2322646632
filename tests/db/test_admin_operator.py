"""store.operator: the admin's pause, resume and priority changes, one transaction each."""

from __future__ import annotations

import pytest
from django.test.utils import override_settings

from taskmill_django import ValidationError, signals
from taskmill_django.models import Task
from taskmill_django.store import operator
from tests.db.conftest import claim_one
from tests.testapp.tasks import record

pytestmark = pytest.mark.django_db


def test_pause_tasks__pending_at_once_running_by_request(
    django_capture_on_commit_callbacks, received
):
    events = received(signals.task_paused)
    pending = record.submit(n=1).id
    running = record.submit(n=2).id
    blocked = record.submit(n=3).id
    Task.objects.filter(id=running).update(status="running")
    Task.objects.filter(id=blocked).update(status="blocked")
    with django_capture_on_commit_callbacks(execute=True):
        assert operator.pause_tasks([pending, running, blocked, 999_999]) == 2
    row = Task.objects.get(id=pending)
    assert (row.status, row.pause_reason) == ("paused", operator.MANUAL)
    assert row.paused_at is not None
    row = Task.objects.get(id=running)
    assert (row.status, row.cancel_reason) == ("running", operator.MANUAL)
    assert Task.objects.get(id=blocked).status == "blocked"
    # task_paused is sent when a task is paused, which a running one is only when it stops
    assert [e["task_id"] for e in events] == [pending]


def test_paused_task__is_not_claimed():
    paused = record.submit(n=1).id
    operator.pause_tasks([paused])
    other = record.submit(n=2).id
    assert claim_one().id == other


def test_resume_tasks__counts_paused_time(django_capture_on_commit_callbacks, received):
    events = received(signals.task_resumed)
    task = record.submit(n=1).id
    operator.pause_tasks([task])
    with django_capture_on_commit_callbacks(execute=True):
        assert operator.resume_tasks([task]) == 1
    row = Task.objects.get(id=task)
    assert (row.status, row.pause_reason, row.paused_at) == ("pending", "", None)
    assert row.paused_seconds >= 0.0
    assert [e["task_id"] for e in events] == [task]


def test_resume_tasks__ignores_other_pause_reasons():
    task = record.submit(n=1).id
    Task.objects.filter(id=task).update(status="paused", pause_reason="preempted")
    assert operator.resume_tasks([task]) == 0
    assert Task.objects.get(id=task).status == "paused"


def test_set_priority__changes_active_rows():
    a = record.submit(n=1).id
    b = record.using(priority=50).submit(n=2).id
    assert operator.set_priority([a, b], 50) == 1
    assert set(Task.objects.values_list("priority", flat=True)) == {50}


def test_set_priority__to_preempt_level_preempts_running_work():
    low = record.using(priority=200).submit(n=1).id
    claim_one()
    urgent = record.using(priority=100).submit(n=2).id
    with override_settings(TASKMILL={"PREEMPT_PRIORITY": 0}):
        operator.set_priority([urgent], 0)
    assert Task.objects.get(id=low).cancel_reason == "preempted"


@pytest.mark.parametrize("value", [-1, 256, "high", None, True])
def test_set_priority__rejects_bad_values(value):
    task = record.submit(n=1).id
    with pytest.raises(ValidationError):
        operator.set_priority([task], value)
    assert Task.objects.get(id=task).priority == 128


def test_operator__rejects_bad_ids():
    with pytest.raises(ValidationError):
        operator.pause_tasks(["1"])  # type: ignore[list-item]
