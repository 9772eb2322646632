"""The database clock: every deadline that is later compared in SQL is computed from it.

Workers on many machines compare ``run_after``, ``expires_at``, schedule ticks and heartbeats
with the database's ``NOW()``. A deadline computed from a machine's own clock would be off by
that machine's skew: a worker ten minutes fast would fire cron ticks ten minutes early and then
skip them (RELIABILITY G7). So deadlines start from the database clock:

- ``db_now()`` asks the database (one query): for decisions taken once per round, such as
  firing the due occurrences of schedules.
- ``now()`` is this process's clock corrected by its measured offset to the database clock,
  re-measured every ``RESYNC_SECONDS``: for the hot paths (a delay or TTL at submission) that
  must not pay a round trip. Its error is the half round trip of the measurement plus the drift
  since, milliseconds at worst.

SQLite runs on this machine, so its clock is this machine's clock.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

from django.db import connections
from django.db.utils import DEFAULT_DB_ALIAS
from django.utils import timezone

RESYNC_SECONDS = 60.0

_SQL = {
    "postgresql": "SELECT STATEMENT_TIMESTAMP()",
    "mysql": "SELECT UTC_TIMESTAMP(6)",
}
_lock = threading.Lock()
# alias -> (offset of the database clock from ours, monotonic time it was measured)
_offsets: dict[str, tuple[timedelta, float]] = {}


def db_now(using: str = DEFAULT_DB_ALIAS) -> datetime:
    """The database's current time (aware, UTC); this machine's for SQLite."""
    connection = connections[using]
    sql = _SQL.get(connection.vendor)
    if sql is None:
        return timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(sql)
        value = cursor.fetchone()[0]
    if timezone.is_naive(value):  # MySQL returns the UTC time without a zone
        value = value.replace(tzinfo=UTC)
    return value


def now(using: str = DEFAULT_DB_ALIAS) -> datetime:
    """The database clock, estimated from this machine's clock without a round trip."""
    return timezone.now() + offset(using)


def offset(using: str = DEFAULT_DB_ALIAS) -> timedelta:
    """How far the database clock is ahead of this machine's (measured at most a minute ago)."""
    if connections[using].vendor not in _SQL:
        return timedelta(0)
    known = _offsets.get(using)
    if known is not None and time.monotonic() - known[1] < RESYNC_SECONDS:
        return known[0]
    return resync(using)


def resync(using: str = DEFAULT_DB_ALIAS) -> timedelta:
    """Measure the offset now: the database time against the midpoint of the round trip."""
    before = timezone.now()
    database = db_now(using)
    after = timezone.now()
    measured = database - (before + (after - before) / 2)
    with _lock:
        _offsets[using] = (measured, time.monotonic())
    return measured


def forget() -> None:
    """Drop measured offsets (the next ``now()`` measures again), e.g. after a reconnect."""
    with _lock:
        _offsets.clear()
