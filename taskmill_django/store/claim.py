"""Claiming: move pending rows to running under a fresh lease, in one short transaction."""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models.functions import Coalesce, Now

from ..enums import TaskStatus
from ..models import Task
from ..policy.config import Policy
from .db import Ahead, qn, run_together

ORDER = '"priority", "id"'  # dispatch order (identifiers quoted the same way everywhere)
SQLITE_NOW = "STRFTIME('%%Y-%%m-%%d %%H:%%M:%%f', 'NOW')"


def claim_batch(
    worker_id: uuid.UUID,
    limit: int,
    domains: Sequence[str] | None = None,
    policy: Policy | None = None,
    ahead: Ahead | None = None,
) -> list[Task]:
    """Claim up to ``limit`` due tasks in priority-then-FIFO order for ``worker_id``.

    ``SKIP LOCKED`` lets many workers claim side by side without waiting on each other's rows;
    on SQLite, IMMEDIATE transactions serialise writers instead. One lease token per batch
    fences every later write of this claim. PostgreSQL and SQLite claim with one
    ``UPDATE ... RETURNING`` statement; other databases use three ORM queries. ``ahead``
    (see ``db.run_together``) rides along with the claim's first round trip, if it has one.
    """
    if limit <= 0:
        return []
    token = uuid.uuid4()
    if policy is not None and not policy.is_trivial:
        from .gated_claim import claim_gated

        return claim_gated(token, worker_id, limit, domains, policy, ahead)
    return claim_returning(token, worker_id, limit, domains, ahead=ahead)


def claim_deferred(worker_id: uuid.UUID) -> bool:
    """Whether this worker's last claim gave way to an exclusive gated claim (retry at once)."""
    from .gated_claim import take_deferred

    return take_deferred(worker_id)


# Statements to run right after a claim statement, in the same round trip where the driver
# allows (see db.run_together): the rate-limit payment of store.gated_claim.
Then = Sequence[tuple[str, Sequence[object]]]


def claim_returning(
    token: uuid.UUID,
    worker_id: uuid.UUID,
    limit: int,
    domains: Sequence[str] | None,
    then: Then = (),
    ahead: Ahead | None = None,
) -> list[Task]:
    """The ungated claim: one statement on PostgreSQL and SQLite (``then`` only there)."""
    if connection.vendor in ("postgresql", "sqlite"):
        with transaction.atomic(savepoint=False):  # joins the dispatcher's transaction
            return _claim_returning(token, worker_id, limit, domains, then=then, ahead=ahead)
    return _claim_orm(token, worker_id, limit, domains)


def _claim_returning(
    token: uuid.UUID,
    worker_id: uuid.UUID,
    limit: int,
    domains: Sequence[str] | None,
    ids: Sequence[int] | None = None,
    then: Then = (),
    ahead: Ahead | None = None,
) -> list[Task]:
    """The claim statement: the first ``limit`` due rows, or exactly ``ids`` (chosen by the
    gated claim) where they are still pending."""
    sql = _claim_sql(connection.vendor, len(domains or ()), by_ids=ids is not None)
    params: list[object] = [*(domains or ())]
    if ids is None:
        params.append(limit)
    else:
        params.append(list(ids) if connection.vendor == "postgresql" else json.dumps(list(ids)))
    if connection.vendor == "postgresql":
        params += [token, worker_id]
    else:
        params = [token.hex, worker_id.hex, *params]
    return _run_claim(sql, params, then, ahead)


def _run_claim(
    sql: str, params: Sequence[object], then: Then = (), ahead: Ahead | None = None
) -> list[Task]:
    return claimed_tasks(run_together([(sql, params), *then], ahead)[0])


def claimed_tasks(raw_rows: Sequence[tuple[Any, ...]]) -> list[Task]:
    """Tasks from the rows a claim statement returned, in dispatch order."""
    names, converters = _row_layout(connection.vendor)
    rows = [Task.from_db(connection.alias, names, _convert(row, converters)) for row in raw_rows]
    rows.sort(key=lambda t: (t.priority, t.id))
    return rows


