"""Time to live from the user's side: both clocks, the dispatch-time check, the expiry sweep,
precedence of task, type, domain and global TTLs, and the cascade to children."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.test import override_settings
from django.utils import timezone

from taskmill_django import Domain, signals
from taskmill_django.models import Task, TaskHistory
from taskmill_django.store import lifecycle
from taskmill_django.store.maintenance import expire_due
from taskmill_django.testing import run_pending
from tests.db.conftest import claim_one, finish
from tests.testapp.tasks import fan_out, flaky, record

pytestmark = pytest.mark.django_db


@pytest.fixture
def on_commit(django_capture_on_commit_callbacks):
    """Run on-commit callbacks (the signals) when the block ends, as a real commit would."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


def _expire_now(*task_ids: int) -> None:
    Task.objects.filter(id__in=task_ids).update(expires_at=timezone.now() - timedelta(minutes=1))


def _status(task_id: int) -> str:
    row = Task.objects.filter(id=task_id).first() or TaskHistory.objects.get(id=task_id)
    return row.status


# --- ttl_from="submission" -------------------------------------------------------------------


def test_ttl_submission__deadline_counts_from_submission():
    before = timezone.now()
    outcome = record.using(ttl=60).submit(n=1)
    row = Task.objects.get(id=outcome.id)
    assert row.ttl_seconds == 60
    assert (
        before + timedelta(seconds=60) <= row.expires_at <= timezone.now() + timedelta(seconds=60)
    )


def test_ttl_submission__expired_task_is_never_claimed():
    outcome = record.using(ttl=60).submit(n=1)
    _expire_now(outcome.id)
    assert run_pending() == 0
    assert _status(outcome.id) == "pending"


def test_expire_due__moves_expired_task_to_history_as_expired(received, on_commit):
    events = received(signals.task_expired)
    outcome = record.using(ttl=60).submit(n=1)
    _expire_now(outcome.id)
    with on_commit():
        assert expire_due() == 1
    assert TaskHistory.objects.get(id=outcome.id).status == "expired"
    assert not Task.objects.exists()
    assert [(e["sender"], e["task_id"]) for e in events] == [(record, outcome.id)]


def test_expire_due__leaves_tasks_within_their_ttl():
    alive = record.using(ttl=60).submit(n=1)
    forever = record.submit(n=2)
    assert expire_due() == 0
    assert {_status(alive.id), _status(forever.id)} == {"pending"}


def test_expire_due__running_attempt_may_finish():
    outcome = record.using(ttl=60).submit(n=1)
    task = claim_one()
    _expire_now(outcome.id)
    assert expire_due() == 0
    finish(task)
    assert _status(outcome.id) == "completed"


def test_expire_due__blocked_task_expires_while_waiting_for_its_dependency():
    dependency = record.submit(n=1)
    blocked = record.using(depends_on=[dependency.id], ttl=60).submit(n=2)
    _expire_now(blocked.id)
    assert expire_due() == 1
    assert _status(blocked.id) == "expired"
    assert _status(dependency.id) == "pending"


def test_expire_due__dependents_of_an_expired_task_fail_their_dependency():
    expiring = record.using(ttl=60).submit(n=1)
    dependent = record.using(depends_on=[expiring.id]).submit(n=2)
    _expire_now(expiring.id)
    expire_due()
    assert _status(dependent.id) == "dependency_failed"
    assert run_pending() == 0


# --- ttl_from="first_attempt" ----------------------------------------------------------------


def test_ttl_first_attempt__no_deadline_before_the_first_claim():
    outcome = record.using(ttl=60, ttl_from="first_attempt").submit(n=1)
    row = Task.objects.get(id=outcome.id)
    assert (row.ttl_seconds, row.ttl_from, row.expires_at) == (60, "first_attempt", None)
    assert expire_due() == 0


def test_ttl_first_attempt__deadline_set_at_the_first_claim():
    outcome = record.using(ttl=60, ttl_from="first_attempt").submit(n=1)
    claim_one()
    row = Task.objects.get(id=outcome.id)
    assert row.expires_at == row.started_at + timedelta(seconds=60)


def test_ttl_first_attempt__deadline_kept_across_retries():
    outcome = flaky.using(ttl=60, ttl_from="first_attempt").submit(fail_times=1)
    finish(claim_one(), lifecycle.RETRY, error="RetryableError: once")
    deadline = Task.objects.get(id=outcome.id).expires_at
    assert deadline is not None
    claim_one()
    assert Task.objects.get(id=outcome.id).expires_at == deadline


def test_ttl_first_attempt__retry_after_the_deadline_expires():
    outcome = flaky.using(ttl=60, ttl_from="first_attempt").submit(fail_times=1)
    finish(claim_one(), lifecycle.RETRY, error="RetryableError: once")
    _expire_now(outcome.id)
    assert run_pending() == 0
    assert expire_due() == 1
    assert _status(outcome.id) == "expired"


# --- precedence ------------------------------------------------------------------------------


@pytest.mark.usefixtures("isolated_registry")
@pytest.mark.parametrize(
    ("case", "expected"),
    [
        pytest.param("task", 30.0, id="per_task"),
        pytest.param("type", 120.0, id="per_type"),
        pytest.param("domain", 300.0, id="domain"),
        pytest.param("default", 600.0, id="DEFAULT_TTL"),
    ],
)
def test_ttl_precedence__task_over_type_over_domain_over_default(case, expected):
    with_default = Domain("wf_ttl_domain", default_ttl=timedelta(minutes=5))
    without_default = Domain("wf_ttl_plain")

    @with_default.task("typed", ttl=120)
    def typed(ctx) -> None:
        return None

    @with_default.task("untyped")
    def untyped(ctx) -> None:
        return None

    @without_default.task("bare")
    def bare(ctx) -> None:
        return None

    calls = {
        "task": typed.using(ttl=30),
        "type": typed.using(),
        "domain": untyped.using(),
        "default": bare.using(),
    }
    with override_settings(TASKMILL={**settings.TASKMILL, "DEFAULT_TTL": 600}):
        outcome = calls[case].submit()
    row = Task.objects.get(id=outcome.id)
    assert row.ttl_seconds == expected
    lifetime = (row.expires_at - row.created_at).total_seconds()
    assert lifetime == pytest.approx(expected, abs=2)


# --- cascade to children ---------------------------------------------------------------------


def test_expire_due__waiting_parent_expires_with_its_children(task_log):
    parent = fan_out.using(ttl=600).submit(parts=2)
    run_pending(limit=1)
    child_ids = list(Task.objects.filter(parent_id=parent.id).values_list("id", flat=True))
    _expire_now(parent.id, *child_ids)
    assert expire_due() == 3
    assert _status(parent.id) == "expired"
    assert [_status(i) for i in child_ids] == ["expired", "expired"]
    assert run_pending() == 0
    assert task_log.events("part") == []


def test_expire_due__expiring_parent_expires_children_still_within_their_ttl():
    parent = fan_out.using(ttl=600).submit(parts=2)
    run_pending(limit=1)
    child_ids = list(Task.objects.filter(parent_id=parent.id).values_list("id", flat=True))
    _expire_now(parent.id)
    expire_due()
    assert _status(parent.id) == "expired"
    assert [_status(i) for i in child_ids] == ["expired", "expired"]
