"""Dependencies: blocked until every dependency completes; failure policies."""

from __future__ import annotations

import pytest

from taskmill_django import ValidationError, scheduler
from taskmill_django.models import Task, TaskDependency, TaskHistory
from taskmill_django.store import lifecycle
from tests.db.conftest import claim_one, finish
from tests.testapp.tasks import echo, other_noop, record

pytestmark = pytest.mark.django_db


def _status(task_id: int) -> str:
    row = Task.objects.filter(id=task_id).first() or TaskHistory.objects.get(id=task_id)
    return row.status


def _run_next(kind: str = lifecycle.COMPLETED, **fields) -> Task:
    task = claim_one()
    finish(task, kind, **fields)
    return task


def test_depends_on__task_is_blocked_while_dependency_is_pending():
    dep = record.submit(n=1)
    blocked = echo.using(depends_on=[dep.id]).submit(value=1)
    assert blocked.kind == "inserted"
    assert _status(blocked.id) == "blocked"


def test_depends_on__blocked_task_is_not_claimed():
    dep = record.submit(n=1)
    echo.using(depends_on=[dep.id]).submit(value=1)
    assert claim_one().id == dep.id
    assert not scheduler.store().pending_tasks()


def test_depends_on__completion_makes_dependent_pending():
    dep = record.submit(n=1)
    blocked = echo.using(depends_on=[dep.id]).submit(value=1)
    _run_next()
    assert _status(blocked.id) == "pending"


def test_depends_on__waits_for_every_dependency():
    a = record.submit(n=1)
    b = record.submit(n=2)
    blocked = echo.using(depends_on=[a.id, b.id]).submit(value=1)
    _run_next()
    assert _status(blocked.id) == "blocked"
    _run_next()
    assert _status(blocked.id) == "pending"


def test_depends_on__dependency_already_completed_is_pending_at_once():
    dep = record.submit(n=1)
    _run_next()
    outcome = echo.using(depends_on=[dep.id]).submit(value=1)
    assert _status(outcome.id) == "pending"


def test_depends_on__dependency_in_another_domain_counts():
    dep = other_noop.submit()
    blocked = echo.using(depends_on=[dep.id]).submit(value=1)
    finish(claim_one(domains=["other"]))
    assert _status(blocked.id) == "pending"


def test_depends_on__missing_id_is_rejected_and_nothing_inserted():
    dep = record.submit(n=1)
    with pytest.raises(ValidationError, match="987654") as info:
        echo.using(depends_on=[dep.id, 987654]).submit(value=1)
    assert info.value.field == "depends_on"
    assert list(Task.objects.values_list("id", flat=True)) == [dep.id]
    assert not TaskDependency.objects.exists()


def test_depends_on__missing_id_in_batch_inserts_nothing():
    with pytest.raises(ValidationError):
        echo.using(depends_on=[987654]).submit_batch([{"value": 1}, {"value": 2}])
    assert not Task.objects.exists()


def test_depends_on__queries_list_edges_both_ways():
    dep = record.submit(n=1)
    a = echo.using(depends_on=[dep.id]).submit(value=1)
    b = echo.using(depends_on=[dep.id]).submit(value=2)
    store = scheduler.store()
    assert store.task_dependencies(a.id) == [dep.id]
    assert store.task_dependents(dep.id) == [a.id, b.id]


def test_dependency_failure__cancel_policy_records_dependency_failed():
    dep = record.submit(n=1)
    blocked = echo.using(depends_on=[dep.id]).submit(value=1)
    _run_next(lifecycle.FAILED, error="PermanentError: no")
    row = TaskHistory.objects.get(id=blocked.id)
    assert row.status == "dependency_failed"
    assert f"#{dep.id}" in row.last_error
    assert not Task.objects.exists()


def test_dependency_failure__dead_letter_counts_as_failure():
    dep = record.submit(n=1)
    blocked = echo.using(depends_on=[dep.id]).submit(value=1)
    _run_next(lifecycle.DEAD_LETTER, error="ValueError: x")
    assert _status(blocked.id) == "dependency_failed"


def test_dependency_failure__cancelled_dependency_fails_dependent():
    dep = record.submit(n=1)
    blocked = echo.using(depends_on=[dep.id]).submit(value=1)
    scheduler.cancel(dep.id)
    assert _status(blocked.id) == "dependency_failed"


def test_dependency_failure__cascades_down_the_chain():
    a = record.submit(n=1)
    b = echo.using(depends_on=[a.id]).submit(value=1)
    c = echo.using(depends_on=[b.id]).submit(value=2)
    _run_next(lifecycle.FAILED)
    assert (_status(b.id), _status(c.id)) == ("dependency_failed", "dependency_failed")


def test_dependency_failure__fail_policy_records_failed():
    dep = record.submit(n=1)
    blocked = echo.using(depends_on=[dep.id], on_dependency_failure="fail").submit(value=1)
    _run_next(lifecycle.FAILED)
    assert _status(blocked.id) == "failed"


def test_dependency_failure__ignore_policy_runs_anyway():
    dep = record.submit(n=1)
    blocked = echo.using(depends_on=[dep.id], on_dependency_failure="ignore").submit(value=1)
    _run_next(lifecycle.FAILED)
    assert _status(blocked.id) == "pending"


def test_dependency_failure__ignore_still_waits_for_other_dependencies():
    bad = record.submit(n=1)
    slow = record.submit(n=2)
    blocked = echo.using(depends_on=[bad.id, slow.id], on_dependency_failure="ignore").submit(
        value=1
    )
    _run_next(lifecycle.FAILED)
    assert _status(blocked.id) == "blocked"
    _run_next()
    assert _status(blocked.id) == "pending"


def test_dependency_failure__dependency_already_failed_fails_at_submit():
    dep = record.submit(n=1)
    _run_next(lifecycle.FAILED)
    outcome = echo.using(depends_on=[dep.id]).submit(value=1)
    assert _status(outcome.id) == "dependency_failed"


def test_blocked_queries__list_and_count_blocked_tasks():
    dep = record.submit(n=1)
    blocked = echo.using(depends_on=[dep.id]).submit(value=1)
    store = scheduler.store()
    assert [t.id for t in store.blocked_tasks()] == [blocked.id]
    assert store.blocked_count() == 1
    assert scheduler.snapshot().blocked_count == 1
