"""Several worker processes claiming from one queue never run a task twice (research §5 T1)."""

from __future__ import annotations

import pytest

from taskmill_django.enums import HistoryStatus
from taskmill_django.models import Task, TaskHistory, Worker
from tests.acceptance.support import counts
from tests.conftest import wait_until
from tests.testapp.tasks import record

pytestmark = pytest.mark.django_db(transaction=True)

TASKS = 2000


def test_claim__four_workers_run_each_of_2000_tasks_exactly_once(worker_factory, task_log):
    workers = [worker_factory("--concurrency", "4") for _ in range(4)]
    # All four are polling before the work arrives; otherwise the first to start could drain
    # the queue while the others are still importing Django.
    pids = [w.pid for w in workers]
    wait_until(lambda: Worker.objects.filter(pid__in=pids).count() == len(pids), timeout=60)
    record.submit_batch([{"n": n} for n in range(TASKS)])
    wait_until(lambda: TaskHistory.objects.count() == TASKS, timeout=120)
    for worker in workers:
        worker.terminate()
    for worker in workers:
        assert worker.wait(60) == 0, worker.output()

    runs = counts([e["n"] for e in task_log.events("run")])
    twice = {n for n, k in runs.items() if k != 1}
    # Claims never overlap: a task runs again only after its lease expired and it was rescued
    # (a worker starved of the SQLite write lock on a loaded machine can miss heartbeats),
    # which its history row records. A second run without a rescue is a double claim.
    rescued = set(
        TaskHistory.objects.filter(rescue_count__gt=0).values_list("payload__n", flat=True)
    )
    assert twice <= rescued, f"tasks run twice without a rescue: {sorted(twice - rescued)}"
    assert set(runs) == set(range(TASKS))
    assert len({e["pid"] for e in task_log.events("run")}) > 1  # the work really was shared
    assert TaskHistory.objects.filter(status=HistoryStatus.COMPLETED).count() == TASKS
    assert not Task.objects.exists()
