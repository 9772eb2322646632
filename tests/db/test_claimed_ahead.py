"""Tasks a worker claimed ahead wait in its pool's queue; one asked to stop before its body
began ends the way a stopped attempt ends, without running."""

from __future__ import annotations

import uuid

import pytest

from taskmill_django import executor
from taskmill_django.enums import HistoryStatus, InterruptReason
from taskmill_django.models import Task, Worker
from taskmill_django.store import claim, lifecycle
from taskmill_django.worker.heartbeat import Identity
from tests.testapp.tasks import record

pytestmark = pytest.mark.django_db


def _claimed_context(n: int = 1):  # type: ignore[no-untyped-def]
    record.submit(n=n)
    (task,) = claim.claim_batch(uuid.uuid4(), 1)
    ctx, definition = executor.build_context(task)
    return task, ctx, definition


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        (InterruptReason.SHUTDOWN, lifecycle.RELEASE),
        (InterruptReason.PREEMPTED, lifecycle.RELEASE),
        (InterruptReason.LEASE_LOST, lifecycle.RELEASE),
        (HistoryStatus.CANCELLED, HistoryStatus.CANCELLED),
    ],
)
def test_not_started__stopped_while_queued_ends_without_running_its_body(task_log, reason, kind):
    task, ctx, definition = _claimed_context()
    ctx.cancel(reason)

    outcome = executor.run_sync(task, ctx, definition, manage_connections=False)

    assert outcome.kind == kind
    assert task_log.events("run") == []


def test_not_started__a_queued_task_runs_normally_when_nothing_stopped_it(task_log):
    task, ctx, definition = _claimed_context(n=7)

    outcome = executor.run_sync(task, ctx, definition, manage_connections=False)

    assert (outcome.kind, outcome.result) == (lifecycle.COMPLETED, {"n": 7})
    assert [e["n"] for e in task_log.events("run")] == [7]


def test_claimed_row__fields_a_claim_does_not_return_load_when_read():
    outcome = record.submit(n=3)
    Task.objects.filter(id=outcome.id).update(last_error="earlier failure", run_after=None)

    (task,) = claim.claim_batch(uuid.uuid4(), 1)

    assert "last_error" in task.get_deferred_fields()  # not sent by the claim
    assert task.last_error == "earlier failure"  # loaded on first read
    assert (task.payload, task.status, task.priority) == ({"n": 3}, "running", 128)


@pytest.mark.parametrize(("setting", "registered"), [(None, 6), (0, 0), (2, 2)])
def test_worker_row__says_how_many_tasks_the_worker_may_claim_ahead(settings, setting, registered):
    # Other workers count them when they judge whether a cap is in reach (claim.load).
    settings.TASKMILL = {**settings.TASKMILL, "CLAIM_AHEAD": setting}
    identity = Identity("w", 1, 6, None)

    worker_id = identity.register()

    assert Worker.objects.get(id=worker_id).claim_ahead == registered