@functools.lru_cache(maxsize=16)
def _claim_sql(vendor: str, domain_count: int, *, by_ids: bool = False) -> str:
    """The claim statement for a vendor and a number of served domains (built once)."""
    table = qn(Task._meta.db_table)
    domain_sql = ""
    if domain_count:
        domain_sql = f" AND {qn('domain')} IN ({', '.join(['%s'] * domain_count)})"
    if vendor == "postgresql":
        # Statement time, like Django's Now(): a retry written earlier in the same
        # transaction with no delay is due at once.
        now = due = "STATEMENT_TIMESTAMP()"
        if by_ids:
            pick = f"AND {qn('id')} = ANY(%s) FOR UPDATE SKIP LOCKED"
        else:
            pick = f"ORDER BY {ORDER} LIMIT %s FOR UPDATE SKIP LOCKED"
    else:
        now = SQLITE_NOW
        # SQLite's clock has millisecond precision while stored times have microseconds:
        # compare against the end of the current millisecond, or a row due "now" could wait.
        due = now + " || '999'"
        if by_ids:
            pick = f"AND {qn('id')} IN (SELECT value FROM json_each(%s))"  # noqa: S608
        else:
            pick = f"ORDER BY {ORDER} LIMIT %s"
    return _claim_statement(
        vendor,
        f"SELECT {qn('id')} FROM {table} "  # noqa: S608
        f"WHERE {qn('status')} = 'pending' AND ({qn('run_after')} IS NULL "
        f"OR {qn('run_after')} <= {due}) AND ({qn('expires_at')} IS NULL "
        f"OR {qn('expires_at')} > {now}){domain_sql} {pick}",
    )


@functools.lru_cache(maxsize=64)
def _claim_statement(vendor: str, picker: str) -> str:
    """UPDATE the rows whose ids ``picker`` selects to running, returning every column."""
    fields = list(Task._meta.concrete_fields)
    table = qn(Task._meta.db_table)
    if vendor == "postgresql":
        now = "STATEMENT_TIMESTAMP()"
        pg_expiry = f"{now} + t.{qn('ttl_seconds')} * INTERVAL '1 second'"
        columns = ", ".join(f"t.{qn(f.column)}" for f in fields)
        # MATERIALIZED: the locking subquery must run exactly once, or a re-scan could
        # lock and claim more rows than LIMIT.
        return (
            f"WITH picked AS MATERIALIZED ({picker}) "  # noqa: S608
            f"UPDATE {table} AS t SET {qn('status')} = 'running', {qn('lease_token')} = %s, "
            f"{qn('worker_id')} = %s, {qn('started_at')} = {now}, "
            f"{qn('first_started_at')} = COALESCE(t.{qn('first_started_at')}, {now}), "
            f"{qn('expires_at')} = {_first_attempt_expiry('t.', pg_expiry)} "
            f"FROM picked WHERE t.{qn('id')} = picked.{qn('id')} RETURNING {columns}"
        )
    now = SQLITE_NOW
    sqlite_expiry = (
        f"STRFTIME('%%Y-%%m-%%d %%H:%%M:%%f', 'NOW', '+' || {qn('ttl_seconds')} || ' seconds')"
    )
    plain = ", ".join(qn(f.column) for f in fields)
    return (
        f"UPDATE {table} SET {qn('status')} = 'running', "  # noqa: S608
        f"{qn('lease_token')} = %s, {qn('worker_id')} = %s, {qn('started_at')} = {now}, "
        f"{qn('first_started_at')} = COALESCE({qn('first_started_at')}, {now}), "
        f"{qn('expires_at')} = {_first_attempt_expiry('', sqlite_expiry)} "
        f"WHERE {qn('id')} IN ({picker}) RETURNING {plain}"
    )


def claim_from(
    token: uuid.UUID,
    worker_id: uuid.UUID,
    parts: Sequence[tuple[str, Sequence[Any]]],
    limit: int,
    then: Then = (),
) -> list[Task]:
    """Claim, in one statement, the first ``limit`` rows in dispatch order of the union of
    ``parts`` (SELECTs of the id and priority of due rows, each ordered, limited and locked:
    a group's head up to its share, say), given as (sql, params). PostgreSQL and SQLite."""
    if not parts:
        return []
    return _run_claim(*claim_from_statement(token, worker_id, parts, limit), then)


