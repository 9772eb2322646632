"""What a task sees and reports through a real worker: progress, async tasks, domain selection,
burst mode, retries and the dead-letter list."""

from __future__ import annotations

import pytest

from taskmill_django.enums import HistoryStatus, TaskStatus
from taskmill_django.models import Task, TaskHistory
from tests.conftest import wait_until
from tests.testapp.tasks import async_echo, boom, flaky, other_noop, progress, record

pytestmark = pytest.mark.django_db(transaction=True)


def test_progress__reported_in_a_worker_is_visible_while_the_task_runs(worker_factory):
    task_id = progress.submit(seconds=60).id
    worker_factory("--concurrency", "1")

    row = wait_until(
        lambda: Task.objects.filter(id=task_id, progress__isnull=False).first(), timeout=30
    )

    assert row.status == TaskStatus.RUNNING
    assert (row.progress, row.progress_message) == (0.5, "halfway")
    assert row.progress_at is not None


def test_progress__saved_progress_is_announced_with_task_progress(worker_factory, task_log):
    task_id = progress.submit(seconds=60).id
    worker_factory("--concurrency", "1")

    (event, *_) = wait_until(lambda: task_log.events("progress_signal"), timeout=30)

    assert (event["task_id"], event["fraction"], event["message"]) == (task_id, 0.5, "halfway")


def test_async__task_runs_in_a_worker_and_its_result_is_stored(worker_factory):
    value = {"text": "héllo", "items": [1, 2.5, None, True]}
    task_id = async_echo.submit(value=value).id
    worker = worker_factory("--burst", "--concurrency", "2")

    assert worker.wait(60) == 0, worker.output()
    row = TaskHistory.objects.get(id=task_id)
    assert row.status == HistoryStatus.COMPLETED
    assert row.result == value


def test_domains__worker_runs_only_the_domains_it_serves(worker_factory, task_log):
    other_id = other_noop.submit().id
    tests_id = record.submit(n=1).id
    worker = worker_factory("--burst", "--domains", "other")

    assert worker.wait(60) == 0, worker.output()
    assert TaskHistory.objects.get(id=other_id).status == HistoryStatus.COMPLETED
    assert Task.objects.get(id=tests_id).status == TaskStatus.PENDING
    assert not task_log.events("run")


def test_burst__exits_zero_at_once_on_an_empty_queue(worker_factory):
    worker = worker_factory("--burst")

    assert worker.wait(60) == 0, worker.output()
    assert "worker stopped" in worker.output()


def test_retry__failing_task_is_dead_lettered_after_its_retries(worker_factory):
    task_id = boom.submit().id  # RetryPolicy.constant(1, 0): one retry
    worker_factory("--concurrency", "1")

    row = wait_until(lambda: TaskHistory.objects.filter(id=task_id).first(), timeout=30)
    assert row.status == HistoryStatus.DEAD_LETTER
    assert row.retry_count == 1
    assert "ValueError: boom" in row.last_error
    assert "boom" in row.traceback
    assert not Task.objects.exists()


def test_retry__flaky_task_completes_after_failing_twice(worker_factory):
    task_id = flaky.submit(fail_times=2).id  # RetryPolicy.constant(2, 0)
    worker_factory("--concurrency", "1")

    row = wait_until(lambda: TaskHistory.objects.filter(id=task_id).first(), timeout=30)
    assert row.status == HistoryStatus.COMPLETED
    assert row.retry_count == 2
    assert row.result == "ok"
    assert not Task.objects.exists()


def test_burst__drains_retries_that_are_due_at_once(worker_factory):
    # Regression: a retry's run_after once came from the worker clock, so a zero-delay retry
    # was not yet due for the claim in the same cycle and --burst left it behind. 40 retries
    # give a narrow window (SQLite's millisecond NOW()) many chances.
    task_id = flaky.using(max_retries=50).submit(fail_times=40).id
    worker = worker_factory("--burst", "--concurrency", "1")

    assert worker.wait(60) == 0, worker.output()
    row = TaskHistory.objects.filter(id=task_id).first()
    assert row is not None, f"left behind: {list(Task.objects.values('status', 'retry_count'))}"
    assert (row.status, row.retry_count) == (HistoryStatus.COMPLETED, 40)


@pytest.mark.postgres_only
def test_planner_stats__worker_analyzes_the_task_table_after_a_bulk_submission(worker_factory):
    """Statistics that still describe an empty table make every claim sort all pending rows;
    a worker refreshes them soon after a large batch lands (autovacuum would take minutes)."""
    from django.db import connection

    def analyzed_since(moment):  # type: ignore[no-untyped-def]
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT last_analyze >= %s FROM pg_stat_user_tables "
                "WHERE relname = 'taskmill_task'",
                [moment],
            )
            return cursor.fetchone()[0]

    worker_factory("--domains", "other")  # leaves the batch pending
    with connection.cursor() as cursor:
        cursor.execute("SELECT STATEMENT_TIMESTAMP()")
        submitted_at = cursor.fetchone()[0]
    record.submit_batch([{"n": n} for n in range(3000)])

    wait_until(lambda: analyzed_since(submitted_at), timeout=20)
