"""Progress of running tasks: estimated_progress() and byte_progress() records, and the one
estimator the snapshot, the dashboard and the admin share."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db.models import F
from django.db.models.functions import Now

from taskmill_django import IoBudget, scheduler
from taskmill_django.models import Task
from taskmill_django.read import dashboard
from taskmill_django.records import ByteProgress, EstimatedProgress
from tests.db.conftest import claim_one
from tests.testapp.tasks import other_noop, record, sleep

pytestmark = pytest.mark.django_db


def started(task_id: int, seconds_ago: float, **fields) -> None:
    """The attempt began ``seconds_ago`` (database clock); ``fields`` are set as well."""
    Task.objects.filter(id=task_id).update(
        started_at=Now() - timedelta(seconds=seconds_ago), **fields
    )


def estimates() -> dict[int, EstimatedProgress]:
    return {e.task_id: e for e in scheduler.domain("tests").estimated_progress()}


def test_estimated_progress__time_over_the_mean_of_completed_runs(history_factory):
    history_factory(task_type="tests::sleep", duration_ms=8_000)
    history_factory(task_type="tests::sleep", duration_ms=12_000)
    history_factory(task_type="tests::sleep", duration_ms=1, status="failed")  # not counted
    task_id = sleep.submit(seconds=1).id
    claim_one()
    started(task_id, 5)

    estimate = estimates()[task_id]

    assert (estimate.task_type, estimate.reported_percent) == ("tests::sleep", None)
    assert estimate.extrapolated_percent == pytest.approx(0.5, abs=0.05)
    assert estimate.percent == estimate.extrapolated_percent
    assert estimate.is_overdue is False


def test_estimated_progress__past_its_history_is_overdue_not_done(history_factory):
    history_factory(task_type="tests::sleep", duration_ms=1_000)
    task_id = sleep.submit(seconds=1).id
    claim_one()
    started(task_id, 25)

    estimate = estimates()[task_id]

    assert (estimate.extrapolated_percent, estimate.is_overdue) == (0.99, True)


def test_estimated_progress__report_is_the_figure_and_moves_on_at_a_blended_rate(
    history_factory,
):
    # History: 10 s a run (0.1 per second). The task reported half after 10 s (0.05 per
    # second); at one half each rate weighs one half: 0.075 per second for the 2 s since.
    history_factory(task_type="tests::sleep", duration_ms=10_000)
    task_id = sleep.submit(seconds=1).id
    claim_one()
    started(task_id, 12, progress=0.5, progress_at=Now() - timedelta(seconds=2))

    estimate = estimates()[task_id]

    assert (estimate.reported_percent, estimate.percent) == (0.5, 0.5)
    assert estimate.extrapolated_percent == pytest.approx(0.65, abs=0.02)


def test_estimated_progress__report_of_an_earlier_attempt_is_no_report():
    task_id = sleep.submit(seconds=1).id
    claim_one()
    started(task_id, 1, progress=0.8, progress_at=F("started_at") - timedelta(seconds=30))

    assert estimates()[task_id] == EstimatedProgress(task_id, "tests::sleep", None, None, 0.0)


def test_estimated_progress__without_history_or_report_is_zero():
    task_id = sleep.submit(seconds=1).id
    claim_one()

    assert estimates()[task_id] == EstimatedProgress(task_id, "tests::sleep", None, None, 0.0)


def test_estimated_progress__snapshot_and_dashboard_show_the_same_estimate(history_factory):
    history_factory(task_type="tests::sleep", duration_ms=1_000)
    task_id = sleep.submit(seconds=1).id
    claim_one()
    started(task_id, 600)

    (in_snapshot,) = scheduler.snapshot().progress
    (row,) = dashboard.collect().running

    assert in_snapshot == estimates()[task_id]
    assert (row.is_estimated, row.is_overdue, row.progress) == (True, True, 0.99)


def test_byte_progress__reported_bytes_with_smoothed_rate_and_eta():
    budget = sleep.using(expected_io=IoBudget.disk(100, 50))
    reported = budget.submit(seconds=1, n=1).id
    silent = budget.submit(seconds=1, n=2).id
    claim_one()
    claim_one()
    started(
        reported,
        10,
        progress=0.1,
        progress_at=Now(),
        progress_bytes_done=300,
        progress_bytes_total=3000,
        progress_bytes_per_second=30.0,
    )
    started(silent, 10)

    (found,) = scheduler.domain("tests").byte_progress()

    assert found == ByteProgress(
        reported, "tests::sleep", 300, 3000, 30.0, found.elapsed, timedelta(seconds=90)
    )
    assert found.elapsed == pytest.approx(timedelta(seconds=10), abs=timedelta(seconds=2))


def test_byte_progress__no_rate_yet_means_no_eta():
    task_id = record.submit(n=1).id
    claim_one()
    started(task_id, 0, progress=0.0, progress_at=Now(), progress_bytes_done=0,
            progress_bytes_total=10)  # fmt: skip

    (found,) = scheduler.domain("tests").byte_progress()

    assert (found.bytes_completed, found.throughput_bps, found.eta) == (0, 0.0, None)


def test_byte_progress__only_the_domains_tasks():
    theirs = other_noop.submit().id
    claim_one()
    started(theirs, 1, progress=0.5, progress_at=Now(), progress_bytes_done=5,
            progress_bytes_total=10)  # fmt: skip

    assert scheduler.domain("tests").byte_progress() == []
    assert [p.task_id for p in scheduler.domain("other").byte_progress()] == [theirs]
