"""Dead and frozen workers: their tasks are rescued by others, and a frozen worker that comes back
cannot write over what happened meanwhile (G1, G2, G3)."""

from __future__ import annotations

import signal
import time

import pytest
from django.db import transaction
from django.forms.models import model_to_dict

from taskmill_django import scheduler
from taskmill_django.conf import app_settings
from taskmill_django.enums import HistoryStatus, TaskStatus
from taskmill_django.models import SchedulerSetting, Task, TaskHistory, Worker
from taskmill_django.store.claim import CLAIM_LOCK
from tests.acceptance.support import freeze, worker_id_of
from tests.conftest import wait_until
from tests.testapp.tasks import poison, sleep, stubborn

pytestmark = pytest.mark.django_db(transaction=True)


def test_rescue__task_of_sigkilled_worker_completes_once_on_another_worker(
    worker_factory, task_log
):
    task_id = sleep.submit(seconds=2.0).id  # long enough to be killed mid-run
    first = worker_factory("--concurrency", "1")
    wait_until(lambda: task_log.events("start"), timeout=30)
    first.kill()
    first.wait(30)
    assert Task.objects.get(id=task_id).status == TaskStatus.RUNNING  # orphaned, not released

    second = worker_factory("--concurrency", "1")
    second_id = worker_id_of(second)
    wait_until(lambda: TaskHistory.objects.filter(id=task_id).exists(), timeout=60)

    row = TaskHistory.objects.get()
    assert row.status == HistoryStatus.COMPLETED
    assert (row.rescue_count, row.retry_count) == (1, 0)
    assert row.worker_id == second_id
    assert not Task.objects.exists()
    assert [e["pid"] for e in task_log.events("start")] == [first.pid, second.pid]


def test_fencing__resumed_zombie_worker_cannot_touch_the_rescued_outcome(worker_factory, task_log):
    task_id = stubborn.submit(seconds=3.0).id
    zombie = worker_factory("--concurrency", "1")
    wait_until(lambda: task_log.events("start"), timeout=30)
    freeze(zombie)
    try:
        rescuer = worker_factory("--concurrency", "1")
        rescuer_id = worker_id_of(rescuer)
        wait_until(lambda: TaskHistory.objects.filter(id=task_id).exists(), timeout=60)
        before = model_to_dict(TaskHistory.objects.get(id=task_id))
    finally:
        zombie.send(signal.SIGCONT)

    # The zombie's attempt finishes after the resume, and it tries to record it.
    wait_until(lambda: [e for e in task_log.events("done") if e["pid"] == zombie.pid], timeout=30)
    wait_until(
        lambda: (
            f"lease lost task_id={task_id}" in zombie.output()
            or "re-registering" in zombie.output()
        ),
        timeout=30,
    )

    rows = list(TaskHistory.objects.all())
    assert len(rows) == 1
    assert model_to_dict(rows[0]) == before
    assert before["status"] == HistoryStatus.COMPLETED
    assert before["worker_id"] == rescuer_id
    assert before["result"] == {"pid": rescuer.pid}
    assert before["rescue_count"] == 1
    assert not Task.objects.exists()


@pytest.mark.chaos  # research §5 T13: about LEASE_TIMEOUT x MAX_RESCUES long, so nightly
def test_rescue__task_that_kills_its_worker_every_time_is_dead_lettered(worker_factory, task_log):
    task_id = poison.submit().id
    limit = int(app_settings.MAX_RESCUES)
    deaths = 0

    def finished() -> bool:
        return TaskHistory.objects.filter(id=task_id).exists()

    while not finished():
        assert deaths <= limit, f"still crash-looping after {deaths} dead workers"
        worker = worker_factory("--concurrency", "1")
        wait_until(lambda w=worker: w.proc.poll() is not None or finished(), timeout=60)
        deaths += worker.proc.poll() is not None

    row = TaskHistory.objects.get(id=task_id)
    assert row.status == HistoryStatus.DEAD_LETTER
    assert row.rescue_count == limit
    assert "worker died" in row.last_error
    assert len(task_log.events("start")) == limit
    assert not Task.objects.exists()


@pytest.mark.postgres_only
def test_heartbeat__continues_while_the_main_loop_waits_for_a_lock(worker_factory, task_log):
    # A cluster-wide cap makes every claim take the claim-lock row; holding it here stalls
    # the worker's loop longer than LEASE_TIMEOUT. Its heartbeat must keep going meanwhile,
    # or the task would look orphaned and run twice.
    scheduler.set_max_concurrency(100)
    worker = worker_factory("--concurrency", "2")
    worker_id = worker_id_of(worker)
    task_id = sleep.submit(seconds=4.0 + float(app_settings.LEASE_TIMEOUT)).id
    wait_until(lambda: task_log.events("start"), timeout=30)
    wait_until(lambda: SchedulerSetting.objects.filter(name=CLAIM_LOCK).exists(), timeout=30)

    with transaction.atomic():
        SchedulerSetting.objects.select_for_update().get(name=CLAIM_LOCK)
        before = Worker.objects.get(id=worker_id).heartbeat_at
        time.sleep(float(app_settings.LEASE_TIMEOUT) + 1.5)
        after = Worker.objects.get(id=worker_id).heartbeat_at
        assert (after - before).total_seconds() >= float(app_settings.LEASE_TIMEOUT), (
            worker.output()
        )

    wait_until(lambda: TaskHistory.objects.filter(id=task_id).exists(), timeout=60)
    row = TaskHistory.objects.get(id=task_id)
    assert (row.status, row.rescue_count) == (HistoryStatus.COMPLETED, 0)
    assert len(task_log.events("start")) == 1
