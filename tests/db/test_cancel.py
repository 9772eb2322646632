"""Cancellation: waiting tasks go to history at once, running ones get a fenced request."""

from __future__ import annotations

import pytest
from django.db.models import Q

from taskmill_django import ValidationError, scheduler
from taskmill_django.models import Task, TaskHistory
from taskmill_django.store import lifecycle
from tests.db.conftest import claim_one, finish
from tests.testapp.tasks import echo, other_noop, record

pytestmark = pytest.mark.django_db


def _active_ids() -> list[int]:
    return list(Task.objects.order_by("id").values_list("id", flat=True))


def _status(task_id: int) -> str:
    return TaskHistory.objects.get(id=task_id).status


def test_cancel__pending_task_goes_to_history_cancelled():
    outcome = record.submit(n=1)
    assert scheduler.cancel(outcome.id) is True
    assert _status(outcome.id) == "cancelled"
    assert not Task.objects.exists()


def test_cancel__unknown_id_returns_false():
    assert scheduler.cancel(424242) is False


def test_cancel__finished_task_returns_false():
    record.submit(n=1)
    task = claim_one()
    finish(task)
    assert scheduler.cancel(task.id) is False
    assert _status(task.id) == "completed"


def test_cancel__running_task_gets_a_request_and_keeps_running():
    record.submit(n=1)
    task = claim_one()
    assert scheduler.cancel(task.id) is True
    row = Task.objects.get(id=task.id)
    assert (row.status, row.cancel_reason) == ("running", "cancelled")
    assert not TaskHistory.objects.exists()


def test_cancel__running_task_is_recorded_cancelled_whatever_its_outcome():
    record.submit(n=1)
    task = claim_one()
    scheduler.cancel(task.id)
    finish(task, lifecycle.COMPLETED)
    assert _status(task.id) == "cancelled"


def test_cancel__running_task_asking_for_retry_is_not_retried():
    record.submit(n=1)
    task = claim_one()
    scheduler.cancel(task.id)
    finish(task, lifecycle.RETRY, error="RetryableError: cancelled")
    assert _status(task.id) == "cancelled"
    assert not Task.objects.exists()


def test_cancel__running_task_twice_counts_once():
    record.submit(n=1)
    task = claim_one()
    assert scheduler.cancel(task.id) is True
    assert scheduler.cancel(task.id) is False


def test_cancel__running_task_with_requeue_does_not_run_again():
    record.submit(n=1)
    task = claim_one()
    record.submit(n=1)  # requeued
    scheduler.cancel_all()
    finish(task)
    assert _status(task.id) == "cancelled"
    assert not Task.objects.exists()


def test_cancel__blocked_task_goes_to_history():
    dep = record.submit(n=1)
    blocked = record.using(depends_on=[dep.id]).submit(n=2)
    assert scheduler.cancel(blocked.id) is True
    assert _status(blocked.id) == "cancelled"
    assert _active_ids() == [dep.id]


def test_cancel__children_are_cancelled_with_parent():
    parent = record.submit(n=1)
    child = record.using(parent=parent.id).submit(n=2)
    unrelated = record.submit(n=3)
    scheduler.cancel(parent.id)
    assert _status(child.id) == "cancelled"
    assert _active_ids() == [unrelated.id]


def test_cancel_all__cancels_pending_and_requests_running():
    waiting = record.submit_batch([{"n": 1}, {"n": 2}])
    other = other_noop.submit()
    running = claim_one(domains=["tests"])
    assert scheduler.cancel_all() == sorted(o.id for o in [*waiting, other])
    assert Task.objects.get().id == running.id
    assert Task.objects.get().cancel_reason == "cancelled"
    assert TaskHistory.objects.filter(status="cancelled").count() == 2


def test_cancel_all__of_a_domain_touches_only_that_domain():
    mine = record.submit_batch([{"n": 1}, {"n": 2}])
    theirs = other_noop.submit()
    assert scheduler.domain("tests").cancel_all() == [o.id for o in mine]
    assert _active_ids() == [theirs.id]
    assert {_status(o.id) for o in mine} == {"cancelled"}


