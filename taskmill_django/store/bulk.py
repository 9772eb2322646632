"""Set-based INSERTs for the hot paths, one statement per chunk whatever the row count.

PostgreSQL receives one array per column (``unnest``), SQLite one JSON document (``json_each``),
so the statement text stays tiny and constant: no per-row placeholders to build, parse or plan.
Other databases fall back to Django's ``bulk_create``.

Conflicts on the unique dedup key are skipped (``ON CONFLICT (key) DO NOTHING``) and reported by
their absence from the returned rows, so callers resolve duplicates without savepoints.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection

from .db import CHUNK, chunks, qn


@dataclass(frozen=True)
class Column:
    name: str
    pg_type: str  # element type of the array PostgreSQL receives
    kind: str = "plain"  # plain | json | datetime | bool


def supports_set_insert() -> bool:
    return connection.vendor in ("postgresql", "sqlite")


def insert_rows(
    table: str,
    columns: Sequence[Column],
    rows: Sequence[Sequence[Any]],
    *,
    conflict_key: str | None = None,
    returning: Sequence[str] = (),
    notify: bool = False,
) -> list[tuple[Any, ...]]:
    """Insert ``rows`` (tuples in ``columns`` order); return the ``returning`` columns of the
    rows actually inserted. Only call when ``supports_set_insert()``.

    ``notify`` folds the PostgreSQL wake-up of idle workers into the same statement (it is
    delivered at commit), saving a round trip on every submission.
    """
    out: list[tuple[Any, ...]] = []
    with connection.cursor() as cursor:
        for chunk in chunks(list(rows), CHUNK * 4):
            sql, params = _statement(table, columns, chunk, conflict_key, returning)
            if notify and returning and connection.vendor == "postgresql":
                # The wake-up CTE is joined (so it is evaluated, once) and pg_notify is volatile,
                # so the planner can neither drop nor repeat it.
                names = ", ".join(f"ins.{qn(r)}" for r in returning)
                sql = (
                    "WITH wake AS (SELECT pg_notify('taskmill', '')::text AS n), "  # noqa: S608
                    f"ins AS ({sql}) SELECT {names} FROM wake, ins"
                )
            cursor.execute(sql, params)
            if returning:
                out.extend(cursor.fetchall())
    return out


def _statement(
    table: str,
    columns: Sequence[Column],
    rows: Sequence[Sequence[Any]],
    conflict_key: str | None,
    returning: Sequence[str],
) -> tuple[str, list[Any]]:
    names = ", ".join(qn(c.name) for c in columns)
    tail = ""
    if conflict_key:
        tail += f" ON CONFLICT ({qn(conflict_key)}) DO NOTHING"
    if returning:
        tail += " RETURNING " + ", ".join(qn(r) for r in returning)
    if connection.vendor == "postgresql":
        arrays = ", ".join(f"%s::{c.pg_type}[]" for c in columns)
        select = ", ".join(
            f"c{i}::jsonb" if c.kind == "json" else f"c{i}" for i, c in enumerate(columns)
        )
        aliases = ", ".join(f"c{i}" for i in range(len(columns)))
        params = [[_pg_value(c, row[i]) for row in rows] for i, c in enumerate(columns)]
        sql = (
            f"INSERT INTO {qn(table)} ({names}) SELECT {select} "  # noqa: S608 - quoted names
            f"FROM unnest({arrays}) AS t({aliases}){tail}"
        )
        return sql, params
    # SQLite: one JSON array of row arrays; WHERE true disambiguates ON CONFLICT after SELECT.
    select = ", ".join(
        f"json(json_extract(value, '$[{i}]'))"
        if c.kind == "json"
        else f"json_extract(value, '$[{i}]')"
        for i, c in enumerate(columns)
    )
    document = json.dumps(
        [[_sqlite_value(c, row[i]) for i, c in enumerate(columns)] for row in rows],
        separators=(",", ":"),
    )
    sql = (
        f"INSERT INTO {qn(table)} ({names}) SELECT {select} "  # noqa: S608 - quoted names
        f"FROM json_each(%s) WHERE true{tail}"
    )
    return sql, [document]


def _pg_value(column: Column, value: Any) -> Any:
    if column.kind == "json":
        return json.dumps(value, separators=(",", ":"))
    return value


def _sqlite_value(column: Column, value: Any) -> Any:
    if column.kind == "json":
        return json.dumps(value)
    if value is None:
        return None
    if column.kind == "datetime":
        return connection.ops.adapt_datetimefield_value(value)
    if column.kind == "bool":
        return 1 if value else 0
    if isinstance(value, datetime):  # pragma: no cover - every datetime column is declared
        return value.isoformat()
    return value


def next_ids(table: str, count: int) -> list[int]:
    """Reserve ``count`` ids from a PostgreSQL table's id sequence, in increasing order."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
            [table, count],
        )
        return sorted(row[0] for row in cursor.fetchall())
