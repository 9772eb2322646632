"""Workflows from the user's side: dependencies across domains, parent and child tasks, siblings,
and delayed tasks. Tasks run in-thread with ``testing.run_pending()``."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from taskmill_django import ValidationError, scheduler, signals
from taskmill_django.models import Task, TaskDependency, TaskHistory, TaskTag
from taskmill_django.testing import run_pending
from tests.testapp.tasks import (
    async_fan_out,
    fan_out,
    fan_part,
    other_wf_step,
    permanent,
    record,
    wf_family,
    wf_siblings,
    wf_step,
)

pytestmark = pytest.mark.django_db

MISSING_ID = 987_654_321


@pytest.fixture
def on_commit(django_capture_on_commit_callbacks):
    """Run on-commit callbacks (the signals) when the block ends, as a real commit would."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


def _status(task_id: int) -> str:
    row = Task.objects.filter(id=task_id).first() or TaskHistory.objects.get(id=task_id)
    return row.status


def _steps(task_log) -> list[tuple[str, int]]:
    return [(e["domain"], e["n"]) for e in task_log.events("step")]


def _children(parent_id: int) -> list[TaskHistory]:
    return list(TaskHistory.objects.filter(parent_id=parent_id).order_by("id"))


# --- dependencies ----------------------------------------------------------------------------


def test_depends_on__chain_across_domains_runs_in_order(task_log):
    # A is the least urgent task and sits in another domain; B and C are urgent but must wait.
    a = other_wf_step.using(priority=200).submit(n=1)
    b = wf_step.using(depends_on=[a.id], priority=10).submit(n=2)
    c = wf_step.using(depends_on=[b.id], priority=5).submit(n=3)
    assert (_status(b.id), _status(c.id)) == ("blocked", "blocked")
    assert run_pending() == 3
    assert _steps(task_log) == [("other", 1), ("flows", 2), ("flows", 3)]
    assert {_status(t.id) for t in (a, b, c)} == {"completed"}


def test_depends_on__fan_in_waits_for_every_dependency_across_domains(task_log):
    a = other_wf_step.using(priority=20).submit(n=1)
    b = wf_step.using(priority=30).submit(n=2)
    c = wf_step.using(depends_on=[a.id, b.id], priority=5).submit(n=3)
    run_pending(limit=1)
    assert _status(a.id) == "completed"
    assert _status(c.id) == "blocked"
    run_pending()
    assert _steps(task_log) == [("other", 1), ("flows", 2), ("flows", 3)]
    assert _status(c.id) == "completed"


def test_dependency_failure__cancel_policy_cascades_down_the_chain(task_log):
    a = permanent.submit()
    b = wf_step.using(depends_on=[a.id]).submit(n=2)
    c = wf_step.using(depends_on=[b.id]).submit(n=3)
    d = wf_step.using(depends_on=[c.id]).submit(n=4)
    run_pending()
    assert [_status(t.id) for t in (a, b, c, d)] == [
        "failed",
        "dependency_failed",
        "dependency_failed",
        "dependency_failed",
    ]
    assert task_log.events("step") == []
    assert not Task.objects.exists()
    assert not TaskDependency.objects.exists()


def test_dependency_failure__fail_policy_records_the_dependent_as_failed(task_log):
    a = permanent.submit()
    b = wf_step.using(depends_on=[a.id], on_dependency_failure="fail").submit(n=2)
    run_pending()
    row = TaskHistory.objects.get(id=b.id)
    assert row.status == "failed"
    assert f"#{a.id}" in row.last_error
    assert task_log.events("step") == []


def test_dependency_failure__ignore_policy_runs_anyway(task_log):
    a = permanent.submit()
    b = wf_step.using(depends_on=[a.id], on_dependency_failure="ignore").submit(n=2)
    run_pending()
    assert _status(b.id) == "completed"
    assert _steps(task_log) == [("flows", 2)]


def test_depends_on__missing_dependency_is_rejected_leaving_nothing_behind():
    a = record.submit(n=1)
    with pytest.raises(ValidationError) as info:
        wf_step.using(depends_on=[a.id, MISSING_ID], tags={"batch": "x"}).submit(n=2)
    assert info.value.field == "depends_on"
    assert str(MISSING_ID) in info.value.message
    assert list(Task.objects.values_list("id", flat=True)) == [a.id]
    assert not TaskDependency.objects.exists()
    assert not TaskTag.objects.exists()


