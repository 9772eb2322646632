"""Time limits, recycling and the worker's log, as an operator meets them in real workers."""

from __future__ import annotations

import json

import pytest

from taskmill_django.enums import HistoryStatus, TaskStatus
from taskmill_django.models import Task, TaskHistory
from tests.conftest import wait_until
from tests.testapp.tasks import limited, record, stubborn

pytestmark = pytest.mark.django_db(transaction=True)


def history(task_id: int) -> TaskHistory | None:
    return TaskHistory.objects.filter(id=task_id).first()


def test_timeout__overrunning_task_is_stopped_and_fails_timed_out_after_its_retries(
    worker_factory, task_log
):
    task_id = limited.submit(seconds=30).id
    worker_factory("--concurrency", "1")

    row = wait_until(lambda: history(task_id), timeout=30)

    assert row.status == HistoryStatus.DEAD_LETTER  # one retry, as its policy says
    assert (row.retry_count, row.last_error) == (1, "timed out after 0.5 s")
    assert [e["reason"] for e in task_log.events("noticed_cancel")] == ["timeout", "timeout"]
    assert [e["reason"] for e in task_log.events("on_cancel")] == ["timeout", "timeout"]
    assert not task_log.events("done")


def test_timeout__task_within_its_limit_completes(worker_factory):
    task_id = limited.submit(seconds=0.05).id
    worker_factory()

    assert wait_until(lambda: history(task_id), timeout=30).status == HistoryStatus.COMPLETED


def test_timeout__task_ignoring_it_is_abandoned_and_its_slot_freed(worker_factory, task_log):
    stuck = stubborn.using(timeout=0.5, max_retries=0).submit(seconds=20).id
    worker = worker_factory("--concurrency", "1", settings={"TIMEOUT_GRACE": 0.5})
    wait_until(lambda: task_log.events("start"), timeout=30)
    after = record.submit(n=1).id

    # The second task runs on the only slot while the first body is still sleeping.
    wait_until(lambda: history(after), timeout=30)

    row = history(stuck)
    assert (row.status, row.last_error) == (HistoryStatus.DEAD_LETTER, "timed out after 0.5 s")
    assert history(after).status == HistoryStatus.COMPLETED
    assert not task_log.events("done")  # the abandoned body has not finished
    assert f"abandoned task_id={stuck}" in worker.output()


def test_logs__verbosity_two_logs_each_task_start_and_end_without_payload_values(
    worker_factory,
):
    task_id = record.submit(n=1, note="hunter2-value").id
    worker = worker_factory("--concurrency", "1", "-v", "2")

    wait_until(lambda: history(task_id), timeout=30)
    output = wait_until(lambda: "task finished" in worker.output() and worker.output())

    assert f"task started task_id={task_id} type=tests::record attempt=1" in output
    assert f"task finished task_id={task_id} type=tests::record outcome=completed" in output
    assert "hunter2-value" not in output


def test_logs__default_verbosity_has_no_per_task_lines(worker_factory):
    task_id = record.submit(n=1).id
    worker = worker_factory("--concurrency", "1")

    wait_until(lambda: history(task_id), timeout=30)
    worker.terminate()
    worker.wait(30)

    assert "task started" not in worker.output()
    assert "worker stopped" in worker.output()


def test_logs__json_format_is_one_object_per_line(worker_factory):
    task_id = record.submit(n=1).id
    worker = worker_factory("--concurrency", "1", "-v", "2", "--log-format", "json")
    wait_until(lambda: history(task_id), timeout=30)
    worker.terminate()
    worker.wait(30)

    lines = [json.loads(line) for line in worker.output().splitlines() if line.startswith("{")]

    assert lines and all({"time", "level", "logger", "message"} <= set(e) for e in lines)
    finished = [e for e in lines if e.get("event") == "task_finished"]
    assert [(e["task_id"], e["outcome"]) for e in finished] == [(task_id, "completed")]
    assert any(e["message"].startswith("worker started") for e in lines)


def test_recycle__max_tasks_exits_gracefully_after_that_many(worker_factory):
    ids = [record.submit(n=n).id for n in range(6)]
    worker = worker_factory("--concurrency", "1", "--max-tasks", "3")

    assert worker.wait(60) == 0
    assert TaskHistory.objects.filter(id__in=ids).count() == 3
    assert Task.objects.filter(id__in=ids, status=TaskStatus.PENDING).count() == 3
    assert "--max-tasks" in worker.output()


def test_recycle__max_memory_exits_gracefully_once_passed(worker_factory):
    worker = worker_factory("--max-memory", "1")

    assert worker.wait(60) == 0
    assert "--max-memory 1" in worker.output()
