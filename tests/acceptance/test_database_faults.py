"""A worker survives database faults in the middle of a run: a PostgreSQL restart and
connections killed under it (research §5 T5, G8).

The restart hits every connection to the local cluster, so that test disturbs anything else using
the same server while it runs; the connection kills only target the test database.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from django.db import connection

from taskmill_django.enums import HistoryStatus
from taskmill_django.models import Task, TaskHistory
from tests.acceptance.support import counts
from tests.conftest import wait_until
from tests.testapp.tasks import sleep

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres_only]


def _cluster() -> list[str]:
    """Version and name of the local cluster, as pg_ctlcluster wants them."""
    versions = sorted(Path("/etc/postgresql").iterdir(), key=lambda p: float(p.name))
    if not versions:
        pytest.fail("restart tests need the local PostgreSQL cluster (/etc/postgresql)")
    return [versions[-1].name, "main"]


def _pg_ctlcluster(action: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", *_cluster(), action],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _ensure_running() -> None:
    if _pg_ctlcluster("status").returncode != 0:
        _pg_ctlcluster("start")


def test_postgres_restart__worker_reconnects_and_every_task_completes_once(
    worker_factory, task_log
):
    before = sleep.submit_batch([{"seconds": 0.03, "n": n} for n in range(200)])
    worker = worker_factory("--concurrency", "2")
    wait_until(lambda: len(task_log.events("done")) >= 20, timeout=60)
    try:
        restarted = _pg_ctlcluster("restart")
        assert restarted.returncode == 0, restarted.stderr
    finally:
        _ensure_running()
    connection.close()  # ours died with the server; the next query reconnects
    assert Task.objects.exists()  # the restart really happened mid-run
    after = sleep.submit_batch([{"seconds": 0.03, "n": n} for n in range(200, 250)])

    wait_until(lambda: not Task.objects.exists(), timeout=90)
    assert worker.proc.poll() is None, worker.output()  # kept going, did not crash
    assert "database error" in worker.output()  # it did see the outage
    submitted = {o.id for o in before + after}
    history = dict(TaskHistory.objects.values_list("id", "status"))
    assert set(history) == submitted
    assert set(history.values()) == {HistoryStatus.COMPLETED}
    runs = counts([e["n"] for e in task_log.events("start")])
    assert {n: k for n, k in runs.items() if k != 1} == {}
    assert set(runs) == set(range(250))


def _terminate_other_backends() -> int:
    """Kill every connection to the test database except our own; return how many."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return int(cursor.fetchone()[0])


def test_connection_kills__worker_keeps_going_and_every_task_completes_once(
    worker_factory, task_log
):
    submitted = {o.id for o in sleep.submit_batch([{"seconds": 0.02, "n": n} for n in range(300)])}
    worker = worker_factory("--concurrency", "2")
    wait_until(lambda: task_log.events("done"), timeout=60)
    killed = 0
    stop_killing = time.monotonic() + 4.0
    while time.monotonic() < stop_killing and Task.objects.exists():
        killed += _terminate_other_backends()
        time.sleep(0.3)  # the killer's pace; nothing waits on a process here

    wait_until(lambda: not Task.objects.exists(), timeout=90)
    assert killed >= 5
    assert worker.proc.poll() is None, worker.output()
    assert "database error" in worker.output()
    history = dict(TaskHistory.objects.values_list("id", "status"))
    assert set(history) == submitted
    assert set(history.values()) == {HistoryStatus.COMPLETED}
    runs = counts([e["n"] for e in task_log.events("start")])
    assert {n: k for n, k in runs.items() if k != 1} == {}
    assert set(runs) == set(range(300))
