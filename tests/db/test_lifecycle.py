"""Running tasks in-thread, retries, dead letters, permanent failures, and fenced outcomes.

``testing.run_pending()`` is meant for users' ``TestCase``-style tests, so most tests here run
inside pytest-django's test transaction; ``executes`` tests commit for real, as a worker does.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from taskmill_django import (
    AlreadyRetried,
    Domain,
    RetryableError,
    RetryPolicy,
    TaskNotFound,
    UnknownTaskType,
    scheduler,
)
from taskmill_django.models import Task, TaskHistory, TaskHistoryTag, TaskTag
from taskmill_django.store import lifecycle, maintenance, operator
from taskmill_django.testing import run_pending, submitted
from tests.db.conftest import claim_one, finish
from tests.testapp.tasks import (
    async_echo,
    boom,
    flaky,
    other_noop,
    permanent,
    record,
    unstorable_result,
)

db = pytest.mark.django_db
executes = pytest.mark.django_db(transaction=True)


@db
def test_run_pending__works_inside_test_transaction():
    record.submit(n=1)
    assert run_pending() == 1
    assert TaskHistory.objects.get().status == "completed"


# --- running ---------------------------------------------------------------------------------


@executes
def test_run_pending__completes_task_and_moves_it_to_history():
    outcome = record.submit(n=3)
    assert run_pending() == 1
    row = TaskHistory.objects.get(id=outcome.id)
    assert (row.status, row.result, row.retry_count) == ("completed", {"n": 3}, 0)
    assert row.started_at is not None
    assert row.finished_at >= row.started_at
    assert row.duration_ms is not None
    assert not Task.objects.exists()


@db
def test_run_pending__nothing_due_runs_nothing():
    assert run_pending() == 0


@db
def test_run_pending__limit_stops_early():
    record.submit_batch([{"n": n} for n in range(3)])
    assert run_pending(limit=2) == 2
    assert Task.objects.count() == 1


@db
def test_run_pending__domains_filter_runs_only_those():
    record.submit(n=1)
    other_noop.submit()
    assert run_pending(domains=["other"]) == 1
    assert TaskHistory.objects.get().task_type == "other::noop"
    assert Task.objects.get().task_type == "tests::record"


@db
def test_run_pending__runs_by_priority_then_fifo(task_log):
    for n, priority in enumerate([200, 10, 128, 10, 0]):
        record.using(priority=priority).submit(n=n)
    run_pending()
    assert [e["n"] for e in task_log.events("run")] == [4, 1, 3, 2, 0]


@db
@pytest.mark.parametrize("kind", ["nan", "set"])
def test_run_pending__result_that_is_not_json_completes_without_it(kind):
    outcome = unstorable_result.submit(kind=kind)
    assert run_pending() == 1
    row = TaskHistory.objects.get(id=outcome.id)
    assert (row.status, row.result) == ("completed", None)


@db
def test_run_pending__result_with_a_nul_character_is_stored_with_it_escaped():
    outcome = unstorable_result.submit(kind="nul")
    assert run_pending() == 1
    row = TaskHistory.objects.get(id=outcome.id)
    assert (row.status, row.result) == ("completed", "a\\x00b")


@db
def test_run_pending__runs_async_task():
    outcome = async_echo.submit(value="hi")
    assert run_pending() == 1
    row = TaskHistory.objects.get(id=outcome.id)
    assert (row.status, row.result) == ("completed", "hi")


@executes
def test_testing_submitted__lists_history_of_type_newest_first():
    first = record.submit(n=1)
    second = record.submit(n=2)
    run_pending()
    assert [h.id for h in submitted("tests::record")] == [second.id, first.id]


# --- retries and failures ---------------------------------------------------------------------


@executes
def test_retry__flaky_task_is_retried_then_completes():
    outcome = flaky.submit(fail_times=2)
    assert run_pending() == 3
    row = TaskHistory.objects.get(id=outcome.id)
    assert (row.status, row.retry_count, row.result) == ("completed", 2, "ok")
    assert row.last_error == ""


@db
def test_retry__flaky_task_is_retried_inside_test_transaction():
    outcome = flaky.submit(fail_times=1)
    assert run_pending() == 2
    assert TaskHistory.objects.get(id=outcome.id).retry_count == 1


@executes
def test_retry__exhausted_retries_dead_letter_with_error_and_traceback():
    outcome = boom.submit()
    assert run_pending() == 2  # first attempt + max_retries (1)
    row = TaskHistory.objects.get(id=outcome.id)
    assert (row.status, row.retry_count, row.max_retries) == ("dead_letter", 1, 1)
    assert row.last_error == "ValueError: boom"
    assert 'raise ValueError("boom")' in row.traceback
    assert not Task.objects.exists()


@db
def test_retry__max_retries_zero_dead_letters_after_one_attempt():
    outcome = boom.using(max_retries=0).submit()
    assert run_pending() == 1
    assert TaskHistory.objects.get(id=outcome.id).status == "dead_letter"


@db
def test_retry__permanent_error_fails_without_retry():
    outcome = permanent.submit()
    assert run_pending() == 1
    row = TaskHistory.objects.get(id=outcome.id)
    assert (row.status, row.retry_count) == ("failed", 0)
    assert row.last_error == "PermanentError: no way"


@executes
def test_retry__without_delay_is_due_at_once():
    record.submit(n=1)
    for _ in range(30):
        finish(claim_one(), lifecycle.RETRY, retry_delay=0.0)
    assert Task.objects.get().retry_count == 30


@db
@pytest.mark.usefixtures("isolated_registry")
def test_retry__huge_uncapped_backoff_still_schedules_the_retry():
    domain = Domain("db_backoff")

    @domain.task("fails", retry=RetryPolicy.exponential(100, initial=1, jitter=False))
    def fails(ctx):
        raise RetryableError("again")

    outcome = fails.submit()
    Task.objects.filter(id=outcome.id).update(retry_count=60)
    assert run_pending() == 1
    row = Task.objects.get(id=outcome.id)
    assert (row.status, row.retry_count) == ("pending", 61)
    assert row.run_after is not None


@db
def test_retry__outcome_requeues_with_same_priority_and_a_delay():
    record.using(priority=42).submit(n=1)
    task = claim_one()
    before = timezone.now()
    finish(task, lifecycle.RETRY, error="RetryableError: later", retry_delay=60.0)
    row = Task.objects.get(id=task.id)
    assert (row.status, row.priority, row.retry_count) == ("pending", 42, 1)
    assert row.last_error == "RetryableError: later"
    assert row.run_after >= before + timedelta(seconds=59)
    assert (row.lease_token, row.worker_id) == (None, None)


@db
def test_retry__delayed_retry_is_not_claimable_yet():
    record.submit(n=1)
    finish(claim_one(), lifecycle.RETRY, retry_delay=3600.0)
    assert run_pending() == 0


@db
def test_release__returns_task_to_pending_without_spending_a_retry():
    record.submit(n=1)
    task = claim_one()
    finish(task, lifecycle.RELEASE)
    row = Task.objects.get(id=task.id)
    assert (row.status, row.retry_count, row.lease_token) == ("pending", 0, None)


@db
def test_unknown_task_type__row_fails_with_clear_error():
    Task.objects.create(task_type="ghost::gone", domain="ghost", key="g" * 64, payload={})
    assert run_pending() == 1
    row = TaskHistory.objects.get()
    assert row.status == "failed"
    assert "ghost::gone" in row.last_error
    assert "not registered" in row.last_error


# --- dead-letter retry ------------------------------------------------------------------------


def _dead_letter(definition, **payload):
    outcome = definition.submit(**payload)
    task = Task.objects.get(id=outcome.id)
    task = claim_one(domains=[task.domain])
    finish(task, lifecycle.DEAD_LETTER, error="RuntimeError: gave up")
    return TaskHistory.objects.get(id=outcome.id)


@executes
def test_retry_dead_letter__resubmits_and_the_new_task_runs():
    entry = _dead_letter(record.using(priority=30, tags={"tenant": "a"}), n=5)
    outcome = scheduler.domain("tests").retry_dead_letter(entry.id)
    assert outcome.kind == "inserted"
    assert outcome.id != entry.id
    task = Task.objects.get(id=outcome.id)
    assert (task.key, task.priority, task.payload) == (entry.key, 30, {"n": 5})
    assert dict(TaskTag.objects.filter(task_id=task.id).values_list("key", "value")) == {
        "tenant": "a"
    }
    assert run_pending() == 1
    assert TaskHistory.objects.get(id=outcome.id).status == "completed"
    assert TaskHistory.objects.get(id=entry.id).status == "dead_letter"


@db
def test_retry_dead_letter__through_scheduler():
    entry = _dead_letter(record, n=1)
    assert scheduler.retry_dead_letter(entry.id).kind == "inserted"


@db
def test_retry_dead_letter__keeps_explicit_key():
    entry = _dead_letter(record.using(key="report-1"), n=1)
    outcome = scheduler.retry_dead_letter(entry.id)
    assert record.using(key="report-1").submit(n=99).id == outcome.id


@db
def test_retry_dead_letter__twin_already_active_is_duplicate():
    entry = _dead_letter(record, n=1)
    twin = record.submit(n=1)
    outcome = scheduler.retry_dead_letter(entry.id)
    assert (outcome.kind, outcome.id) == ("duplicate", twin.id)


@db
@pytest.mark.parametrize(
    ("kind", "status", "pause_reason"),
    [(lifecycle.COMPLETED, "completed", None), (lifecycle.RELEASE, "paused", "manual")],
)
def test_pause_by_hand__of_a_running_task_ends_as_the_attempt_ends(kind, status, pause_reason):
    record.submit(n=1)
    task = claim_one()
    assert operator.pause_tasks([task.id]) == 1

    finish(task, kind)  # completed before its worker saw the request, or stopped for it

    if pause_reason is None:
        assert TaskHistory.objects.get(id=task.id).status == status
    else:
        row = Task.objects.get(id=task.id)
        assert (row.status, row.pause_reason, row.retry_count) == (status, pause_reason, 0)


@db
def test_retry_dead_letter__entry_remembers_its_retry_and_refuses_a_second():
    entry = _dead_letter(record, n=1)
    outcome = scheduler.retry_dead_letter(entry.id)
    entry.refresh_from_db()
    assert entry.retried_as_id == outcome.id
    assert entry.retried_at is not None

    with pytest.raises(AlreadyRetried, match=f"already retried as task {outcome.id}"):
        scheduler.retry_dead_letter(entry.id)
    assert Task.objects.count() == 1


@db
def test_retry_dead_letter__a_retry_that_dead_letters_again_is_a_new_entry():
    entry = _dead_letter(record, n=1)
    again = scheduler.retry_dead_letter(entry.id)
    finish(claim_one(), lifecycle.DEAD_LETTER, error="RuntimeError: still broken")

    assert scheduler.retry_dead_letter(again.id).kind == "inserted"


@db
def test_retry_dead_letter__entry_that_is_not_dead_letter_raises():
    record.submit(n=1)
    task = claim_one()
    finish(task)
    with pytest.raises(TaskNotFound):
        scheduler.retry_dead_letter(task.id)
    with pytest.raises(TaskNotFound):
        scheduler.retry_dead_letter(987654321)


@db
def test_retry_dead_letter__unregistered_type_is_rejected(history_factory):
    entry = history_factory(task_type="ghost::gone", domain="ghost", status="dead_letter")
    with pytest.raises(UnknownTaskType, match="ghost::gone"):
        scheduler.retry_dead_letter(entry.id)
    assert not Task.objects.exists()


@db
def test_retry_dead_letter__other_domains_entry_is_not_found_via_handle():
    entry = _dead_letter(other_noop)
    with pytest.raises(TaskNotFound):
        scheduler.domain("tests").retry_dead_letter(entry.id)
    assert not Task.objects.exists()


# --- fencing (G3) -----------------------------------------------------------------------------


@db
def test_apply_outcomes__wrong_lease_token_writes_nothing():
    record.submit(n=1)
    task = claim_one()
    stale = lifecycle.Outcome(task.id, uuid.uuid4(), lifecycle.COMPLETED, task.task_type)
    applied = lifecycle.apply_outcomes([stale])
    assert applied.written == []
    assert applied.lost == [stale]
    row = Task.objects.get(id=task.id)
    assert (row.status, row.lease_token) == ("running", task.lease_token)
    assert not TaskHistory.objects.exists()


@db
def test_apply_outcomes__right_lease_token_is_written():
    record.submit(n=1)
    task = claim_one()
    applied = finish(task)
    assert [o.task_id for o in applied.written] == [task.id]
    assert applied.lost == []


@db
def test_apply_outcomes__rescued_and_reclaimed_task_fences_off_old_worker():
    record.submit(n=1)
    old = claim_one()
    maintenance.rescue_orphans()  # its worker never registered: orphan
    new = claim_one()
    assert finish(old, lifecycle.DEAD_LETTER, error="zombie").lost
    assert finish(new).written
    assert TaskHistory.objects.get(id=old.id).status == "completed"


@db
def test_apply_outcomes__task_no_longer_running_is_lost():
    record.submit(n=1)
    task = claim_one()
    finish(task, lifecycle.RELEASE)
    applied = finish(task)
    assert applied.lost and not applied.written
    assert Task.objects.get(id=task.id).status == "pending"


@db
def test_apply_outcomes__batch_writes_owned_and_skips_lost():
    record.submit_batch([{"n": 1}, {"n": 2}])
    a, b = claim_one(), claim_one()
    applied = lifecycle.apply_outcomes(
        [
            lifecycle.Outcome(a.id, a.lease_token, lifecycle.COMPLETED, a.task_type),
            lifecycle.Outcome(b.id, uuid.uuid4(), lifecycle.COMPLETED, b.task_type),
        ]
    )
    assert [o.task_id for o in applied.written] == [a.id]
    assert [o.task_id for o in applied.lost] == [b.id]
    assert TaskHistory.objects.get().id == a.id
    assert Task.objects.get().id == b.id


@db
def test_apply_outcomes__records_io_and_moves_tags():
    record.using(tags={"k": "v"}).submit(n=1)
    task = claim_one()
    finish(task, duration_ms=250, io={"read_bytes": 100, "write_bytes": 40}, result=[1])
    row = TaskHistory.objects.get(id=task.id)
    assert (row.duration_ms, row.read_bytes, row.write_bytes, row.result) == (250, 100, 40, [1])
    assert list(TaskHistoryTag.objects.values_list("key", "value")) == [("k", "v")]
    assert not TaskTag.objects.exists()
