"""IO budgets and disk pressure measured by real ``runtaskmill`` processes: a sampler whose
traffic the test sets (tests.testapp.io.FileRate), smoothed by the worker, stored in its row,
compared in bytes with what tasks declare."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from taskmill_django import IoBudget, Priority, scheduler
from taskmill_django.models import Task, Worker
from tests.acceptance.support import finished, worker_id_of
from tests.conftest import wait_until
from tests.testapp import io as test_io
from tests.testapp.tasks import record

pytestmark = pytest.mark.django_db(transaction=True)


def disk_io(worker: Any) -> dict[str, Any]:
    io = Worker.objects.filter(id=worker_id_of(worker)).values_list("io", flat=True).first()
    return (io or {}).get("disk_write", {})


def looped_since(worker: Any, seconds: float) -> None:
    """Wait until ``worker`` has kept looping ``seconds`` from now: it measures and reloads
    its policy every poll interval (0.1 s here)."""
    since, worker_id = timezone.now(), worker_id_of(worker)
    wait_until(
        lambda: Worker.objects.filter(
            id=worker_id, heartbeat_at__gte=since + timedelta(seconds=seconds)
        ).exists(),
        timeout=30,
    )


def test_io_budget__declared_writes_wait_while_the_measured_disk_is_saturated(worker_factory):
    rate = test_io.rate_file()
    rate.write_text("5000000")  # 5 MB/s of writes against a 1 MB/s capacity
    worker = worker_factory("--concurrency", "2", "--settings=tests.settings_io")
    wait_until(lambda: disk_io(worker).get("saturated"), timeout=30)
    # Between HIGH and NORMAL: exempt from neither the IO budget nor, under load, the
    # default THROTTLE_POLICY (the machine's real CPU pressure is measured too).
    heavy = record.using(priority=100, expected_io=IoBudget.disk(0, 10_000_000)).submit(n=1).id
    reader = record.using(priority=100, expected_io=IoBudget.disk(10_000_000, 0)).submit(n=2).id
    light = record.using(priority=100).submit(n=3).id

    wait_until(lambda: finished([light, reader]), timeout=30)
    assert Task.objects.get(id=heavy).status == "pending", worker.output()
    assert "io_saturated" in [r.code for r in scheduler.explain(heavy)]

    rate.write_text("0")  # the disk calms down; the moving average follows within seconds

    wait_until(lambda: finished([heavy]), timeout=30)
    assert disk_io(worker)["capacity"] == 1_000_000


def test_io_budget__worker_reports_its_budget_in_bytes_and_explain_compares_them(
    worker_factory,
):
    # Half the capacity in use: (0.8 - 0.5) x 1 MB/s over the 2 s window is left.
    test_io.rate_file().write_text("500000")
    scheduler.pause_all()  # nothing is claimed: explain() tells every reason that applies
    worker = worker_factory("--concurrency", "2", "--settings=tests.settings_io")
    budget = wait_until(lambda: disk_io(worker).get("budget"), timeout=30)
    assert budget == pytest.approx(600_000, abs=100_000)  # rates measured under load wobble
    assert disk_io(worker)["saturated"] is False
    too_big = record.using(priority=100, expected_io=IoBudget.disk(0, 1_000_000)).submit(n=1).id
    fits = record.using(priority=100, expected_io=IoBudget.disk(0, 100_000)).submit(n=2).id

    assert "io_saturated" in [r.code for r in scheduler.explain(too_big)]
    assert "io_saturated" not in [r.code for r in scheduler.explain(fits)]


def test_disk_pressure__busy_disk_holds_background_work_and_a_calm_one_lets_it_run(
    worker_factory,
):
    rate = test_io.rate_file()
    rate.write_text("900000")  # 90% of the 1 MB/s capacity: above BACKGROUND's 0.5
    worker = worker_factory("--concurrency", "2", "--settings=tests.settings_disk_pressure")
    # A first task shows the worker's loop has measured once (the source's baseline); a few
    # more of its policy reloads after that, the source has a rate.
    probe = record.using(priority=Priority.HIGH).submit(n=0).id
    wait_until(lambda: finished([probe]), timeout=30)
    looped_since(worker, 0.5)
    background = record.using(priority=Priority.BACKGROUND).submit(n=1).id
    high = record.using(priority=Priority.HIGH).submit(n=2).id

    wait_until(lambda: finished([high]), timeout=30)
    looped_since(worker, 0.5)
    assert Task.objects.filter(id=background, status="pending").exists(), worker.output()

    rate.write_text("0")  # how full the disk is plays no part: a calm disk lets it run

    wait_until(lambda: finished([background]), timeout=30)
