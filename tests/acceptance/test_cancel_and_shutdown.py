"""Stopping work from outside: cancelling a running task from another process, and stopping a
worker with SIGINT (graceful, then immediate on a second SIGINT)."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from taskmill_django import scheduler
from taskmill_django.conf import app_settings
from taskmill_django.enums import HistoryStatus, TaskStatus
from taskmill_django.models import Task, TaskHistory, Worker
from taskmill_django.store import operator
from tests.conftest import wait_until
from tests.testapp.tasks import async_sleep, sleep, stubborn

pytestmark = pytest.mark.django_db(transaction=True)


def test_cancel__running_task_is_cancelled_in_its_worker(worker_factory, task_log):
    task_id = sleep.submit(seconds=60).id
    worker_factory("--concurrency", "1")
    wait_until(lambda: task_log.events("start"), timeout=30)

    asked = time.monotonic()
    assert scheduler.cancel(task_id) is True
    noticed = wait_until(lambda: task_log.events("noticed_cancel"), timeout=30)
    delay = time.monotonic() - asked

    assert noticed[0]["reason"] == HistoryStatus.CANCELLED
    # Seen on the worker's next heartbeat (0.5 s in tests), not when the 60 s task would end;
    # generous slack for a busy 2-core machine.
    assert delay < float(app_settings.HEARTBEAT_INTERVAL) + 4.5
    # The hook runs beside the worker loop (so a slow hook cannot delay heartbeats): wait for it.
    hooks = wait_until(lambda: task_log.events("on_cancel"), timeout=30)
    assert [e["task_id"] for e in hooks] == [task_id]
    row = wait_until(lambda: TaskHistory.objects.filter(id=task_id).first(), timeout=30)
    assert row.status == HistoryStatus.CANCELLED
    assert row.retry_count == 0
    assert not Task.objects.exists()
    assert not task_log.events("done")


def test_pause__running_task_stops_waits_paused_and_runs_again_on_resume(worker_factory, task_log):
    task_id = sleep.submit(seconds=3.0).id
    worker_factory("--concurrency", "1")
    wait_until(lambda: task_log.events("start"), timeout=30)

    assert operator.pause_tasks([task_id]) == 1

    noticed = wait_until(lambda: task_log.events("noticed_cancel"), timeout=30)
    assert noticed[0]["reason"] == "manual"
    row = wait_until(
        lambda: Task.objects.filter(id=task_id, status=TaskStatus.PAUSED).first(), timeout=30
    )
    assert (row.pause_reason, row.retry_count, row.worker_id) == ("manual", 0, None)
    assert not task_log.events("on_cancel")  # a pause is not a cancellation
    time.sleep(1.0)
    assert len(task_log.events("start")) == 1  # nothing claims it while it is paused

    assert operator.resume_tasks([task_id]) == 1

    done = wait_until(lambda: TaskHistory.objects.filter(id=task_id).first(), timeout=30)
    assert (done.status, done.retry_count) == (HistoryStatus.COMPLETED, 0)
    assert len(task_log.events("start")) == 2


def test_cancel__running_async_task_is_cancelled_in_its_worker(worker_factory, task_log):
    task_id = async_sleep.submit(seconds=60).id
    worker_factory("--concurrency", "2")
    wait_until(lambda: task_log.events("start"), timeout=30)

    assert scheduler.cancel(task_id) is True

    noticed = wait_until(lambda: task_log.events("noticed_cancel"), timeout=30)
    assert noticed[0]["reason"] == HistoryStatus.CANCELLED
    row = wait_until(lambda: TaskHistory.objects.filter(id=task_id).first(), timeout=30)
    assert (row.status, row.retry_count) == (HistoryStatus.CANCELLED, 0)
    assert not Task.objects.exists()
    assert not task_log.events("done")


def test_cancel__task_cancelled_while_its_worker_is_dead_does_not_run_again(
    worker_factory, task_log
):
    # Regression: rescue once put such a task back to pending and another worker started it.
    task_id = sleep.submit(seconds=60).id
    first = worker_factory("--concurrency", "1")
    wait_until(lambda: task_log.events("start"), timeout=30)
    first.kill()
    first.wait(30)

    assert scheduler.cancel(task_id) is True
    worker_factory("--concurrency", "1")

    row = wait_until(lambda: TaskHistory.objects.filter(id=task_id).first(), timeout=60)
    assert row.status == HistoryStatus.CANCELLED
    assert [e["pid"] for e in task_log.events("start")] == [first.pid]


def test_shutdown__sigint_lets_every_running_task_finish(worker_factory, task_log):
    sleep.submit_batch([{"seconds": 1.5, "n": n} for n in range(3)])
    worker = worker_factory("--concurrency", "3", "--shutdown-timeout", "30")
    wait_until(lambda: len(task_log.events("start")) == 3, timeout=30)

    worker.send(signal.SIGINT)

    assert worker.wait(30) == 0, worker.output()
    assert sorted(e["n"] for e in task_log.events("done")) == [0, 1, 2]
    statuses = list(TaskHistory.objects.values_list("status", flat=True))
    assert statuses == [HistoryStatus.COMPLETED] * 3
    assert not Task.objects.exists()
    assert not Worker.objects.exists()  # deregistered on the way out


def test_shutdown__second_sigint_releases_running_tasks_at_once(worker_factory, task_log):
    sleep.submit_batch([{"seconds": 60, "n": n} for n in range(3)])
    worker = worker_factory("--concurrency", "3", "--shutdown-timeout", "60")
    wait_until(lambda: len(task_log.events("start")) == 3, timeout=30)
    worker.send(signal.SIGINT)
    # The worker is in its graceful wait once its heartbeat says so.
    wait_until(lambda: Worker.objects.filter(pid=worker.pid, status="stopping").exists(), 30)

    worker.send(signal.SIGINT)

    assert worker.wait(20) == 0, worker.output()
    assert not task_log.events("done")
    rows = list(Task.objects.values_list("status", "retry_count", "lease_token"))
    assert rows == [(TaskStatus.PENDING, 0, None)] * 3
    assert not TaskHistory.objects.exists()


def test_shutdown__two_quick_sigints_release_at_once_whenever_the_second_arrives(
    worker_factory, task_log
):
    """A user pressing Ctrl-C twice in a row: the second press must count even when it
    lands before the worker has begun its graceful wait (here: as soon as the first has
    been heard; two signals sent at once may merge into one on the way)."""
    sleep.submit_batch([{"seconds": 60, "n": n} for n in range(2)])
    worker = worker_factory("--concurrency", "2", "--shutdown-timeout", "60")
    wait_until(lambda: len(task_log.events("start")) == 2, timeout=30)

    worker.send(signal.SIGINT)
    wait_until(lambda: "worker stopping" in worker.output(), timeout=20)
    worker.send(signal.SIGINT)

    try:
        worker.wait(20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker did not stop:\n{worker.output()}")
    assert worker.wait(1) == 0, worker.output()
    rows = list(Task.objects.values_list("status", "retry_count", "lease_token"))
    assert rows == [(TaskStatus.PENDING, 0, None)] * 2


def test_shutdown__task_ignoring_cancellation_is_released_at_the_timeout(worker_factory, task_log):
    stubborn.submit(seconds=60)
    worker = worker_factory("--concurrency", "1", "--shutdown-timeout", "1")
    wait_until(lambda: task_log.events("start"), timeout=30)

    asked = time.monotonic()
    worker.send(signal.SIGTERM)

    assert worker.wait(30) == 0, worker.output()
    # Timeout, plus the short grace for tasks that notice cancellation, plus slack for a busy
    # machine; far below the 60 s the task would take.
    assert time.monotonic() - asked < 1.0 + 8.0
    row = Task.objects.get()
    assert (row.status, row.lease_token, row.worker_id) == (TaskStatus.PENDING, None, None)
    assert (row.retry_count, row.rescue_count) == (0, 0)
    assert not TaskHistory.objects.exists()
