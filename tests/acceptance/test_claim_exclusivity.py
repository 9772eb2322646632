"""Several worker processes claiming from one queue never run a task twice (research §5 T1)."""

from __future__ import annotations

import pytest

from taskmill_django.enums import HistoryStatus
from taskmill_django.models import Task, TaskHistory
from tests.acceptance.support import counts
from tests.testapp.tasks import record

pytestmark = pytest.mark.django_db(transaction=True)

TASKS = 2000


def test_claim__four_workers_run_each_of_2000_tasks_exactly_once(worker_factory, task_log):
    record.submit_batch([{"n": n} for n in range(TASKS)])
    workers = [worker_factory("--burst", "--concurrency", "4") for _ in range(4)]
    for worker in workers:
        assert worker.wait(120) == 0, worker.output()

    runs = counts([e["n"] for e in task_log.events("run")])
    twice = {n: k for n, k in runs.items() if k != 1}
    assert not twice, f"tasks run more than once: {twice}"
    assert set(runs) == set(range(TASKS))
    assert len({e["pid"] for e in task_log.events("run")}) > 1  # the work really was shared
    assert TaskHistory.objects.filter(status=HistoryStatus.COMPLETED).count() == TASKS
    assert not Task.objects.exists()