def test_depends_on__already_completed_dependency_counts_as_met(task_log):
    a = other_wf_step.submit(n=1)
    run_pending()
    b = wf_step.using(depends_on=[a.id]).submit(n=2)
    assert _status(b.id) == "pending"
    assert run_pending() == 1
    assert _steps(task_log) == [("other", 1), ("flows", 2)]


def test_depends_on__parent_task_counts_as_done_only_after_its_finalize(task_log):
    parent = fan_out.submit(parts=2)
    after = wf_step.using(depends_on=[parent.id], priority=5).submit(n=9)
    run_pending(limit=1)
    assert (_status(parent.id), _status(after.id)) == ("waiting", "blocked")
    run_pending()
    events = [e["event"] for e in task_log.events()]
    assert events == ["part", "part", "finalize", "step"]
    assert _status(after.id) == "completed"


def test_dependency_queries__dependencies_dependents_and_blocked():
    a = other_wf_step.using(priority=10).submit(n=1)
    b = wf_step.using(priority=20).submit(n=2)
    c = wf_step.using(depends_on=[b.id, a.id], priority=200).submit(n=3)
    d = wf_step.using(depends_on=[a.id], priority=200).submit(n=4)
    store = scheduler.store()
    assert store.task_dependencies(c.id) == sorted([a.id, b.id])
    assert store.task_dependents(a.id) == [c.id, d.id]
    assert store.task_dependents(b.id) == [c.id]
    assert [t.id for t in store.blocked_tasks()] == [c.id, d.id]
    assert store.blocked_count() == 2


def test_dependency_queries__nothing_blocked_once_dependencies_completed():
    a = other_wf_step.using(priority=10).submit(n=1)
    b = wf_step.using(priority=20).submit(n=2)
    c = wf_step.using(depends_on=[a.id, b.id], priority=200).submit(n=3)
    run_pending(limit=2)
    store = scheduler.store()
    assert store.blocked_count() == 0
    assert store.blocked_tasks() == []
    assert _status(c.id) == "pending"


def test_task_unblocked__sent_when_the_last_dependency_completes(received, on_commit):
    events = received(signals.task_unblocked)
    a = other_wf_step.using(priority=10).submit(n=1)
    b = wf_step.using(priority=20).submit(n=2)
    c = wf_step.using(depends_on=[a.id, b.id]).submit(n=3)
    with on_commit():
        run_pending(limit=1)
    assert events == []
    with on_commit():
        run_pending(limit=1)
    assert [(e["task_type"], e["task_id"]) for e in events] == [("flows::wf_step", c.id)]


def test_task_dependency_failed__sent_for_every_task_of_the_cascade(received, on_commit):
    events = received(signals.task_dependency_failed)
    a = permanent.submit()
    b = wf_step.using(depends_on=[a.id]).submit(n=2)
    c = wf_step.using(depends_on=[b.id]).submit(n=3)
    with on_commit():
        run_pending()
    assert sorted(e["task_id"] for e in events) == [b.id, c.id]
    assert {e["sender"] for e in events} == {wf_step}


# --- parent and children ---------------------------------------------------------------------


def test_fan_out__parent_waits_for_its_children_with_its_memo():
    parent = fan_out.submit(parts=3)
    run_pending(limit=1)
    row = Task.objects.get(id=parent.id)
    assert (row.status, row.memo) == ("waiting", {"parts": 3})
    children = Task.objects.filter(parent_id=parent.id).order_by("id")
    assert [(c.task_type, c.payload["part"], c.status) for c in children] == [
        ("flows::fan_part", 0, "pending"),
        ("flows::fan_part", 1, "pending"),
        ("flows::fan_part", 2, "pending"),
    ]


def test_fan_out__finalize_runs_after_all_children_with_the_memo(task_log):
    parent = fan_out.submit(parts=3)
    run_pending()
    assert sorted(e["part"] for e in task_log.events("part")) == [0, 1, 2]
    (finalized,) = task_log.events("finalize")
    assert finalized == {**finalized, "task_id": parent.id, "memo": {"parts": 3}}
    row = TaskHistory.objects.get(id=parent.id)
    assert (row.status, row.result) == ("completed", {"finalized": 3})
    assert [c.status for c in _children(parent.id)] == ["completed"] * 3
    assert not Task.objects.exists()


