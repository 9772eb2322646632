"""A worker cut off from PostgreSQL by a broken network (tests/acceptance/netproxy.py).

The worker under test reaches the database only through the proxy; the rescuing worker and the
test itself connect directly. A stall is the hard case: nothing errors, statements simply never
return, and the worker can only tell by the time its lease has gone unrenewed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection

from taskmill_django.enums import HistoryStatus, WorkerStatus
from taskmill_django.models import TaskHistory, Worker
from tests.acceptance.netproxy import Proxy
from tests.acceptance.support import finished
from tests.conftest import TaskLog, wait_until
from tests.testapp.tasks import record, sleep

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres_only]


@pytest.fixture
def proxy(transactional_db: None) -> Iterator[Proxy]:
    settings = connection.settings_dict
    network = Proxy(settings["HOST"] or "127.0.0.1", int(settings["PORT"] or 5432))
    yield network
    network.close()


def through(network: Proxy) -> dict[str, str]:
    return {"TASKMILL_PG_PORT": str(network.port)}


def live_row_of(pid: int) -> Any:
    return (
        Worker.objects.filter(pid=pid, status=WorkerStatus.RUNNING)
        .values_list("id", flat=True)
        .first()
    )


def runs_after_heal(worker: Any, task_log: TaskLog) -> None:
    """``worker`` is the only one left: new work must be claimed and done by it."""
    ids = [record.submit(n=n).id for n in range(100, 103)]
    wait_until(lambda: finished(ids), timeout=30)
    ran = {e["pid"] for e in task_log.events("run") if e["n"] >= 100}
    assert ran == {worker.pid}
    assert worker.proc.poll() is None, worker.output()


def test_partition__stalled_worker_fences_itself_before_its_task_is_rescued(
    proxy: Proxy, worker_factory: Any, task_log: TaskLog
) -> None:
    """G12: a worker whose network path stalls mid-task cannot renew its lease and stops the
    task's body itself before another worker may rescue it, so the two runs never overlap and
    the body's effect ("done") happens once (G2: the rerun follows an interrupted attempt).
    G8: once the path heals, the same process registers again and claims new work."""
    # It fences after LEASE_TIMEOUT - HEARTBEAT_INTERVAL = 2 s of silence; the rescuer may act
    # after 3 s: a second of margin for a loaded machine. A transaction the stall leaves open
    # on the server ends after STATEMENT_TIMEOUT, so its row locks cannot hold up the rescue.
    cut_off = worker_factory(
        "--concurrency",
        "1",
        environ=through(proxy),
        settings={"STATEMENT_TIMEOUT": 4, "HEARTBEAT_INTERVAL": 1.0},
    )
    task = sleep.submit(seconds=5, n=1)
    wait_until(lambda: task_log.events("start"), timeout=30)
    proxy.stall()
    rescuer = worker_factory("--concurrency", "1")

    wait_until(lambda: finished([task.id]), timeout=40)
    events = [
        (e["event"], e["pid"])
        for e in task_log.events()
        if e["event"] in {"start", "noticed_cancel", "done"}
    ]
    assert events == [
        ("start", cut_off.pid),
        ("noticed_cancel", cut_off.pid),  # fenced before the rescue ...
        ("start", rescuer.pid),  # ... so the rerun never overlaps it
        ("done", rescuer.pid),
    ], events
    history = TaskHistory.objects.get(id=task.id)
    assert (history.status, history.rescue_count) == (HistoryStatus.COMPLETED, 1)
    assert "its lease could not be renewed in time" in cut_off.output()

    proxy.heal()
    wait_until(lambda: live_row_of(cut_off.pid), timeout=30)
    rescuer.terminate()
    assert rescuer.wait(30) == 0, rescuer.output()
    runs_after_heal(cut_off, task_log)
    assert [e["event"] for e in task_log.events() if e["event"] == "done"] == ["done"]


def test_partition__cut_connections_are_an_ordinary_retryable_error(
    proxy: Proxy, worker_factory: Any, task_log: TaskLog
) -> None:
    """G8/G13: a reset of every connection (and refused reconnects for a moment) is an
    ordinary error: the worker keeps running, reconnects, keeps its lease (LEASE_TIMEOUT is
    longer than the cut) and completes the task it was running, exactly once."""
    worker = worker_factory(
        "--concurrency", "1", environ=through(proxy), settings={"LEASE_TIMEOUT": 15}
    )
    task = sleep.submit(seconds=3, n=1)
    wait_until(lambda: task_log.events("start"), timeout=30)
    accepted = proxy.accepted
    proxy.cut()
    wait_until(lambda: "retrying" in worker.output(), timeout=15)
    proxy.heal()

    wait_until(lambda: finished([task.id]), timeout=30)
    history = TaskHistory.objects.get(id=task.id)
    assert (history.status, history.rescue_count) == (HistoryStatus.COMPLETED, 0)
    assert [e["event"] for e in task_log.events() if e["event"] != "run"] == ["start", "done"]
    assert proxy.accepted > accepted  # it really reconnected through the proxy
    runs_after_heal(worker, task_log)
