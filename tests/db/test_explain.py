"""scheduler.explain(): every reason a task is not running now."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from taskmill_django import RateLimit, TaskNotFound, scheduler
from taskmill_django.models import RateBucket, Task, Worker
from taskmill_django.read.explain import Reason
from taskmill_django.store import manual, workers
from tests.db.conftest import claim_one
from tests.settings import TASKMILL
from tests.testapp.tasks import noop, other_noop, record

pytestmark = pytest.mark.django_db


class HighPressure:
    """A pressure source for the throttling test."""

    name = "test"

    def pressure(self) -> float:
        return 0.9


@pytest.fixture
def worker() -> uuid.UUID:
    """A live worker serving every domain, with room for two tasks."""
    return workers.register_worker("w1", 1234, 2, None)


def codes(task_id: int) -> list[str]:
    return [reason.code for reason in scheduler.explain(task_id)]


def reason(task_id: int, code: str) -> Reason:
    (found,) = [r for r in scheduler.explain(task_id) if r.code == code]
    return found


def test_explain__pending_task_with_a_live_worker_is_ready(worker):
    outcome = record.submit(n=1)
    assert codes(outcome.id) == ["ready"]


def test_explain__no_live_worker(worker):
    Worker.objects.update(heartbeat_at=timezone.now() - timedelta(minutes=5))
    outcome = record.submit(n=1)
    found = reason(outcome.id, "no_live_worker")
    assert "no live worker" in found.message
    assert found.data["live_workers"] == 0


def test_explain__no_live_worker_serves_the_domain():
    workers.register_worker("media-only", 1, 1, ["media"])
    outcome = record.submit(n=1)
    found = reason(outcome.id, "no_live_worker")
    assert "'tests'" in found.message
    assert found.data["live_workers"] == 1


def test_explain__stopping_worker_does_not_count(worker):
    Worker.objects.update(status="stopping")
    assert codes(record.submit(n=1).id) == ["no_live_worker"]


def test_explain__blocked_on_each_unfinished_dependency(worker):
    first = record.submit(n=1)
    second = record.submit(n=2)
    blocked = record.using(depends_on=[first.id, second.id]).submit(n=3)
    reasons = scheduler.explain(blocked.id)
    assert [r.code for r in reasons] == ["dependency", "dependency"]
    assert reasons[0].message == f"waiting on dependency #{first.id} (tests::record, pending)"
    assert reasons[1].data["task_id"] == second.id


def test_explain__run_after_in_the_future(worker):
    outcome = record.using(run_after=timedelta(hours=1)).submit(n=1)
    found = reason(outcome.id, "run_after")
    assert found.data["seconds"] > 3500
    assert "run_after is in the future" in found.message


def test_explain__expiry(worker):
    outcome = record.using(ttl=3600).submit(n=1)
    assert "expires" in codes(outcome.id)
    Task.objects.filter(id=outcome.id).update(expires_at=timezone.now() - timedelta(seconds=5))
    assert "expired" in codes(outcome.id)


def test_explain__scheduler_paused(worker):
    outcome = record.submit(n=1)
    scheduler.pause_all()
    assert "scheduler_paused" in codes(outcome.id)


def test_explain__domain_paused(worker):
    outcome = record.submit(n=1)
    scheduler.domain("tests").pause()
    assert reason(outcome.id, "domain_paused").data == {"domain": "tests"}


def test_explain__group_paused_until(worker):
    until = timezone.now() + timedelta(hours=2)
    outcome = record.using(group="g1").submit(n=1)
    scheduler.pause_group("g1", until=until)
    found = reason(outcome.id, "group_paused")
    assert found.data["paused_until"] == until
    assert "until" in found.message


def test_explain__group_at_its_cap(worker):
    scheduler.set_group_limit("g1", 1)
    record.using(group="g1").submit(n=1)
    claim_one(worker_id=worker)
    waiting = record.using(group="g1").submit(n=2)
    found = reason(waiting.id, "group_cap")
    assert "(1/1)" in found.message
    assert found.data == {"group": "g1", "running": 1, "cap": 1}


def test_explain__domain_and_global_caps(worker):
    scheduler.domain("tests").set_max_concurrency(1)
    scheduler.set_max_concurrency(1)
    record.submit(n=1)
    claim_one(worker_id=worker)
    waiting = record.submit(n=2)
    assert {"domain_cap", "global_cap"} <= set(codes(waiting.id))
    assert reason(waiting.id, "global_cap").message == "the cluster is at its cap (1/1 running)"


def test_explain__rate_limited_until_next_token(worker):
    scheduler.set_rate_limit("tests::record", RateLimit.per_minute(1))
    RateBucket.objects.create(
        name="rate_limit:tests::record", tokens=0.0, refreshed_at=timezone.now()
    )
    outcome = record.submit(n=1)
    found = reason(outcome.id, "rate_limited")
    assert found.data["next_token_at"] > timezone.now() + timedelta(seconds=50)
    assert "next token at" in found.message


def test_explain__full_bucket_is_not_a_reason(worker):
    scheduler.set_rate_limit("tests::record", RateLimit.per_second(5))
    outcome = record.submit(n=1)
    assert codes(outcome.id) == ["ready"]


def test_explain__preemptor_holds_back_less_urgent_tasks(worker):
    outcome = record.submit(n=1)
    other_noop.using(priority=0).submit()
    found = reason(outcome.id, "preemptor_active")
    assert found.data == {"preemptor_priority": 0, "priority": 128}


@override_settings(
    TASKMILL={**TASKMILL, "PRESSURE_SOURCES": ["tests.db.test_explain.HighPressure"]}
)
def test_explain__throttled_by_pressure(worker):
    background = record.using(priority=200).submit(n=1)
    urgent = record.using(priority=64).submit(n=2)
    found = reason(background.id, "throttled")
    assert "0.90 > 0.5" in found.message
    assert "throttled" not in codes(urgent.id)


def test_explain__queued_behind_more_urgent_tasks_when_slots_are_short():
    workers.register_worker("small", 1, 1, None)
    record.using(priority=10).submit(n=1)
    record.using(priority=10).submit(n=2)
    last = record.using(priority=200).submit(n=3)
    found = reason(last.id, "queued_behind")
    assert found.data["count"] == 2
    assert found.message == "behind 2 task(s) of higher effective priority"


def test_explain__enough_free_slots_is_not_a_reason(worker):
    record.using(priority=10).submit(n=1)
    last = record.using(priority=200).submit(n=2)
    assert codes(last.id) == ["ready"]


def test_explain__running_task(worker):
    record.submit(n=1)
    running = claim_one(worker_id=worker)
    reasons = scheduler.explain(running.id)
    assert [r.code for r in reasons] == ["running"]
    assert "on worker w1" in reasons[0].message


def test_explain__running_task_with_cancel_request_and_dead_worker():
    record.submit(n=1)
    running = claim_one()  # its worker never registered: nobody heart-beats for it
    scheduler.cancel(running.id)
    assert codes(running.id) == ["running", "cancel_requested", "orphaned"]


def test_explain__paused_by_hand(worker):
    outcome = record.submit(n=1)
    assert manual.pause_task(outcome.id)
    found = reason(outcome.id, "paused")
    assert found.data == {"pause_reason": "manual"}
    assert "resume" in found.message


def test_explain__waiting_for_children(worker):
    parent = record.submit(n=1)
    noop.using(parent=parent.id).submit(child=1)
    Task.objects.filter(id=parent.id).update(status="waiting")
    found = scheduler.explain(parent.id)
    assert [r.code for r in found] == ["waiting_for_children"]
    assert found[0].data == {"children": 1}


def test_explain__finished_task(worker):
    outcome = record.submit(n=1)
    scheduler.cancel(outcome.id)
    (found,) = scheduler.explain(outcome.id)
    assert found.code == "finished"
    assert found.data["status"] == "cancelled"


def test_explain__unknown_id_raises():
    with pytest.raises(TaskNotFound):
        scheduler.explain(987654321)


def test_explain__several_reasons_at_once(worker):
    scheduler.pause_all()
    outcome = record.using(run_after=timedelta(hours=1), group="g2").submit(n=1)
    scheduler.pause_group("g2")
    assert codes(outcome.id) == ["run_after", "scheduler_paused", "group_paused"]


@override_settings(
    TASKMILL={
        **TASKMILL,
        "PRIORITY_AGING": {"grace_period": 0, "interval": 1, "step": 10, "ceiling": 0},
    }
)
def test_explain__queue_position_uses_effective_priority_with_aging():
    workers.register_worker("small", 1, 1, None)
    old = record.using(priority=200).submit(n=1)
    Task.objects.filter(id=old.id).update(created_at=timezone.now() - timedelta(hours=1))
    fresh = record.using(priority=100).submit(n=2)
    found = reason(fresh.id, "queued_behind")
    assert found.data["count"] == 1
    assert "queued_behind" not in codes(old.id)


@override_settings(TASKMILL={**TASKMILL, "GROUP_WEIGHTS": {"a": 1, "b": 1}, "MAX_CONCURRENCY": 4})
def test_explain__group_used_its_fair_share(worker):
    workers.register_worker("w2", 1235, 2, None)  # 4 live slots, as many as the global cap
    record.using(group="a").submit(n=1)
    record.using(group="a").submit(n=2)
    claim_one(worker_id=worker)
    claim_one(worker_id=worker)
    waiting = record.using(group="a").submit(n=3)
    record.using(group="b").submit(n=4)
    record.using(group="b").submit(n=5)
    found = reason(waiting.id, "fair_share")
    assert found.data == {"group": "a", "running": 2, "share": 2}