def test_async_spawn__async_tasks_spawn_children_and_siblings(task_log):
    parent = async_fan_out.submit()
    run_pending()
    assert sorted(e["part"] for e in task_log.events("part")) == [0, 1, 2, 3]
    children = _children(parent.id)
    assert (
        sorted(c.task_type for c in children)
        == ["flows::async_first_part"] + ["flows::fan_part"] * 3
    )
    assert [c.status for c in children] == ["completed"] * 4
    row = TaskHistory.objects.get(id=parent.id)
    assert (row.status, row.result) == ("completed", "spawned")


def test_fail_fast__first_child_failure_cancels_siblings_and_fails_parent(task_log):
    parent = fan_out.submit(parts=3, fail_part=0)
    run_pending()
    assert [e["part"] for e in task_log.events("part")] == [0]
    assert [(c.payload["part"], c.status) for c in _children(parent.id)] == [
        (0, "failed"),
        (1, "cancelled"),
        (2, "cancelled"),
    ]
    row = TaskHistory.objects.get(id=parent.id)
    assert row.status == "failed"
    assert "fail_fast" in row.last_error
    assert task_log.events("finalize") == []
    assert not Task.objects.exists()


def test_fail_fast_false__every_child_runs_then_the_parent_fails(task_log):
    parent = fan_out.using(fail_fast=False).submit(parts=3, fail_part=0)
    run_pending()
    assert sorted(e["part"] for e in task_log.events("part")) == [0, 1, 2]
    assert [(c.payload["part"], c.status) for c in _children(parent.id)] == [
        (0, "failed"),
        (1, "completed"),
        (2, "completed"),
    ]
    row = TaskHistory.objects.get(id=parent.id)
    assert row.status == "failed"
    assert "1 child task(s) did not complete" in row.last_error
    assert task_log.events("finalize") == []


def test_spawn_sibling__joins_the_same_parent_which_waits_for_it(task_log):
    parent = wf_family.submit(
        children=[{"task": "siblings", "payload": {"parts": [7], "one_by_one": True}}]
    )
    run_pending()
    siblings = [c for c in _children(parent.id) if c.task_type == "flows::fan_part"]
    assert [(c.payload, c.status) for c in siblings] == [({"part": 7}, "completed")]
    row = TaskHistory.objects.get(id=parent.id)
    assert (row.status, row.result) == ("completed", {"children": 1})
    assert row.finished_at >= siblings[0].finished_at


def test_spawn_siblings__adds_every_peer_under_the_same_parent():
    parent = wf_family.submit(children=[{"task": "siblings", "payload": {"parts": [7, 8]}}])
    run_pending()
    spawner = TaskHistory.objects.get(task_type="flows::wf_siblings")
    siblings = [c for c in _children(parent.id) if c.task_type == "flows::fan_part"]
    assert [c.payload["part"] for c in siblings] == [7, 8]
    assert spawner.result == {"siblings": [c.id for c in siblings]}
    assert {c.status for c in siblings} == {"completed"}
    assert _status(parent.id) == "completed"


def test_spawn_siblings__one_transaction_refused_batch_inserts_none():
    # The second sibling collides (duplicate="reject") with a pending child of the same
    # parent, so the whole batch is refused, including the first sibling.
    parent = wf_family.submit(
        children=[
            {"task": "siblings", "payload": {"parts": [7, 0], "duplicate": "reject"}},
            {"task": "part", "payload": {"part": 0}},
        ]
    )
    run_pending()
    spawner = TaskHistory.objects.get(task_type="flows::wf_siblings")
    assert spawner.result == {"error": "DuplicateTaskError", "field": None}
    parts = [c.payload["part"] for c in _children(parent.id) if c.task_type == "flows::fan_part"]
    assert parts == [0]
    assert not Task.objects.exists()


@pytest.mark.parametrize("one_by_one", [True, False], ids=["spawn_sibling", "spawn_siblings"])
def test_spawn_sibling__from_a_root_task_raises_validation_error(one_by_one):
    root = wf_siblings.submit(parts=[1], one_by_one=one_by_one)
    run_pending()
    row = TaskHistory.objects.get(id=root.id)
    assert (row.status, row.result) == (
        "completed",
        {"error": "ValidationError", "field": "spawn_sibling"},
    )
    assert not TaskHistory.objects.filter(task_type="flows::fan_part").exists()
    assert not Task.objects.exists()