def claim_from_statement(
    token: uuid.UUID,
    worker_id: uuid.UUID,
    parts: Sequence[tuple[str, Sequence[Any]]],
    limit: int,
) -> tuple[str, list[Any]]:
    """The statement of ``claim_from`` (``parts`` not empty), to run with others."""
    vendor = connection.vendor
    sources, source_params = [], []
    for index, (text, values) in enumerate(parts):
        sources.append(f"SELECT * FROM ({text}) AS {qn(f'part{index}')}")  # noqa: S608
        source_params.extend(values)
    union = " UNION ALL ".join(sources)
    picker = f"SELECT {qn('id')} FROM ({union}) AS {qn('heads')} ORDER BY {ORDER} LIMIT %s"  # noqa: S608
    sql = _claim_statement(vendor, picker)
    if vendor == "postgresql":
        params = [*source_params, limit, token, worker_id]
    else:
        params = [token.hex, worker_id.hex, *source_params, limit]
    return sql, params


@functools.lru_cache(maxsize=4)
def _row_layout(vendor: str) -> tuple[list[str], list]:  # type: ignore[type-arg]
    """Attribute names and converters of the returned columns (built once per vendor)."""
    fields = list(Task._meta.concrete_fields)
    return [f.attname for f in fields], _converters(fields)


def _first_attempt_expiry(prefix: str, deadline_sql: str) -> str:
    """SQL for expires_at at claim time: TTLs counted from the first attempt start now."""
    col = f"{prefix}{qn('expires_at')}"
    return (
        f"CASE WHEN {col} IS NULL AND {prefix}{qn('ttl_seconds')} IS NOT NULL "
        f"AND {prefix}{qn('ttl_from')} = 'first_attempt' THEN {deadline_sql} ELSE {col} END"
    )


def _converters(fields: list) -> list:  # type: ignore[type-arg]
    """Backend converters (e.g. SQLite text → datetime/UUID/JSON) as the ORM would apply."""
    result = []
    for field in fields:
        expression = field.get_col(Task._meta.db_table)
        backend = connection.ops.get_db_converters(expression)
        own = expression.get_db_converters(connection)
        result.append((backend + own, expression))
    return result


def _convert(row: tuple, converters: list) -> list:  # type: ignore[type-arg]
    values = list(row)
    for index, (funcs, expression) in enumerate(converters):
        for func in funcs:
            values[index] = func(values[index], expression, connection)
    return values


def _claim_orm(
    token: uuid.UUID, worker_id: uuid.UUID, limit: int, domains: Sequence[str] | None
) -> list[Task]:
    with transaction.atomic(savepoint=False):
        candidates = Task.objects.claimable().exclude(expires_at__lte=Now())
        if domains:
            candidates = candidates.filter(domain__in=list(domains))
        ids = list(
            candidates.in_dispatch_order()
            .select_for_update(skip_locked=True)
            .values_list("id", flat=True)[:limit]
        )
        if not ids:
            return []
        return claim_ids(token, worker_id, ids)


def claim_ids(token: uuid.UUID, worker_id: uuid.UUID, ids: list[int]) -> list[Task]:
    """Claim chosen ids that are still pending (caller holds the transaction). TTLs counted
    from the first attempt start at this claim."""
    if connection.vendor in ("postgresql", "sqlite"):
        return _claim_returning(token, worker_id, len(ids), None, ids)
    Task.objects.filter(id__in=ids, status=TaskStatus.PENDING).update(
        status=TaskStatus.RUNNING,
        lease_token=token,
        worker_id=worker_id,
        started_at=Now(),
        first_started_at=Coalesce("first_started_at", Now()),
    )
    rows = list(Task.objects.filter(id__in=ids, lease_token=token).order_by("priority", "id"))
    for row in rows:
        if (
            row.expires_at is None
            and row.ttl_seconds is not None
            and row.ttl_from == "first_attempt"
        ):
            row.expires_at = row.started_at + timedelta(seconds=row.ttl_seconds)
            row.save(update_fields=["expires_at"])
    return rows
