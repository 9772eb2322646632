"""Lifecycle signals: sent after the change commits, with the documented arguments."""

from __future__ import annotations

import uuid
from datetime import datetime

import pytest

from taskmill_django import scheduler, signals
from taskmill_django.models import Task
from taskmill_django.store import lifecycle, maintenance
from taskmill_django.testing import run_pending
from tests.db.conftest import claim_one, finish
from tests.testapp.tasks import boom, echo, flaky, permanent, record

db = pytest.mark.django_db
executes = pytest.mark.django_db(transaction=True)


@pytest.fixture
def on_commit(django_capture_on_commit_callbacks):
    """Run on-commit callbacks (the signals) when the block ends, as a real commit would."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


# --- submitted -------------------------------------------------------------------------------


@db
def test_task_submitted__sent_only_on_commit(received, on_commit):
    events = received(signals.task_submitted)
    with on_commit():
        outcome = record.submit(n=1)
        assert events == []
    assert events == [
        {"sender": record, "task_type": "tests::record", "task_id": outcome.id, "outcome": outcome}
    ]


@db
def test_task_submitted__duplicates_are_announced_with_their_kind(received, on_commit):
    events = received(signals.task_submitted)
    with on_commit():
        first = record.submit(n=1)
        record.submit(n=1)
    assert [(e["task_id"], e["outcome"].kind) for e in events] == [
        (first.id, "inserted"),
        (first.id, "duplicate"),
    ]


@db
def test_task_submitted__one_per_batch_entry(received, on_commit):
    events = received(signals.task_submitted)
    with on_commit():
        outcomes = record.submit_batch([{"n": 1}, {"n": 2}])
    assert [e["task_id"] for e in events] == [o.id for o in outcomes]


@db
def test_task_signals__receiver_can_filter_by_task_definition(on_commit):
    events = []

    def receiver(sender, task_id, **kwargs):
        events.append(task_id)

    signals.task_submitted.connect(receiver, sender=echo, weak=False)
    try:
        with on_commit():
            record.submit(n=1)
            wanted = echo.submit(value=1)
    finally:
        signals.task_submitted.disconnect(receiver, sender=echo)
    assert events == [wanted.id]


@db
def test_task_signals__failing_receiver_does_not_undo_the_change(received, on_commit):
    def broken(sender, **kwargs):
        raise RuntimeError("receiver bug")

    signals.task_submitted.connect(broken, weak=False)
    events = received(signals.task_submitted)
    try:
        with on_commit():
            outcome = record.submit(n=1)
    finally:
        signals.task_submitted.disconnect(broken)
    assert Task.objects.get().id == outcome.id
    assert [e["task_id"] for e in events] == [outcome.id]


# --- outcomes of executed tasks ----------------------------------------------------------------


@executes
def test_task_completed__sent_with_duration(received):
    events = received(signals.task_completed)
    outcome = record.submit(n=1)
    run_pending()
    assert len(events) == 1
    assert (events[0]["sender"], events[0]["task_id"]) == (record, outcome.id)
    assert events[0]["duration_ms"] >= 0


@executes
def test_task_failed__retry_announces_will_retry(received):
    failed = received(signals.task_failed)
    completed = received(signals.task_completed)
    outcome = flaky.submit(fail_times=1)
    run_pending()
    assert len(failed) == 1
    event = failed[0]
    assert (event["task_type"], event["task_id"], event["will_retry"]) == (
        "tests::flaky",
        outcome.id,
        True,
    )
    assert isinstance(event["retry_after"], datetime)
    assert event["error"] == "RetryableError: attempt 0 fails"
    assert [e["task_id"] for e in completed] == [outcome.id]


@executes
def test_task_failed__permanent_error_will_not_retry(received):
    failed = received(signals.task_failed)
    outcome = permanent.submit()
    run_pending()
    assert [(e["task_id"], e["will_retry"], e["retry_after"]) for e in failed] == [
        (outcome.id, False, None)
    ]


@executes
def test_task_dead_lettered__sent_when_retries_run_out(received):
    failed = received(signals.task_failed)
    dead = received(signals.task_dead_lettered)
    outcome = boom.submit()
    run_pending()
    assert [e["will_retry"] for e in failed][:1] == [True]
    assert [(e["task_type"], e["task_id"], e["error"]) for e in dead] == [
        ("tests::boom", outcome.id, "ValueError: boom")
    ]


@db
def test_task_failed__unregistered_type_is_sent_with_type_name_as_sender(received, on_commit):
    failed = received(signals.task_failed)
    Task.objects.create(task_type="ghost::gone", domain="ghost", key="g" * 64, payload={})
    with on_commit():
        run_pending()
    assert [(e["sender"], e["task_type"], e["will_retry"]) for e in failed] == [
        ("ghost::gone", "ghost::gone", False)
    ]


# --- cancellation ------------------------------------------------------------------------------


@db
def test_task_cancelled__pending_task(received, on_commit):
    events = received(signals.task_cancelled)
    outcome = record.submit(n=1)
    with on_commit():
        scheduler.cancel(outcome.id)
    assert [(e["task_type"], e["task_id"]) for e in events] == [("tests::record", outcome.id)]


@db
def test_task_cancelled__running_task_only_when_its_attempt_ends(received, on_commit):
    events = received(signals.task_cancelled)
    record.submit(n=1)
    task = claim_one()
    with on_commit():
        scheduler.cancel(task.id)
    assert events == []
    with on_commit():
        finish(task)
    assert [e["task_id"] for e in events] == [task.id]


@db
def test_task_cancelled__superseded_pending_twin(received, on_commit):
    events = received(signals.task_cancelled)
    old = record.submit(n=1)
    with on_commit():
        record.using(duplicate="supersede").submit(n=1)
    assert [e["task_id"] for e in events] == [old.id]


@db
def test_task_cancelled__superseded_running_twin(received, on_commit):
    events = received(signals.task_cancelled)
    record.submit(n=1)
    task = claim_one()
    record.using(duplicate="supersede").submit(n=1)
    with on_commit():
        finish(task)
    assert [e["task_id"] for e in events] == [task.id]


# --- store-side events -------------------------------------------------------------------------


@db
def test_task_rescued__carries_rescue_count(received, on_commit):
    events = received(signals.task_rescued)
    record.submit(n=1)
    task = claim_one()
    with on_commit():
        maintenance.rescue_orphans()
    assert [(e["task_id"], e["rescue_count"]) for e in events] == [(task.id, 1)]


@db
def test_task_dead_lettered__sent_when_rescues_run_out(received, on_commit, settings):
    settings.TASKMILL = {**settings.TASKMILL, "MAX_RESCUES": 1}
    events = received(signals.task_dead_lettered)
    record.submit(n=1)
    task = claim_one()
    with on_commit():
        maintenance.rescue_orphans()
    assert [e["task_id"] for e in events] == [task.id]


@db
def test_task_unblocked__sent_when_last_dependency_completes(received, on_commit):
    events = received(signals.task_unblocked)
    dep = record.submit(n=1)
    blocked = echo.using(depends_on=[dep.id]).submit(value=1)
    with on_commit():
        finish(claim_one())
    assert [(e["sender"], e["task_id"]) for e in events] == [(echo, blocked.id)]


@db
def test_task_dependency_failed__sent_for_each_doomed_dependent(received, on_commit):
    events = received(signals.task_dependency_failed)
    dep = record.submit(n=1)
    blocked = echo.using(depends_on=[dep.id]).submit(value=1)
    with on_commit():
        finish(claim_one(), lifecycle.FAILED)
    assert [e["task_id"] for e in events] == [blocked.id]


@db
def test_signals__fenced_off_outcome_sends_nothing(received, on_commit):
    events = received(signals.task_completed)
    record.submit(n=1)
    task = claim_one()
    with on_commit():
        lifecycle.apply_outcomes(
            [lifecycle.Outcome(task.id, uuid.uuid4(), lifecycle.COMPLETED, task.task_type)]
        )
    assert events == []
    assert Task.objects.get().status == "running"