@pytest.mark.parametrize("ttl_from", ["submission", "first_attempt"])
def test_spawn_child__inherits_the_remaining_ttl_of_the_parent(ttl_from):
    parent = wf_family.using(ttl=600, ttl_from=ttl_from).submit(
        children=[{"task": "part", "payload": {"part": 1}}]
    )
    run_pending(limit=1)
    parent_row = Task.objects.get(id=parent.id)
    child = Task.objects.get(parent_id=parent.id)
    assert child.ttl_seconds is not None
    assert child.ttl_seconds <= 600
    assert abs(child.expires_at - parent_row.expires_at) < timedelta(seconds=2)


def test_spawn_child__own_shorter_ttl_wins_over_the_parents():
    parent = wf_family.using(ttl=600).submit(
        children=[{"task": "part", "payload": {"part": 1}, "options": {"ttl": 60}}]
    )
    before = timezone.now()
    run_pending(limit=1)
    child = Task.objects.get(parent_id=parent.id)
    assert child.ttl_seconds == 60
    assert (
        before + timedelta(seconds=59) <= child.expires_at <= timezone.now() + timedelta(seconds=60)
    )


@pytest.mark.parametrize(
    ("parent_priority", "child_priority", "expected"),
    [
        pytest.param(50, None, 50, id="parent_more_urgent"),
        pytest.param(200, 20, 20, id="child_more_urgent"),
        pytest.param(128, 0, 0, id="child_realtime"),
    ],
)
def test_spawn_child__takes_the_more_urgent_priority(parent_priority, child_priority, expected):
    options = {} if child_priority is None else {"priority": child_priority}
    parent = wf_family.using(priority=parent_priority).submit(
        children=[{"task": "part", "payload": {"part": 1}, "options": options}]
    )
    run_pending(limit=1)
    assert Task.objects.get(parent_id=parent.id).priority == expected


def test_cancel__waiting_parent_cancels_its_children(task_log):
    parent = fan_out.submit(parts=2)
    run_pending(limit=1)
    assert scheduler.cancel(parent.id) is True
    assert _status(parent.id) == "cancelled"
    assert [c.status for c in _children(parent.id)] == ["cancelled", "cancelled"]
    assert run_pending() == 0
    assert task_log.events("part") == []
    assert task_log.events("finalize") == []


def test_submit__missing_parent_is_rejected_leaving_nothing_behind():
    with pytest.raises(ValidationError) as info:
        fan_part.using(parent=MISSING_ID, tags={"k": "v"}).submit(part=1)
    assert info.value.field == "parent"
    assert not Task.objects.exists()
    assert not TaskTag.objects.exists()


# --- delayed tasks ---------------------------------------------------------------------------


def test_run_after__delay_is_not_claimed_before_it_is_due():
    outcome = record.using(run_after=timedelta(hours=1)).submit(n=1)
    assert run_pending() == 0
    assert _status(outcome.id) == "pending"


def test_run_after__delay_is_claimed_once_due():
    outcome = record.using(run_after=timedelta(hours=1)).submit(n=1)
    Task.objects.filter(id=outcome.id).update(run_after=timezone.now() - timedelta(minutes=1))
    assert run_pending() == 1
    assert _status(outcome.id) == "completed"


def test_run_after__aware_datetime_is_kept_as_that_instant():
    when = datetime.now(ZoneInfo("Europe/Paris")).replace(microsecond=0) + timedelta(hours=2)
    outcome = record.using(run_after=when).submit(n=1)
    assert Task.objects.get(id=outcome.id).run_after == when
    assert run_pending() == 0


def test_run_after__aware_datetime_in_the_past_runs_at_once():
    when = datetime.now(ZoneInfo("America/New_York")) - timedelta(hours=1)
    outcome = record.using(run_after=when).submit(n=1)
    assert run_pending() == 1
    assert _status(outcome.id) == "completed"


def test_run_after__naive_datetime_is_rejected():
    with pytest.raises(ValidationError) as info:
        record.using(run_after=datetime(2030, 1, 1, 12, 0)).submit(n=1)
    assert info.value.field == "run_after"
    assert not Task.objects.exists()


def test_next_run_after__earliest_delayed_pending_task():
    record.submit(n=0)
    record.using(run_after=timedelta(hours=2)).submit(n=1)
    soonest = record.using(run_after=timedelta(hours=1)).submit(n=2)
    assert scheduler.store().next_run_after() == Task.objects.get(id=soonest.id).run_after
