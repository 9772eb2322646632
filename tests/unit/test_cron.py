"""Recurrence math with fixed datetimes: intervals, cron in a non-UTC zone, daylight-saving
nights in Europe/Paris, and validation of RecurringSchedule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from taskmill_django import RecurringSchedule, ValidationError
from taskmill_django.cron import next_occurrence


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def paris_cron(expression: str, after: datetime) -> datetime:
    return next_occurrence(expression, None, "Europe/Paris", after)


# --- intervals -------------------------------------------------------------------------------


def test_next_occurrence__interval_adds_the_seconds():
    assert next_occurrence(None, 90.0, "UTC", utc(2026, 1, 1, 12, 0)) == utc(2026, 1, 1, 12, 1, 30)


def test_next_occurrence__interval_ignores_the_zone_across_dst():
    # Spring-forward night in Paris: an hourly interval stays 3600 real seconds.
    after = utc(2026, 3, 29, 0, 30)
    assert next_occurrence(None, 3600.0, "Europe/Paris", after) == utc(2026, 3, 29, 1, 30)


# --- cron in Europe/Paris --------------------------------------------------------------------


def test_next_occurrence__cron_0300_paris_in_winter_is_0200_utc():
    assert paris_cron("0 3 * * *", utc(2026, 1, 15, 12, 0)) == utc(2026, 1, 16, 2, 0)


def test_next_occurrence__cron_0300_paris_in_summer_is_0100_utc():
    assert paris_cron("0 3 * * *", utc(2026, 7, 15, 12, 0)) == utc(2026, 7, 16, 1, 0)


def test_next_occurrence__result_is_in_utc():
    result = paris_cron("0 3 * * *", utc(2026, 7, 15, 12, 0))
    assert result.utcoffset() == timedelta(0)


def test_next_occurrence__after_given_in_another_zone_is_the_same_instant():
    after = utc(2026, 1, 15, 12, 0).astimezone(ZoneInfo("Asia/Tokyo"))
    assert paris_cron("0 3 * * *", after) == utc(2026, 1, 16, 2, 0)


def test_next_occurrence__is_strictly_after_a_matching_instant():
    # 02:00 UTC is 03:00 in Paris in winter: the next run is the following day.
    assert paris_cron("0 3 * * *", utc(2026, 1, 16, 2, 0)) == utc(2026, 1, 17, 2, 0)


def test_next_occurrence__daily_run_on_the_spring_forward_night_is_23_hours_later():
    first = paris_cron("0 3 * * *", utc(2026, 3, 28, 0, 0))
    second = paris_cron("0 3 * * *", first)
    assert (first, second) == (utc(2026, 3, 28, 2, 0), utc(2026, 3, 29, 1, 0))
    assert second - first == timedelta(hours=23)


def test_next_occurrence__daily_run_on_the_fall_back_night_is_25_hours_later():
    first = paris_cron("0 3 * * *", utc(2026, 10, 24, 0, 0))
    second = paris_cron("0 3 * * *", first)
    assert (first, second) == (utc(2026, 10, 24, 1, 0), utc(2026, 10, 25, 2, 0))
    assert second - first == timedelta(hours=25)


def test_next_occurrence__skipped_wall_clock_time_fires_at_the_next_valid_instant():
    # 02:30 does not exist in Paris on 2026-03-29 (02:00 → 03:00): it fires at 03:00 CEST.
    assert paris_cron("30 2 * * *", utc(2026, 3, 28, 12, 0)) == utc(2026, 3, 29, 1, 0)


def test_next_occurrence__after_the_skipped_time_the_next_day_is_normal():
    assert paris_cron("30 2 * * *", utc(2026, 3, 29, 1, 0)) == utc(2026, 3, 30, 0, 30)


def test_next_occurrence__repeated_wall_clock_time_first_run_is_the_summer_one():
    # 02:30 happens twice in Paris on 2026-10-25: first at 00:30 UTC (CEST).
    assert paris_cron("30 2 * * *", utc(2026, 10, 24, 12, 0)) == utc(2026, 10, 25, 0, 30)


def test_next_occurrence__repeated_wall_clock_time_fires_at_both_instants():
    # As documented (croniter's rule): 02:30 CEST (00:30 UTC), then 02:30 CET (01:30 UTC).
    first = paris_cron("30 2 * * *", utc(2026, 10, 24, 12, 0))
    assert paris_cron("30 2 * * *", first) == utc(2026, 10, 25, 1, 30)


def test_next_occurrence__hourly_cron_runs_every_real_hour_on_the_fall_back_night():
    runs = [utc(2026, 10, 24, 23, 30)]
    for _ in range(4):
        runs.append(paris_cron("0 * * * *", runs[-1]))
    assert runs[1:] == [utc(2026, 10, 25, h, 0) for h in (0, 1, 2, 3)]


# --- RecurringSchedule -----------------------------------------------------------------------


def test_recurring_schedule__cron_first_run_is_the_first_match_from_now():
    schedule = RecurringSchedule(cron="0 3 * * *", timezone="Europe/Paris")
    assert schedule.first_run(utc(2026, 1, 15, 12, 0)) == utc(2026, 1, 16, 2, 0)


def test_recurring_schedule__cron_first_run_may_be_exactly_now():
    schedule = RecurringSchedule(cron="0 3 * * *", timezone="Europe/Paris")
    assert schedule.first_run(utc(2026, 1, 16, 2, 0)) == utc(2026, 1, 16, 2, 0)


def test_recurring_schedule__interval_first_run_waits_the_initial_delay():
    schedule = RecurringSchedule(interval=timedelta(minutes=5), initial_delay=30)
    assert schedule.first_run(utc(2026, 1, 1, 12, 0)) == utc(2026, 1, 1, 12, 0, 30)


def test_recurring_schedule__interval_without_delay_runs_now():
    assert RecurringSchedule(interval=60).first_run(utc(2026, 1, 1)) == utc(2026, 1, 1)


def test_recurring_schedule__timezone_defaults_to_utc():
    assert RecurringSchedule(cron="0 3 * * *").zone == "UTC"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        pytest.param({"cron": "61 * * * *"}, "cron", id="minute_out_of_range"),
        pytest.param({"cron": "every day at 3"}, "cron", id="not_cron"),
        pytest.param({"cron": "0 0 3 * * *"}, "cron", id="six_fields"),
        pytest.param({"cron": 5}, "cron", id="not_a_string"),
        pytest.param({"cron": "0 3 * * *", "timezone": "Europe/Atlantis"}, "timezone", id="tz"),
        pytest.param({"cron": "0 3 * * *", "timezone": 1}, "timezone", id="tz_not_a_string"),
        pytest.param({"cron": "0 3 * * *", "interval": 60}, "recurring", id="interval_and_cron"),
        pytest.param({}, "recurring", id="neither"),
        pytest.param({"interval": 0}, "interval", id="zero_interval"),
        pytest.param({"interval": timedelta(seconds=-5)}, "interval", id="negative_interval"),
        pytest.param({"interval": "60"}, "recurring", id="interval_not_a_number"),
        pytest.param({"interval": 60, "initial_delay": -1}, "initial_delay", id="neg_delay"),
        pytest.param({"interval": 60, "max_occurrences": 0}, "max_occurrences", id="max_zero"),
        pytest.param({"interval": 60, "max_occurrences": True}, "max_occurrences", id="max_bool"),
        pytest.param({"interval": 60, "catch_up": "yes"}, "catch_up", id="catch_up_not_bool"),
    ],
)
def test_recurring_schedule__bad_input_raises_validation_error(kwargs, field):
    with pytest.raises(ValidationError) as info:
        RecurringSchedule(**kwargs)
    assert info.value.field == field
