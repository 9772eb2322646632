"""A live task never runs twice at once because its worker was busy, frozen or blocked
(RELIABILITY G12, G13): heartbeats never wait on the worker's other work, a worker that learns
its task was rescued stops it, and every wait of the worker is bounded."""

from __future__ import annotations

import signal

import pytest
from django.db import connection, transaction

from taskmill_django.enums import HistoryStatus, WorkerStatus
from taskmill_django.models import Task, TaskHistory, Worker
from tests.acceptance.support import freeze, worker_id_of
from tests.conftest import wait_until
from tests.testapp.tasks import record, sleep, steps

pytestmark = pytest.mark.django_db(transaction=True)

OLD_ROWS = 300_000


def insert_old_history(count: int) -> None:
    """``count`` history rows finished a year ago, inserted by the database itself."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "INSERT INTO taskmill_task_history (id, task_type, domain, key, label, priority,"
                " status, payload, retry_count, max_retries, rescue_count, last_error, traceback,"
                " created_at, finished_at, read_bytes, write_bytes, net_rx_bytes, net_tx_bytes)"
                " SELECT 10000000 + n, 'tests::noop', 'tests', md5(n::text), '', 128,"
                " 'completed', '{}', 0, 3, 0, '', '', NOW() - INTERVAL '400 days',"
                " NOW() - INTERVAL '400 days', 0, 0, 0, 0 FROM generate_series(1, %s) AS n",
                [count],
            )
        elif connection.vendor == "mysql":  # MariaDB's sequence tables
            cursor.execute(
                "INSERT INTO taskmill_task_history (id, task_type, domain, `key`, label, priority,"  # noqa: S608 - a constant count
                " status, payload, retry_count, max_retries, rescue_count, last_error, traceback,"
                " created_at, finished_at, read_bytes, write_bytes, net_rx_bytes, net_tx_bytes)"
                " SELECT 10000000 + seq, 'tests::noop', 'tests', LPAD(seq, 64, '0'), '', 128,"
                " 'completed', '{}', 0, 3, 0, '', '', '2000-01-01 00:00:00',"
                f" '2000-01-01 00:00:00', 0, 0, 0, 0 FROM seq_1_to_{int(count)}"
            )
        else:
            cursor.execute(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %s) "
                "INSERT INTO taskmill_task_history (id, task_type, domain, key, label, priority,"
                " status, payload, retry_count, max_retries, rescue_count, last_error, traceback,"
                " created_at, finished_at, read_bytes, write_bytes, net_rx_bytes, net_tx_bytes)"
                " SELECT 10000000 + i, 'tests::noop', 'tests', printf('%%064d', i), '', 128,"
                " 'completed', '{}', 0, 3, 0, '', '', '2000-01-01 00:00:00',"
                " '2000-01-01 00:00:00', 0, 0, 0, 0 FROM n",
                [count],
            )


def test_retention__pruning_a_large_backlog_never_lets_a_running_task_be_rescued(
    worker_factory, task_log
):
    insert_old_history(OLD_ROWS)
    task_id = sleep.submit(seconds=8.0).id
    worker = worker_factory(
        "--concurrency", "1", settings={"RETENTION": {"max_age_days": 30}, "PRUNE_INTERVAL": 1}
    )

    wait_until(lambda: TaskHistory.objects.filter(id=task_id).exists(), timeout=90)

    row = TaskHistory.objects.get(id=task_id)
    assert (row.status, row.rescue_count) == (HistoryStatus.COMPLETED, 0), worker.output()
    assert len(task_log.events("start")) == 1
    # Meanwhile the backlog went, in many short transactions.
    wait_until(lambda: not TaskHistory.objects.filter(id__gte=10_000_000).exists(), timeout=120)


def test_zombie__resumed_worker_stops_its_rescued_task_and_writes_nothing(worker_factory, task_log):
    task_id = steps.submit(count=120).id  # 6 s of work, paused while the process is frozen
    zombie = worker_factory("--concurrency", "1")
    zombie_id = worker_id_of(zombie)
    wait_until(lambda: task_log.events("start"), timeout=30)
    freeze(zombie)
    try:
        rescuer = worker_factory("--concurrency", "1")
        wait_until(lambda: TaskHistory.objects.filter(id=task_id).exists(), timeout=60)
        assert Worker.objects.get(id=zombie_id).status == WorkerStatus.DEAD
    finally:
        zombie.send(signal.SIGCONT)

    # The zombie still had nearly all of its 6 s of steps to go: it must stop them instead.
    noticed = wait_until(
        lambda: [e for e in task_log.events("noticed_cancel") if e["pid"] == zombie.pid],
        timeout=10,
    )
    assert noticed[0]["reason"] == "lease_lost"
    assert not [e for e in task_log.events("done") if e["pid"] == zombie.pid]
    rows = list(TaskHistory.objects.filter(id=task_id))
    assert [(r.status, r.result) for r in rows] == [("completed", {"pid": rescuer.pid})]
    # The zombie came back under a new id and works again.
    after = record.submit(n=1).id
    wait_until(lambda: TaskHistory.objects.filter(id=after).exists(), timeout=30)
    assert zombie.proc.poll() is None


@pytest.mark.postgres_only
def test_lock_timeout__blocked_outcome_write_is_retried_and_the_worker_carries_on(
    worker_factory, task_log
):
    worker = worker_factory("--concurrency", "2", settings={"LOCK_TIMEOUT": 0.5})
    task_id = sleep.submit(seconds=1.0).id
    wait_until(lambda: task_log.events("start"), timeout=30)

    with transaction.atomic():
        # An operator's long transaction holds the task's row while its attempt ends.
        Task.objects.select_for_update().get(id=task_id)
        wait_until(lambda: "lock timeout" in worker.output(), timeout=30)
        assert not TaskHistory.objects.filter(id=task_id).exists()

    wait_until(lambda: TaskHistory.objects.filter(id=task_id).exists(), timeout=30)
    row = TaskHistory.objects.get(id=task_id)
    assert (row.status, row.rescue_count) == (HistoryStatus.COMPLETED, 0)
    assert len(task_log.events("start")) == 1
    after = record.submit(n=1).id
    wait_until(lambda: TaskHistory.objects.filter(id=after).exists(), timeout=30)
