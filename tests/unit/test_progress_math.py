"""Progress math without a database: the estimator's blend and the worker's smoothed byte rate."""

from __future__ import annotations

import doctest

import pytest

import taskmill_django.read.progress
from taskmill_django import context
from taskmill_django.context import Progress
from taskmill_django.read.progress import extrapolate


def test_doctests__progress_examples_hold():
    result = doctest.testmod(taskmill_django.read.progress)
    assert (result.attempted > 0, result.failed) == (True, 0)


@pytest.mark.parametrize(
    ("reported", "after", "elapsed", "expected", "fraction"),
    [
        (None, None, 3.0, 12.0, 0.25),  # history alone
        (0.2, 2.0, 4.0, None, 0.4),  # the task's own pace alone
        # 10% reported after 1 s (0.1/s) with 10 s runs (0.1/s): both agree
        (0.1, 1.0, 2.0, 10.0, 0.2),
        # 80% after 4 s (0.2/s), 40 s runs (0.025/s): 0.8 x 0.2 + 0.2 x 0.025 = 0.165/s
        (0.8, 4.0, 5.0, 40.0, 0.965),
        # 10% after 1 s (0.1/s), 40 s runs (0.025/s): 0.1 x 0.1 + 0.9 x 0.025 = 0.0325/s
        (0.1, 1.0, 3.0, 40.0, 0.165),
        (0.3, 0.0, 5.0, 10.0, 0.8),  # reported at the very start: history carries it on
    ],
)
def test_extrapolate__blends_rates_by_how_much_was_reported(
    reported, after, elapsed, expected, fraction
):
    found, overdue = extrapolate(
        reported=reported, reported_after=after, elapsed=elapsed, expected=expected
    )
    assert (found, overdue) == (pytest.approx(fraction), False)


def test_extrapolate__nothing_to_go_on_is_none():
    assert extrapolate(reported=None, reported_after=None, elapsed=9.0, expected=None) == (
        None,
        False,
    )


def test_extrapolate__a_report_at_the_end_is_never_overdue():
    assert extrapolate(reported=1.0, reported_after=5.0, elapsed=50.0, expected=5.0) == (
        0.99,
        False,
    )


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_bytes__rate_is_smoothed_from_the_start_of_the_attempt(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(context.time, "monotonic", clock)
    progress = Progress()

    clock.now += 2.0
    progress.report_bytes(2000, 10_000)  # 1000/s since the start: taken as is
    assert progress.bytes_per_second == 1000.0
    clock.now += 1.0
    progress.report_bytes(2000, 10_000)  # idle second: 30% of the way down
    assert progress.bytes_per_second == pytest.approx(700.0)
    clock.now += 0.1
    progress.report_bytes(2500, 10_000)  # too soon after the last sample: not a sample
    assert progress.bytes_per_second == pytest.approx(700.0)
    assert progress.take_unsaved()["progress_bytes_per_second"] == pytest.approx(700.0)
