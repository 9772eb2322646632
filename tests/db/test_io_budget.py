"""IO budgets in bytes against the database: the filter a claim applies for a set of budgets,
explain() reading the budgets workers report, and the disk pressure source in a snapshot."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import override_settings

from taskmill_django import IoBudget, Priority, scheduler
from taskmill_django.models import Task
from taskmill_django.policy import io
from taskmill_django.store import workers
from tests.testapp import io as test_io
from tests.testapp.tasks import record

pytestmark = pytest.mark.django_db


def writer(nbytes: int, n: int, **options) -> int:
    return record.using(expected_io=IoBudget.disk(0, nbytes), **options).submit(n=n).id


def test_held_back__tasks_declaring_more_bytes_than_the_budget():
    small = writer(100_000, 1)
    exact = writer(600_000, 2)
    large = writer(10_000_000, 3)
    reader = record.using(expected_io=IoBudget.disk(10_000_000, 0)).submit(n=4).id
    urgent = writer(10_000_000, 5, priority=Priority.HIGH)
    budgets = io.budget({"disk_write": 500_000.0}, {"disk_write": 1_000_000.0})

    held = Task.objects.filter(io.held_back(budgets)).values_list("id", flat=True)

    assert budgets == {"disk_write": 600_000}
    assert list(held) == [large]
    assert {small, exact, reader, urgent}.isdisjoint(held)


def test_held_back__no_budget_holds_nothing_back():
    writer(10**12, 1)
    assert not Task.objects.filter(io.held_back({})).exists()


def report_busy_disk(rate: float) -> None:
    """A live worker whose machine writes ``rate`` bytes a second of its 1 MB/s."""
    worker_id = workers.register_worker("w1", 1, 4, None)
    workers.heartbeat(worker_id, 0, io=io.report({"disk_write": rate}, {"disk_write": 1e6}))


def test_explain__task_declaring_more_than_the_workers_budget_waits_for_io():
    report_busy_disk(500_000.0)
    large = writer(1_000_000, 1)

    (reason,) = [r for r in scheduler.explain(large) if r.code == "io_saturated"]

    assert reason.data["directions"] == ["disk_write"]
    assert reason.data["expected"] == {"disk_write": 1_000_000}
    assert reason.data["workers"] == {"w1": ["disk_write"]}


def test_explain__task_that_fits_the_budget_is_not_held_for_io():
    report_busy_disk(500_000.0)
    small = writer(100_000, 1)

    assert "io_saturated" not in [r.code for r in scheduler.explain(small)]


@pytest.fixture
def disk_rate(task_log):
    """The write rate the test sampler (tests.testapp.io.FileRate) reports, in bytes/s."""

    def set_rate(rate: float) -> None:
        test_io.rate_file().write_text(str(rate))

    return set_rate


def test_snapshot__disk_pressure_is_throughput_over_capacity(disk_rate):
    disk_rate(600_000)
    io_settings = {
        "IO_SAMPLER": "tests.testapp.io.FileRate",
        "IO_CAPACITY": {"disk_write": 1_000_000},
        "PRESSURE_SOURCES": ["taskmill_django.policy.pressure.DiskPressure"],
    }
    with override_settings(TASKMILL={**settings.TASKMILL, **io_settings}):
        first = scheduler.snapshot()  # the first reading sets the meter's baseline
        second = scheduler.snapshot()

    assert first.pressure_breakdown == {"disk": 0.0}
    assert second.pressure_breakdown["disk"] == pytest.approx(0.6, abs=0.01)
