"""Real worker processes: execution, priority order, several workers, graceful shutdown."""

from __future__ import annotations

import signal

import pytest

from taskmill_django.enums import HistoryStatus
from taskmill_django.models import Task, TaskHistory
from tests.conftest import wait_until
from tests.testapp.tasks import record, sleep

pytestmark = pytest.mark.django_db(transaction=True)


def test_worker__burst_runs_everything_in_priority_order(worker_factory, task_log):
    for n, priority in enumerate([200, 10, 128, 10, 0]):
        record.using(priority=priority).submit(n=n)
    worker = worker_factory("--burst", "--concurrency", "1")
    assert worker.wait(60) == 0, worker.output()
    ran = [e["n"] for e in task_log.events("run")]
    assert ran == [4, 1, 3, 2, 0]
    assert TaskHistory.objects.filter(status=HistoryStatus.COMPLETED).count() == 5
    assert not Task.objects.exists()


def test_worker__four_workers_execute_each_task_exactly_once(worker_factory, task_log):
    record.submit_batch([{"n": n} for n in range(400)])
    workers = [worker_factory("--burst", "--concurrency", "4") for _ in range(4)]
    for worker in workers:
        assert worker.wait(120) == 0, worker.output()
    runs = [e["n"] for e in task_log.events("run")]
    assert sorted(runs) == list(range(400))
    assert TaskHistory.objects.filter(status=HistoryStatus.COMPLETED).count() == 400


def test_worker__sigterm_waits_for_running_task(worker_factory, task_log):
    sleep.submit(seconds=1.0)
    worker = worker_factory("--concurrency", "2")
    wait_until(lambda: task_log.events("start"))
    worker.send(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.output()
    assert task_log.events("done")
    assert TaskHistory.objects.get().status == HistoryStatus.COMPLETED


def test_worker__shutdown_timeout_releases_task_to_pending(worker_factory, task_log):
    sleep.submit(seconds=30)
    worker = worker_factory("--shutdown-timeout", "0.5")
    wait_until(lambda: task_log.events("start"))
    worker.send(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.output()
    task = Task.objects.get()
    assert task.status == "pending"
    assert task.retry_count == 0
    assert task.lease_token is None


def test_worker__says_how_long_a_stop_waits_and_how_to_hurry_it(worker_factory, task_log):
    sleep.submit(seconds=30)
    worker = worker_factory("--shutdown-timeout", "0.5")
    wait_until(lambda: task_log.events("start"))

    worker.send(signal.SIGTERM)

    assert worker.wait(30) == 0, worker.output()
    assert (
        "waiting up to 0.5s for running tasks (interrupt again to release them now)"
        in worker.output()
    )