def test_domain_cancel__other_domains_task_is_not_touched():
    theirs = other_noop.submit()
    assert scheduler.domain("tests").cancel(theirs.id) is False
    assert _active_ids() == [theirs.id]


def test_cancel_type__only_that_type():
    gone = record.submit_batch([{"n": 1}, {"n": 2}])
    kept = echo.submit(value=1)
    assert scheduler.cancel_type("tests::record") == [o.id for o in gone]
    assert _active_ids() == [kept.id]


def test_cancel_group__only_that_group():
    gone = record.using(group="uploads").submit_batch([{"n": 1}, {"n": 2}])
    kept = record.using(group="downloads").submit(n=3)
    ungrouped = record.submit(n=4)
    assert scheduler.cancel_group("uploads") == [o.id for o in gone]
    assert _active_ids() == [kept.id, ungrouped.id]


def test_cancel_by_tag__needs_key_and_value():
    hit = record.using(tags={"tenant": "a"}).submit(n=1)
    other_value = record.using(tags={"tenant": "b"}).submit(n=2)
    other_key = record.using(tags={"owner": "a"}).submit(n=3)
    assert scheduler.cancel_by_tag("tenant", "a") == [hit.id]
    assert _status(hit.id) == "cancelled"
    assert _active_ids() == [other_value.id, other_key.id]


def test_cancel_where__q_object_filters_in_sql():
    urgent = record.using(priority=5).submit(n=1)
    low = record.using(priority=200).submit(n=2)
    assert scheduler.cancel_where(Q(priority__gt=100)) == [low.id]
    assert _active_ids() == [urgent.id]


def test_cancel_where__callable_filters_rows():
    outcomes = record.submit_batch([{"n": n} for n in range(4)])
    even = [outcomes[0].id, outcomes[2].id]
    assert scheduler.cancel_where(lambda task: task.payload["n"] % 2 == 0) == even
    assert _active_ids() == [outcomes[1].id, outcomes[3].id]


def test_cancel_where__callable_matching_nothing_returns_no_ids():
    record.submit(n=1)
    assert scheduler.cancel_where(lambda task: False) == []
    assert Task.objects.count() == 1


def test_cancel_where__neither_q_nor_callable_is_rejected():
    with pytest.raises(ValidationError) as info:
        scheduler.cancel_where("priority > 5")
    assert info.value.field == "condition"


def test_cancel_where__of_a_domain_is_scoped():
    mine = record.submit(n=1)
    theirs = other_noop.submit()
    assert scheduler.domain("tests").cancel_where(Q(priority__lt=255)) == [mine.id]
    assert scheduler.domain("tests").cancel_where(lambda task: True) == []
    assert _active_ids() == [theirs.id]


def test_cancel_by_tag_key_prefix__matches_key_prefix_within_domain():
    a = record.using(tags={"user.id": "1"}).submit(n=1)
    b = record.using(tags={"user.name": "x"}).submit(n=2)
    kept = record.using(tags={"username": "y", "other.user": "z"}).submit(n=3)
    theirs = other_noop.using(tags={"user.id": "1"}).submit()
    assert scheduler.domain("tests").cancel_by_tag_key_prefix("user.") == [a.id, b.id]
    assert {_status(a.id), _status(b.id)} == {"cancelled"}
    assert _active_ids() == [kept.id, theirs.id]


def test_cancel_by_tag_key_prefix__no_match_returns_no_ids():
    record.using(tags={"tenant": "a"}).submit(n=1)
    assert scheduler.domain("tests").cancel_by_tag_key_prefix("user.") == []


def test_cancel_where__ids_of_running_matches_then_of_their_children():
    running = record.submit(n=1)
    claim_one()
    parent = record.submit(n=2)
    child = echo.using(parent=parent.id).submit(value=3)

    ids = scheduler.cancel_where(Q(task_type="tests::record"))

    assert ids == [running.id, parent.id, child.id]
