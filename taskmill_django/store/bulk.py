"""Set-based INSERTs for the hot paths, one statement per chunk whatever the row count.

Many rows travel as one JSON document (PostgreSQL ``json_to_recordset``, SQLite ``json_each``),
serialised in C by ``json``, so the statement text stays tiny and constant: no per-row
placeholders to build, parse or plan, and no driver adaptation of each value in Python.
Other databases fall back to Django's ``bulk_create``.

Conflicts on the unique dedup key are skipped (``ON CONFLICT (key) DO NOTHING``) and reported by
their absence from the returned rows, so callers resolve duplicates without savepoints.
"""

from __future__ import annotations

import functools
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
    insert_order: str | None = None,
) -> list[tuple[Any, ...]]:
    """Insert ``rows`` (tuples in ``columns`` order); return the ``returning`` columns of the
    rows actually inserted. Only call when ``supports_set_insert()``.

    ``notify`` folds the PostgreSQL wake-up of idle workers into the same statement (it is
    delivered at commit), saving a round trip on every submission. ``insert_order`` (a column
    name) makes PostgreSQL draw ids in the order of ``rows`` but insert the rows sorted by that
    column: concurrent batches then take unique-index locks in one global order (no deadlock)
    while ids keep submission order.
    """
    out: list[tuple[Any, ...]] = []
    shape = (tuple(columns), conflict_key, tuple(returning), notify, insert_order)
    with connection.cursor() as cursor:
        for chunk in chunks(list(rows), CHUNK * 4):
            sql = _sql(connection.vendor, table, *shape, single=len(chunk) == 1)
            cursor.execute(sql, _params(columns, chunk))
            if returning:
                out.extend(cursor.fetchall())
    return out


@functools.lru_cache(maxsize=64)
def _sql(
    vendor: str,
    table: str,
    columns: tuple[Column, ...],
    conflict_key: str | None,
    returning: tuple[str, ...],
    notify: bool,
    insert_order: str | None,
    *,
    single: bool,
) -> str:
    """The statement text, which depends only on the shape of the insert (cached: building it
    cost more than a one-row submission's round trip on a loaded machine)."""
    names = ", ".join(qn(c.name) for c in columns)
    tail = ""
    if conflict_key:
        tail += f" ON CONFLICT ({qn(conflict_key)}) DO NOTHING"
    if returning:
        tail += " RETURNING " + ", ".join(qn(r) for r in returning)
    if vendor == "postgresql":
        if single:
            # One row: plain parameters, no array to build on the client or unnest on the server.
            values = ", ".join(
                f"%s::{c.pg_type}::jsonb" if c.kind == "json" else f"%s::{c.pg_type}"
                for c in columns
            )
            source = f"VALUES ({values})"
        else:
            # Many rows: one JSON document of row objects, typed by json_to_recordset.
            select = ", ".join(f"c{i}" for i in range(len(columns)))
            typed = ", ".join(
                f"c{i} jsonb" if c.kind == "json" else f"c{i} {c.pg_type}"
                for i, c in enumerate(columns)
            )
            source = f"SELECT {select} FROM json_to_recordset(%s::json) AS t({typed})"  # noqa: S608
            if insert_order is not None:
                # nextval() runs as the function scan yields rows, in document order; the
                # sort by insert_order comes after.
                by = f"c{[c.name for c in columns].index(insert_order)}"
                names = f"{qn('id')}, {names}"
                source = (
                    f"SELECT id, {select} FROM (SELECT nextval(pg_get_serial_sequence("  # noqa: S608
                    f"'{table}', 'id')) AS id, t.* FROM json_to_recordset(%s::json) AS t"
                    f"({typed}) OFFSET 0) AS numbered ORDER BY {by}"
                )
        sql = f"INSERT INTO {qn(table)} ({names}) {source}{tail}"
        if notify and returning:
            # The wake-up CTE is joined (so it is evaluated, once) and pg_notify is volatile,
            # so the planner can neither drop nor repeat it.
            picked = ", ".join(f"ins.{qn(r)}" for r in returning)
            sql = (
                "WITH wake AS (SELECT pg_notify('taskmill', '')::text AS n), "  # noqa: S608
                f"ins AS ({sql}) SELECT {picked} FROM wake, ins"
            )
        return sql
    # SQLite: one JSON array of row arrays; WHERE true disambiguates ON CONFLICT after SELECT.
    select = ", ".join(
        f"json(json_extract(value, '$[{i}]'))"
        if c.kind == "json"
        else f"json_extract(value, '$[{i}]')"
        for i, c in enumerate(columns)
    )
    return (
        f"INSERT INTO {qn(table)} ({names}) SELECT {select} "  # noqa: S608 - quoted names
        f"FROM json_each(%s) WHERE true{tail}"
    )


def _params(columns: Sequence[Column], rows: Sequence[Sequence[Any]]) -> list[Any]:
    if connection.vendor == "postgresql":
        if len(rows) == 1:
            return [_pg_value(c, rows[0][i]) for i, c in enumerate(columns)]
        keys = [f"c{i}" for i in range(len(columns))]
        convert = [i for i, c in enumerate(columns) if c.kind == "datetime"]
        objects = []
        for row in rows:
            values = list(row)
            for i in convert:
                if values[i] is not None:
                    values[i] = values[i].isoformat()
            objects.append(dict(zip(keys, values, strict=True)))
        return [json.dumps(objects, separators=(",", ":"))]
    document = json.dumps(
        [[_sqlite_value(c, row[i]) for i, c in enumerate(columns)] for row in rows],
        separators=(",", ":"),
    )
    return [document]


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
