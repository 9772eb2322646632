"""The Django Tasks backend (django.tasks, Django 6+): enqueue, results, execution."""

from __future__ import annotations

import sys
from datetime import timedelta

import pytest
from django.tasks import TaskResultStatus, signals
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
from django.utils import timezone
from rest_framework.test import APIClient

from taskmill_django.backend import TaskmillBackend, call, to_taskmill_priority
from taskmill_django.models import Task, TaskHistory
from taskmill_django.testing import run_pending
from tests.testapp import django_tasks as dt

pytestmark = pytest.mark.django_db


def test_backend__enqueue_returns_ready_result_equal_to_get_result():
    result = dt.add.enqueue(2, 3)
    assert result.status == TaskResultStatus.READY
    assert result.args == [2, 3]
    assert result.attempts == 0
    assert dt.add.get_backend().get_result(result.id) == result
    assert Task.objects.get(id=int(result.id)).task_type == "django::call"


def test_backend__worker_run_makes_result_successful():
    result = dt.add.enqueue(2, 3)
    assert run_pending() == 1
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 5
    assert result.finished_at is not None


def test_backend__failure_records_error_with_class_path():
    result = dt.explode.enqueue()
    run_pending()
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert result.errors[0].exception_class is ValueError
    assert "kaboom" in result.errors[0].traceback
    # No retries: the first failure lands in the dead-letter list, where operators can retry it.
    history = TaskHistory.objects.get(id=int(result.id))
    assert (history.status, history.retry_count) == ("dead_letter", 0)


def test_backend__queue_maps_to_group_and_priority_is_mapped():
    result = dt.send.enqueue("a@example.com")
    row = Task.objects.get(id=int(result.id))
    assert row.group_key == "emails"
    assert row.priority == to_taskmill_priority(50) == 64


def test_backend__most_urgent_priority_does_not_preempt_by_default():
    result = dt.add.using(priority=100).enqueue(1, 1)
    assert Task.objects.get(id=int(result.id)).priority == 1


def test_backend__takes_context_sees_first_attempt():
    result = dt.attempt.enqueue("x")
    run_pending()
    result.refresh()
    assert result.return_value == {"label": "x", "attempt": 1}


def test_backend__async_task_runs():
    result = dt.async_add.enqueue(4, 5)
    run_pending()
    result.refresh()
    assert result.return_value == 9


def test_backend__run_after_defers_the_call():
    later = timezone.now() + timedelta(hours=1)
    result = dt.add.using(run_after=later).enqueue(1, 2)
    assert run_pending() == 0
    assert dt.add.get_backend().get_result(result.id).task.run_after == later


def test_backend__non_json_return_value_fails_the_task():
    result = dt.unserialisable.enqueue()
    run_pending()
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert result.errors[0].exception_class is TypeError


def test_backend__non_json_argument_raises_and_leaves_nothing():
    with pytest.raises(TypeError):
        dt.add.enqueue(object(), 1)
    assert not Task.objects.exists()


def test_backend__invalid_queue_is_rejected():
    with pytest.raises(InvalidTask):
        dt.add.using(queue_name="nope")


def test_backend__unknown_result_id_raises():
    backend = dt.add.get_backend()
    assert isinstance(backend, TaskmillBackend)
    for bad in ("999999", "not-a-number"):
        with pytest.raises(TaskResultDoesNotExist):
            backend.get_result(bad)


def test_backend__sends_django_task_signals(django_capture_on_commit_callbacks):
    seen = []

    def record(sender, task_result, **kwargs):
        seen.append((kwargs["signal"], task_result.status))

    for signal in (signals.task_enqueued, signals.task_started, signals.task_finished):
        signal.connect(record)
    try:
        dt.add.enqueue(1, 1)
        run_pending()
    finally:
        for signal in (signals.task_enqueued, signals.task_started, signals.task_finished):
            signal.disconnect(record)
    assert [status for _, status in seen] == [
        TaskResultStatus.READY,
        TaskResultStatus.RUNNING,
        TaskResultStatus.SUCCESSFUL,
    ]


def test_backend__a_payload_path_is_looked_up_never_imported():
    path = "tests.testapp.unimported_tasks.never_declared_here"
    outcome = call.submit(path=path, args=[], kwargs={})
    run_pending()
    row = TaskHistory.objects.get(id=outcome.id)
    assert row.status == "failed"
    assert "no @django.tasks.task declared" in row.last_error
    assert "tests.testapp.unimported_tasks" not in sys.modules


def test_backend__call_type_is_never_submitted_over_http(user_factory, settings):
    settings.TASKMILL = {**settings.TASKMILL, "API_SUBMIT_TYPES": ["*"]}
    client = APIClient()
    client.force_authenticate(user_factory("superuser"))
    body = {"task_type": "django::call", "payload": {"path": "os.system", "args": ["true"]}}
    response = client.post("/taskmill/api/tasks/", body, format="json")
    assert response.status_code == 403
    assert "internal" in response.json()["errors"]["task_type"][0]
    assert not Task.objects.exists()
