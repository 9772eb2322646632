"""Recurrence math for schedules: pure functions over croniter and timedeltas.

>>> from datetime import datetime, timezone
>>> start = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
>>> next_occurrence(None, 300.0, "UTC", start)
datetime.datetime(2026, 1, 1, 12, 5, tzinfo=datetime.timezone.utc)
>>> next_occurrence("0 3 * * *", None, "Europe/Paris", start)
datetime.datetime(2026, 1, 2, 2, 0, tzinfo=datetime.timezone.utc)

Cron expressions are evaluated in the schedule's time zone and follow croniter's rules across
daylight-saving changes: a wall-clock time that does not exist that day (02:30 on a spring-forward
night in Europe/Paris) fires at the next valid instant, and a wall-clock time that happens
twice (the autumn change) fires at both instants, as croniter yields both.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from .exceptions import ValidationError


def validate_cron(expression: object) -> str:
    if not isinstance(expression, str) or not croniter.is_valid(expression):
        raise ValidationError("cron", f"not a valid cron expression: {expression!r}")
    if len(expression.split()) != 5:
        raise ValidationError("cron", f"use five fields (m h dom mon dow): {expression!r}")
    return expression


def validate_timezone(name: object) -> str:
    if name is None:
        return "UTC"
    if not isinstance(name, str):
        raise ValidationError("timezone", f"expected an IANA zone name, got {name!r}")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError("timezone", f"unknown time zone {name!r}") from None
    return name


def next_occurrence(
    cron: str | None, interval_seconds: float | None, timezone: str, after: datetime
) -> datetime:
    """The first occurrence strictly after ``after`` (an aware datetime), in UTC."""
    if cron is not None:
        local = after.astimezone(ZoneInfo(timezone))
        nxt = croniter(cron, local).get_next(datetime)
        return nxt.astimezone(UTC)
    assert interval_seconds is not None  # noqa: S101 - one of the two is always set
    return (after + timedelta(seconds=interval_seconds)).astimezone(UTC)


@dataclass(frozen=True)
class RecurringSchedule:
    """When a task recurs: every ``interval`` or on a ``cron`` expression (in ``timezone``).

    >>> RecurringSchedule(cron="*/5 * * * *", timezone="Europe/Paris").cron
    '*/5 * * * *'
    """

    interval: timedelta | float | None = None
    cron: str | None = None
    timezone: str | None = None
    initial_delay: timedelta | float | None = None
    max_occurrences: int | None = None
    catch_up: bool = False

    def __post_init__(self) -> None:
        if (self.interval is None) == (self.cron is None):
            raise ValidationError("recurring", "give exactly one of interval= or cron=")
        if self.interval is not None and _seconds(self.interval) <= 0:
            raise ValidationError("interval", "must be positive")
        if self.cron is not None:
            validate_cron(self.cron)
        validate_timezone(self.timezone)
        if self.initial_delay is not None and _seconds(self.initial_delay) < 0:
            raise ValidationError("initial_delay", "must not be negative")
        mo = self.max_occurrences
        if mo is not None and (isinstance(mo, bool) or not isinstance(mo, int) or mo < 1):
            raise ValidationError("max_occurrences", f"must be an integer >= 1, got {mo!r}")
        if not isinstance(self.catch_up, bool):
            raise ValidationError("catch_up", "must be True or False")

    @property
    def interval_seconds(self) -> float | None:
        return None if self.interval is None else _seconds(self.interval)

    @property
    def initial_delay_seconds(self) -> float:
        return 0.0 if self.initial_delay is None else _seconds(self.initial_delay)

    @property
    def zone(self) -> str:
        return validate_timezone(self.timezone)

    def first_run(self, now: datetime) -> datetime:
        """Interval schedules start after ``initial_delay``; cron ones at the first match
        after ``now + initial_delay``. With neither delay nor cron, the first run is now."""
        start = now + timedelta(seconds=self.initial_delay_seconds)
        if self.cron is not None:
            return next_occurrence(self.cron, None, self.zone, start - timedelta(microseconds=1))
        return start


def _seconds(value: timedelta | float) -> float:
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError("recurring", f"expected seconds or a timedelta, got {value!r}")
    return float(value)
