"""Maintenance: rescuing orphaned tasks, forgetting dead workers, pruning history."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from django.utils import timezone

from taskmill_django import scheduler
from taskmill_django.models import Task, TaskHistory, TaskHistoryTag, Worker
from taskmill_django.store import maintenance, workers
from tests.db.conftest import claim_one, finish
from tests.testapp.tasks import record

pytestmark = pytest.mark.django_db


def _register() -> object:
    return workers.register_worker("w1", os.getpid(), 4, None)


def _silence(worker_id: object, seconds: float) -> None:
    Worker.objects.filter(id=worker_id).update(
        heartbeat_at=timezone.now() - timedelta(seconds=seconds)
    )


@pytest.fixture
def max_rescues(settings):
    settings.TASKMILL = {**settings.TASKMILL, "MAX_RESCUES": 3}
    return 3


# --- rescue ----------------------------------------------------------------------------------


def test_rescue__task_of_unknown_worker_is_pending_again():
    record.submit(n=1)
    task = claim_one()
    Task.objects.filter(id=task.id).update(retry_count=1)
    assert maintenance.rescue_orphans() == 1
    row = Task.objects.get(id=task.id)
    assert (row.status, row.rescue_count, row.retry_count) == ("pending", 1, 1)
    assert (row.lease_token, row.worker_id, row.started_at) == (None, None, None)


def test_rescue__task_of_silent_worker_is_rescued():
    worker_id = _register()
    record.submit(n=1)
    task = claim_one(worker_id=worker_id)
    _silence(worker_id, 3600)
    assert maintenance.rescue_orphans() == 1
    assert Task.objects.get(id=task.id).status == "pending"


def test_rescue__task_of_live_worker_is_left_alone():
    worker_id = _register()
    assert workers.heartbeat(worker_id, 1) is True
    record.submit(n=1)
    task = claim_one(worker_id=worker_id)
    assert maintenance.rescue_orphans() == 0
    row = Task.objects.get(id=task.id)
    assert (row.status, row.lease_token, row.rescue_count) == ("running", task.lease_token, 0)


def test_rescue__long_running_task_of_live_worker_is_left_alone():
    worker_id = _register()
    record.submit(n=1)
    task = claim_one(worker_id=worker_id)
    Task.objects.filter(id=task.id).update(started_at=timezone.now() - timedelta(days=1))
    assert maintenance.rescue_orphans() == 0


def test_rescue__nothing_running_rescues_nothing():
    record.submit(n=1)
    assert maintenance.rescue_orphans() == 0
    assert Task.objects.get().status == "pending"


def test_rescue__rescued_task_runs_to_completion():
    record.submit(n=1)
    claim_one()
    maintenance.rescue_orphans()
    task = claim_one()
    finish(task)
    row = TaskHistory.objects.get(id=task.id)
    assert (row.status, row.rescue_count, row.retry_count) == ("completed", 1, 0)


def test_rescue__below_max_rescues_is_rescued(max_rescues):
    record.submit(n=1)
    task = claim_one()
    Task.objects.filter(id=task.id).update(rescue_count=max_rescues - 2)
    maintenance.rescue_orphans()
    assert Task.objects.get(id=task.id).rescue_count == max_rescues - 1


def test_rescue__max_rescues_reached_dead_letters(max_rescues):
    record.submit(n=1)
    task = claim_one()
    Task.objects.filter(id=task.id).update(rescue_count=max_rescues - 1)
    assert maintenance.rescue_orphans() == 1
    row = TaskHistory.objects.get(id=task.id)
    assert (row.status, row.rescue_count, row.retry_count) == ("dead_letter", max_rescues, 0)
    assert "worker died" in row.last_error
    assert not Task.objects.exists()


def test_heartbeat__vanished_worker_row_returns_false():
    worker_id = _register()
    workers.deregister_worker(worker_id)
    assert workers.heartbeat(worker_id, 0) is False


def test_forget_dead_workers__deletes_only_long_silent_workers():
    fresh = _register()
    dead = _register()
    _silence(dead, 3600)
    assert maintenance.forget_dead_workers() == 1
    assert list(Worker.objects.values_list("id", flat=True)) == [fresh]


# --- pruning ---------------------------------------------------------------------------------


def _history(history_factory, ages_in_days: list[float]) -> list[int]:
    now = timezone.now()
    return [history_factory(finished_at=now - timedelta(days=age)).id for age in ages_in_days]


def _remaining() -> set[int]:
    return set(TaskHistory.objects.values_list("id", flat=True))


def test_prune_by_count__keeps_the_newest(history_factory):
    ids = _history(history_factory, [5, 4, 3, 2, 1])
    assert scheduler.store().prune_history_by_count(2) == 3
    assert _remaining() == set(ids[-2:])


def test_prune_by_count__same_finish_time_breaks_ties_by_id(history_factory):
    now = timezone.now()
    ids = [history_factory(finished_at=now).id for _ in range(3)]
    assert scheduler.store().prune_history_by_count(1) == 2
    assert _remaining() == {max(ids)}


def test_prune_by_count__zero_deletes_everything(history_factory):
    _history(history_factory, [3, 2, 1])
    assert scheduler.store().prune_history_by_count(0) == 3
    assert _remaining() == set()


def test_prune_by_count__keep_above_size_deletes_nothing(history_factory):
    _history(history_factory, [2, 1])
    assert scheduler.store().prune_history_by_count(10) == 0
    assert len(_remaining()) == 2


def test_prune_by_count__negative_is_rejected():
    with pytest.raises(ValueError, match="keep"):
        scheduler.store().prune_history_by_count(-1)


def test_prune_by_age__deletes_only_older_rows(history_factory):
    ids = _history(history_factory, [30, 8, 6, 0])
    assert scheduler.store().prune_history_by_age(7) == 2
    assert _remaining() == set(ids[2:])


def test_prune_by_age__negative_is_rejected():
    with pytest.raises(ValueError, match="days"):
        scheduler.store().prune_history_by_age(-1)


def test_prune__deletes_history_tags_too():
    outcome = record.using(tags={"k": "v"}).submit(n=1)
    finish(claim_one())
    assert TaskHistoryTag.objects.filter(history_id=outcome.id).exists()
    scheduler.store().prune_history_by_count(0)
    assert not TaskHistoryTag.objects.exists()


def test_retention__max_count_applies(settings, history_factory):
    settings.TASKMILL = {**settings.TASKMILL, "RETENTION": {"max_count": 1}}
    ids = _history(history_factory, [3, 2, 1])
    assert maintenance.apply_retention() == 2
    assert _remaining() == {ids[-1]}


def test_retention__max_age_days_applies(settings, history_factory):
    settings.TASKMILL = {**settings.TASKMILL, "RETENTION": {"max_age_days": 1.5}}
    ids = _history(history_factory, [3, 2, 1])
    assert maintenance.apply_retention() == 2
    assert _remaining() == {ids[-1]}


def test_retention__both_limits_apply(settings, history_factory):
    settings.TASKMILL = {**settings.TASKMILL, "RETENTION": {"max_count": 2, "max_age_days": 2.5}}
    ids = _history(history_factory, [4, 3, 2, 1.5, 1])
    assert maintenance.apply_retention() == 3
    assert _remaining() == set(ids[-2:])


def test_retention__unset_keeps_everything(history_factory):
    _history(history_factory, [400, 1])
    assert maintenance.apply_retention() == 0
    assert len(_remaining()) == 2
