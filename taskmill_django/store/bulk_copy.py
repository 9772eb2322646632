"""Large batches on PostgreSQL through ``COPY``: the cheapest way rows enter a table.

``COPY`` skips what an ``INSERT ... SELECT`` pays per row (the JSON document's parsing, the
speculative insertion of ``ON CONFLICT``, ``RETURNING`` rows sent back), but it can neither
skip a taken key nor say which ids it drew. So the ids are drawn first, in one statement, and
the rows go in under a savepoint: a taken key (a duplicate submission, or a concurrent batch
that got there first) undoes only this ``COPY``, and the caller inserts the same rows again the
way that resolves conflicts. Fresh keys, the common case of a bulk load, pay for nothing else.

A staging table (``COPY`` into a temporary table, then ``INSERT ... SELECT ... ON CONFLICT``)
would keep conflict handling in one pass but pays the insert's per-row cost on top of the
copy's, and measured no faster than the JSON document of ``bulk.insert_rows``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import Any

from django.db import IntegrityError, connection, transaction

from .bulk import Column, JsonText
from .db import qn

MIN_ROWS = 64
"""Fewer rows than this go through ``bulk.insert_rows``: a ``COPY`` costs three more round
trips (the ids, the savepoint and its release) than one ``INSERT``, which only enough rows
repay."""


def copy_rows(
    table: str,
    columns: Sequence[Column],
    rows: Sequence[Sequence[Any]],
    *,
    order_by: int,
    notify: bool = False,
) -> list[int] | None:
    """Insert ``rows`` (tuples in ``columns`` order; a json column's value may be given as
    ``JsonText``) into ``table`` and return their new ids in ``rows`` order; None when one of
    them collides with a row already there, in which case none of them was kept. Runs inside
    the caller's transaction (a savepoint of it).

    Ids are drawn in ``rows`` order (ids keep submission order) but the rows are written
    sorted by the column at ``order_by``: concurrent batches then take their unique-index
    locks in one global order and cannot deadlock. ``notify`` wakes idle workers at commit
    with the row count as payload (the wake-up rides on the statement that draws the ids).
    """
    with connection.cursor() as cursor:
        cursor.execute(_ids_sql(table, notify), [len(rows)] * (2 if notify else 1))
        # nextval() is called in generate_series order; sorting pins that whatever order
        # the rows come back in.
        ids = sorted(row[0] for row in cursor.fetchall())
    numbered = sorted(zip(ids, rows, strict=True), key=lambda pair: pair[1][order_by])
    as_json = [i + 1 for i, c in enumerate(columns) if c.kind == "json"]  # +1: the id first
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            with (
                connection.wrap_database_errors,
                cursor.cursor.copy(_copy_sql(table, tuple(columns))) as copy,
            ):
                for task_id, row in numbered:
                    values = [task_id, *row]
                    for index in as_json:
                        if type(values[index]) is not JsonText:
                            values[index] = _dumps(values[index])
                    copy.write_row(values)
    except IntegrityError as exc:
        if getattr(exc.__cause__, "sqlstate", None) != _UNIQUE_VIOLATION:
            raise
        return None
    return ids


_UNIQUE_VIOLATION = "23505"
_dumps = json.JSONEncoder(separators=(",", ":")).encode


@functools.lru_cache(maxsize=16)
def _ids_sql(table: str, notify: bool) -> str:
    draw = f"SELECT nextval(pg_get_serial_sequence('{table}', 'id')) FROM"
    if not notify:
        return f"{draw} generate_series(1, %s)"
    # The wake-up is a one-row subquery joined once; its payload is the row count, like the
    # one insert_rows sends (workers refresh planner statistics after a bulk submission).
    return f"{draw} (SELECT pg_notify('taskmill', %s::text)) AS wake, generate_series(1, %s)"


@functools.lru_cache(maxsize=16)
def _copy_sql(table: str, columns: tuple[Column, ...]) -> str:
    names = ", ".join(qn(c.name) for c in columns)
    return f"COPY {qn(table)} ({qn('id')}, {names}) FROM STDIN"
