"""Set-based INSERTs for the hot paths, one statement per chunk whatever the row count.

Many rows travel as one JSON document (PostgreSQL ``json_to_recordset``, SQLite ``json_each``),
serialised in C by ``json``, so the statement text stays tiny and constant: no per-row
placeholders to build, parse or plan, and no driver adaptation of each value in Python.
Other databases fall back to Django's ``bulk_create``.

Columns that hold the same value in every row of a chunk (a batch from one ``using()`` call
shares its type, priority, TTL, ...) travel once, as plain parameters, instead of once per row:
the document then carries only what varies, usually the key and the payload.

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

from .db import CHUNK, chunks, prepared_cursor, qn


@dataclass(frozen=True)
class Column:
    name: str
    pg_type: str  # element type of the array PostgreSQL receives
    kind: str = "plain"  # plain | json | datetime | bool


class JsonText(str):
    """A json column's value given as its JSON text already (not serialised again)."""

    __slots__ = ()


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
    single = len(rows) == 1
    with prepared_cursor() if single else connection.cursor() as cursor:
        for chunk in chunks(list(rows), CHUNK * 4):
            if len(chunk) == 1:
                sql = _sql(connection.vendor, table, *shape, fixed=None)
                params = _single_params(columns, chunk[0])
            else:
                by_column = list(zip(*chunk, strict=True))
                fixed = _fixed_columns(columns, by_column)
                sql = _sql(connection.vendor, table, *shape, fixed=fixed)
                params = _params(columns, by_column, fixed)
            if notify and connection.vendor == "postgresql" and returning:
                params = [str(len(chunk)), *params]
            cursor.execute(sql, params)
            if returning:
                out.extend(cursor.fetchall())
    return out


def _fixed_columns(
    columns: Sequence[Column], by_column: Sequence[tuple[Any, ...]]
) -> frozenset[int]:
    """Indexes of the columns whose value is the same in every row.

    Values must be equal *and* of one type (``1 == True == 1.0`` in Python). JSON columns
    always vary: ``{"a": 1} == {"a": True}`` would merge payloads that differ."""
    fixed = set()
    for index, (column, values) in enumerate(zip(columns, by_column, strict=True)):
        if column.kind == "json":
            continue
        first = values[0]
        if values.count(first) == len(values) and len(set(map(type, values))) == 1:
            fixed.add(index)
    if len(fixed) == len(columns):
        fixed.discard(len(columns) - 1)  # the document needs one element per row
    return frozenset(fixed)


@functools.lru_cache(maxsize=256)
def _sql(
    vendor: str,
    table: str,
    columns: tuple[Column, ...],
    conflict_key: str | None,
    returning: tuple[str, ...],
    notify: bool,
    insert_order: str | None,
    *,
    fixed: frozenset[int] | None,
) -> str:
    """The statement text, which depends only on the shape of the insert (cached: building it
    cost more than a one-row submission's round trip on a loaded machine). ``fixed`` names
    the columns sent once as parameters; None means a single row of plain parameters."""
    names = ", ".join(qn(c.name) for c in columns)
    tail = ""
    if conflict_key:
        tail += f" ON CONFLICT ({qn(conflict_key)}) DO NOTHING"
    if returning:
        tail += " RETURNING " + ", ".join(qn(r) for r in returning)
    if vendor == "postgresql":
        if fixed is None:
            # One row: plain parameters, no array to build on the client or unnest on the server.
            values = ", ".join(
                f"%s::{c.pg_type}::jsonb" if c.kind == "json" else f"%s::{c.pg_type}"
                for c in columns
            )
            source = f"VALUES ({values})"
        else:
            # Many rows: one JSON document of row objects, typed by json_to_recordset; the
            # fixed columns are parameters in the select list (before the document).
            select = ", ".join(
                f"%s::{c.pg_type}" if i in fixed else f"c{i}" for i, c in enumerate(columns)
            )
            typed = ", ".join(
                f"c{i} jsonb" if c.kind == "json" else f"c{i} {c.pg_type}"
                for i, c in enumerate(columns)
                if i not in fixed
            )
            source = f"SELECT {select} FROM json_to_recordset(%s::json) AS t({typed})"  # noqa: S608
            if insert_order is not None:
                # nextval() runs as the function scan yields rows, in document order; the
                # sort by insert_order comes after (none needed when it is the same everywhere).
                order = [c.name for c in columns].index(insert_order)
                by = "" if order in fixed else f" ORDER BY c{order}"
                names = f"{qn('id')}, {names}"
                source = (
                    f"SELECT id, {select} FROM (SELECT nextval(pg_get_serial_sequence("  # noqa: S608
                    f"'{table}', 'id')) AS id, t.* FROM json_to_recordset(%s::json) AS t"
                    f"({typed}) OFFSET 0) AS numbered{by}"
                )
        sql = f"INSERT INTO {qn(table)} ({names}) {source}{tail}"
        if notify and returning:
            # The wake-up CTE is joined (so it is evaluated, once) and pg_notify is volatile,
            # so the planner can neither drop nor repeat it.
            picked = ", ".join(f"ins.{qn(r)}" for r in returning)
            # The payload is the statement's row count: workers refresh planner statistics at
            # once after a bulk submission (see dispatcher).
            sql = (
                "WITH wake AS (SELECT pg_notify('taskmill', %s)::text AS n), "  # noqa: S608
                f"ins AS ({sql}) SELECT {picked} FROM wake, ins"
            )
        return sql
    # SQLite: one JSON array of row arrays (the varying columns, in order); the fixed ones are
    # parameters. WHERE true disambiguates ON CONFLICT after SELECT.
    fixed = fixed or frozenset()
    varying = [i for i in range(len(columns)) if i not in fixed]
    select = ", ".join(
        "%s"
        if i in fixed
        else f"json(json_extract(value, '$[{varying.index(i)}]'))"
        if c.kind == "json"
        else f"json_extract(value, '$[{varying.index(i)}]')"
        for i, c in enumerate(columns)
    )
    return (
        f"INSERT INTO {qn(table)} ({names}) SELECT {select} "  # noqa: S608 - quoted names
        f"FROM json_each(%s) WHERE true{tail}"
    )


def _single_params(columns: Sequence[Column], row: Sequence[Any]) -> list[Any]:
    if connection.vendor == "postgresql":
        return [_pg_value(c, row[i]) for i, c in enumerate(columns)]
    return [json.dumps([[_sqlite_value(c, row[i]) for i, c in enumerate(columns)]])]


def _params(
    columns: Sequence[Column], by_column: Sequence[tuple[Any, ...]], fixed: frozenset[int]
) -> list[Any]:
    """The fixed columns' values, then the document of the varying ones."""
    postgres = connection.vendor == "postgresql"
    params: list[Any] = []
    varying: list[Sequence[Any]] = []
    keys: list[str] = []
    for i, (column, values) in enumerate(zip(columns, by_column, strict=True)):
        if i in fixed:
            params.append(values[0] if postgres else _sqlite_value(column, values[0]))
            continue
        if postgres:
            if column.kind == "datetime":
                values = tuple(v if v is None else v.isoformat() for v in values)
        else:
            values = tuple(_sqlite_value(column, v) for v in values)
        keys.append(f"c{i}")
        varying.append(values)
    if postgres:
        rows: list[Any] = [dict(zip(keys, row, strict=True)) for row in zip(*varying, strict=True)]
    else:
        rows = list(zip(*varying, strict=True))
    params.append(json.dumps(rows, separators=(",", ":")))
    return params


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
