"""The claim's SQL: dispatch order, the filters of a gated claim, the group heads plain and
gated claims share, and the ``UPDATE ... RETURNING`` that takes the rows a pick selects.

Statements are built once per shape and reused (``lru_cache``): building and compiling a
queryset costs more than running the claim it feeds. Identifiers are quoted the same way
everywhere, so one shape is one text.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.models import Field, Q
from django.db.models.functions import Now

from ...enums import TaskStatus
from ...models import Task
from ...models.task import TaskQuerySet
from ...policy import io
from ...policy.config import Policy
from ...policy.fair import UNGROUPED
from ..db import preparable, qn

ORDER = '"priority", "id"'  # dispatch order (identifiers quoted the same way everywhere)
SQLITE_NOW = "STRFTIME('%%Y-%%m-%%d %%H:%%M:%%f', 'NOW')"
# A claimable part of the queue as (sql, params), ready to be ordered, limited and locked.
Part = tuple[str, list[Any]]


@functools.lru_cache(maxsize=16)
def claim_sql(vendor: str, domain_count: int, *, by_ids: bool = False) -> str:
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
    sql = claim_statement(
        vendor,
        f"SELECT {qn('id')} FROM {table} "  # noqa: S608
        f"WHERE {qn('status')} = 'pending' AND ({qn('run_after')} IS NULL "
        f"OR {qn('run_after')} <= {due}) AND ({qn('expires_at')} IS NULL "
        f"OR {qn('expires_at')} > {now}){domain_sql} {pick}",
    )
    # The ungated claim runs in every cycle of every worker: kept prepared (db.run_together).
    return preparable(sql) if vendor == "postgresql" and not by_ids else sql


# The columns a claim returns: what a worker, its task's context and the task body's usual
# reads of ``ctx.record`` need. The others (the last error, progress, IO counters, pause and
# requeue bookkeeping) stay in the database: the Task a worker holds has them deferred, and
# reading one loads it. Every returned column costs the server, the driver (timestamps most)
# and the model instance, on every claimed task.
CLAIMED_FIELDS = (
    "id",
    "task_type",
    "domain",
    "key",
    "label",
    "priority",
    "status",
    "payload",
    "group_key",
    "parent_id",
    "fail_fast",
    "retry_count",
    "max_retries",
    "rescue_count",
    "ttl_seconds",
    "ttl_from",
    "expires_at",
    "timeout_seconds",
    "created_at",
    "started_at",
    "lease_token",
    "worker_id",
    "cancel_reason",
    "paused_at",
    "paused_seconds",
    "memo",
    "has_children",
    "is_finalizing",
    "expected_read_bytes",
    "expected_write_bytes",
    "expected_net_rx_bytes",
    "expected_net_tx_bytes",
    "trace_context",
)


def claimed_fields() -> list[Field[Any, Any]]:
    """The fields of ``CLAIMED_FIELDS`` in the model's order, the order ``Model.from_db``
    expects the values of a partial row in."""
    return [f for f in Task._meta.concrete_fields if f.name in CLAIMED_FIELDS]


@functools.lru_cache(maxsize=64)
def claim_statement(vendor: str, picker: str) -> str:
    """UPDATE the rows whose ids ``picker`` selects to running, returning ``CLAIMED_FIELDS``."""
    fields = [str(f.column) for f in claimed_fields()]
    table = qn(Task._meta.db_table)
    if vendor == "postgresql":
        now = "STATEMENT_TIMESTAMP()"
        pg_expiry = f"{now} + t.{qn('ttl_seconds')} * INTERVAL '1 second'"
        columns = ", ".join(f"t.{qn(column)}" for column in fields)
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
    plain = ", ".join(qn(column) for column in fields)
    return (
        f"UPDATE {table} SET {qn('status')} = 'running', "  # noqa: S608
        f"{qn('lease_token')} = %s, {qn('worker_id')} = %s, {qn('started_at')} = {now}, "
        f"{qn('first_started_at')} = COALESCE({qn('first_started_at')}, {now}), "
        f"{qn('expires_at')} = {_first_attempt_expiry('', sqlite_expiry)} "
        f"WHERE {qn('id')} IN ({picker}) RETURNING {plain}"
    )


def _first_attempt_expiry(prefix: str, deadline_sql: str) -> str:
    """SQL for expires_at at claim time: TTLs counted from the first attempt start now."""
    col = f"{prefix}{qn('expires_at')}"
    return (
        f"CASE WHEN {col} IS NULL AND {prefix}{qn('ttl_seconds')} IS NOT NULL "
        f"AND {prefix}{qn('ttl_from')} = 'first_attempt' THEN {deadline_sql} ELSE {col} END"
    )


def claim_from_statement(
    token: uuid.UUID,
    worker_id: uuid.UUID,
    parts: Sequence[tuple[str, Sequence[Any]]],
    limit: int,
) -> tuple[str, list[Any]]:
    """The statement that claims, in one go, the first ``limit`` rows in dispatch order of
    the union of ``parts`` (not empty; see ``rows.claim_from``), to run with others."""
    vendor = connection.vendor
    sources: list[str] = []
    source_params: list[Any] = []
    for index, (text, values) in enumerate(parts):
        sources.append(f"SELECT * FROM ({text}) AS {qn(f'part{index}')}")  # noqa: S608
        source_params.extend(values)
    union = " UNION ALL ".join(sources)
    picker = f"SELECT {qn('id')} FROM ({union}) AS {qn('heads')} ORDER BY {ORDER} LIMIT %s"  # noqa: S608
    sql = claim_statement(vendor, picker)
    if vendor == "postgresql":
        # One text per shape (the groups' names and rooms are parameters), so kept prepared
        # like the ungated claim: parsing it cost as much as running it.
        sql = preparable(sql)
        params = [*source_params, limit, token, worker_id]
    else:
        params = [token.hex, worker_id.hex, *source_params, limit]
    return sql, params


@dataclass(frozen=True)
class Filters:
    """Which pending rows a gated claim may take, before caps and shares decide among them.
    Hashable, so the SQL compiled for one set of filters is reused by later claims."""

    domains: tuple[str, ...]
    skip_domains: frozenset[str]
    skip_groups: frozenset[str]
    skip_ungrouped: bool
    preemptor_priority: int | None
    throttle_from: int | None
    io_budget: tuple[tuple[str, int], ...]

    def queryset(self, *, one_group: bool = False) -> TaskQuerySet:
        """``one_group``: "pending" stated as a one-value range (the same rows) for the head
        of one group on PostgreSQL (see ``group_head``)."""
        pending = TaskStatus.PENDING
        status = Q(status__range=(pending, pending)) if one_group else Q(status=pending)
        qs = Task.objects.filter(status).due().exclude(expires_at__lte=Now())
        if self.domains:
            qs = qs.filter(domain__in=list(self.domains))
        if self.skip_domains:
            qs = qs.exclude(domain__in=sorted(self.skip_domains))
        if self.skip_groups:
            qs = qs.exclude(group_key__in=sorted(self.skip_groups))
        if self.skip_ungrouped:
            qs = qs.exclude(group_key__isnull=True)
        if self.preemptor_priority is not None:
            qs = qs.filter(priority__lte=self.preemptor_priority)
        if self.throttle_from is not None:
            qs = qs.filter(priority__lt=self.throttle_from)
        if self.io_budget:
            qs = qs.exclude(io.held_back(dict(self.io_budget)))
        return qs


def plain_filters(policy: Policy, domains: Sequence[str] | None) -> Filters:
    """The claimable rows when no cap binds: what pauses, preemption and pressure leave."""
    return Filters(
        domains=tuple(domains or ()),
        skip_domains=frozenset(policy.paused_domains),
        skip_groups=frozenset(policy.paused_groups),
        skip_ungrouped=False,
        preemptor_priority=policy.preemptor_priority,
        throttle_from=policy.throttle_from,
        io_budget=policy.io_budget,
    )


@functools.lru_cache(maxsize=256)
def compiled(
    vendor: str, filters: Filters, *, one_group: bool = False
) -> tuple[str, tuple[Any, ...]]:
    """``SELECT id, priority`` of the claimable rows, compiled once per set of filters
    (building and compiling the queryset cost more than the claim statement it feeds);
    ``one_group``: for the head of one group (see ``group_head``)."""
    qs = filters.queryset(one_group=one_group)
    return qs.values_list("id", "priority").order_by().query.sql_with_params()


def group_head(vendor: str, filters: Filters) -> tuple[str, tuple[Any, ...], str]:
    """The claimable rows of one group (the caller adds the group's condition) and their
    dispatch order. On PostgreSQL the planner, taking a group's rows to be spread evenly
    through the queue, may read them from the pending-only dispatch index and filter out
    every other group's rows on the way; when one group's rows sit far behind (it drains
    faster, its weight being higher), that read passed thousands of rows on every claim.
    Stating "pending" as a range keeps that index out of reach, and ordering by the status
    first (a single value) lets the group's own index (group, status, priority, id) deliver
    the rows in order: a head reads only its group's rows."""
    if vendor != "postgresql":
        return (*compiled(vendor, filters), ORDER)
    return (*compiled(vendor, filters, one_group=True), f"{qn('status')}, {ORDER}")


def heads(filters: Filters, rooms: list[tuple[str, int]] | None, limit: int) -> list[Part]:
    """Locked heads to claim from, as SQL: the queue's, or (with fair shares) each group's up
    to its room. Each group adds one condition to the compiled filters."""
    vendor = connection.vendor
    base, params = compiled(vendor, filters)
    lock = " FOR UPDATE SKIP LOCKED" if vendor == "postgresql" else ""
    if rooms is None:
        return [(f"{base} ORDER BY {ORDER} LIMIT %s{lock}", [*params, limit])]
    one, one_params, order = group_head(vendor, filters)
    parts = []
    for group, room in rooms:
        if group == UNGROUPED:
            head = f"{base} AND {qn('group_key')} IS NULL ORDER BY {ORDER} LIMIT %s{lock}"
            parts.append((head, [*params, room]))
        else:
            head = f"{one} AND {qn('group_key')} = %s ORDER BY {order} LIMIT %s{lock}"
            parts.append((head, [*one_params, group, room]))
    return parts


def heads_with_rooms(filters: Filters, shares: dict[str, int] | None, limit: int) -> list[Part]:
    """Like ``heads``, but each group's room (its share less its running tasks, at most
    ``limit``) is counted by the statement itself, so no load needs reading first. PostgreSQL:
    one LATERAL head over a VALUES list of the groups plans in a third of the time of one
    head per group."""
    if shares is None:
        return heads(filters, None, limit)
    vendor = connection.vendor
    table, group = qn(Task._meta.db_table), qn("group_key")
    running = f"(SELECT COUNT(*) FROM {table} AS x WHERE x.{qn('status')} = 'running' AND x.{group}"  # noqa: S608
    tail = f"LIMIT GREATEST(0, LEAST(%s, {{share}} - {running} {{same}}))) FOR UPDATE SKIP LOCKED"
    named = [(g, share) for g, share in sorted(shares.items()) if share > 0 and g != UNGROUPED]
    parts: list[Part] = []
    if named:
        one, one_params, order = group_head(vendor, filters)
        values = ", ".join(["(%s::text, %s::int)"] * len(named))
        lateral = tail.format(share="r.share", same="= r.g")
        parts.append(
            (
                f"SELECT h.* FROM (VALUES {values}) AS r(g, share) CROSS JOIN LATERAL "  # noqa: S608
                f"({one} AND {group} = r.g ORDER BY {order} {lateral}) AS h",
                [*(v for pair in named for v in pair), *one_params, limit],
            )
        )
    if shares.get(UNGROUPED, 0) > 0:
        base, params = compiled(vendor, filters)
        ungrouped = tail.format(share="%s", same="IS NULL")
        parts.append(
            (
                f"{base} AND {group} IS NULL ORDER BY {ORDER} {ungrouped}",
                [*params, limit, shares[UNGROUPED]],
            )
        )
    return parts
