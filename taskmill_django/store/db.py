"""Small database helpers shared by the store functions."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

from django.db import connection, transaction

T = TypeVar("T")

# Keep IN (...) lists and bulk inserts well below SQLite's 32k variable limit and PostgreSQL's
# 65k parameter limit, whatever the column count.
CHUNK = 500


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def is_postgres() -> bool:
    return connection.vendor == "postgresql"


def qn(name: str) -> str:
    return connection.ops.quote_name(name)


def placeholders(values: Iterable[object]) -> str:
    return ", ".join(["%s"] * len(list(values)))


def notify_workers() -> None:
    """Wake idle PostgreSQL workers; delivered when the surrounding transaction commits."""
    if is_postgres():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify('taskmill', '')")


def send_on_commit(signal, sender: str, **kwargs: object) -> None:  # type: ignore[no-untyped-def]
    """Send a Django signal after commit, and skip all work when nobody listens."""
    if signal.has_listeners():
        transaction.on_commit(lambda: signal.send(sender=sender, **kwargs))
