"""Taking rows: the claim statements run, and the rows they return as ``Task`` instances.

PostgreSQL and SQLite claim with one ``UPDATE ... RETURNING`` statement (``sql.py`` builds
it); other databases pick ids with a locking ORM read and update them. The statement reads
every column with a plain cursor, so the conversions the ORM would apply (SQLite text to
datetime, UUID and JSON, say) are applied here, with the converters the backend declares for
each column, looked up once per vendor.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import Field
from django.db.models.base import ModelState
from django.db.models.functions import Coalesce, Now
from django.db.models.signals import post_init, pre_init

from ...enums import TaskStatus
from ...models import Task
from ..db import Ahead, run_together
from .sql import CLAIMED_FIELDS, claim_from_statement, claim_sql, claimed_fields

# Statements to run right after a claim statement, in the same round trip where the driver
# allows (see db.run_together): the payment for what the claim took (``buckets.py``).
Then = Sequence[tuple[str, Sequence[object]]]
# Per column that has any: its index, the backend's and the field's converters, and the column
# expression they take.
Converters = list[tuple[int, list[Callable[..., Any]], Any]]


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


def claim_committed(
    worker_id: uuid.UUID, limit: int, domains: Sequence[str] | None, ahead: Ahead | None = None
) -> list[Task]:
    """PostgreSQL, outside any transaction, where ``db.pipelines()``: the ungated claim and
    ``ahead`` in one pipeline, which PostgreSQL runs as one implicit transaction committed at
    its end. One round trip, where a transaction costs BEGIN and COMMIT on top."""
    if limit <= 0:
        return []
    return _claim_returning(uuid.uuid4(), worker_id, limit, domains, ahead=ahead)


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
    sql = claim_sql(connection.vendor, len(domains or ()), by_ids=ids is not None)
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
    claimed = Task.objects.filter(id__in=ids, lease_token=token).only(*CLAIMED_FIELDS)
    rows = list(claimed.order_by("priority", "id"))
    for row in rows:
        if (
            row.expires_at is None
            and row.ttl_seconds is not None
            and row.ttl_from == "first_attempt"
            and row.started_at is not None  # (set by the UPDATE above)
        ):
            row.expires_at = row.started_at + timedelta(seconds=row.ttl_seconds)
            row.save(update_fields=["expires_at"])
    return rows


def claimed_tasks(raw_rows: Sequence[tuple[Any, ...]]) -> list[Task]:
    """Tasks from the rows a claim statement returned, in dispatch order."""
    names, converters = _row_layout(connection.vendor)
    alias = connection.alias
    if pre_init.has_listeners(Task) or post_init.has_listeners(Task):
        rows = [Task.from_db(alias, names, _convert(row, converters)) for row in raw_rows]
    else:
        rows = [_loaded(alias, names, _convert(row, converters)) for row in raw_rows]
    rows.sort(key=lambda t: (t.priority, t.id))
    return rows


def _loaded(alias: str, names: list[str], values: list[Any]) -> Task:
    """The ``Task`` that ``Task.from_db`` builds from these columns, the others deferred.

    ``from_db`` matches every field of the model against the claimed names and ``__init__``
    then walks them again, setting each and sending ``pre_init`` and ``post_init``: for a
    claim, which builds one instance per task, that was the largest Python cost per task of
    the worker. Used when nobody listens to those signals for ``Task``; a field left out is
    deferred exactly as ``from_db`` leaves it (absent from the instance's ``__dict__``)."""
    task = Task.__new__(Task)
    task.__dict__.update(zip(names, values, strict=True))
    state = task._state = ModelState()
    state.adding = False
    state.db = alias
    return task


@functools.lru_cache(maxsize=4)
def _row_layout(vendor: str) -> tuple[list[str], Converters]:
    """Attribute names and converters of the returned columns (built once per vendor)."""
    fields = claimed_fields()
    return [f.attname for f in fields], _converters(fields)


def _converters(fields: list[Field[Any, Any]]) -> Converters:
    """Backend converters (e.g. SQLite text → datetime/UUID/JSON) as the ORM would apply,
    for the columns that have any."""
    result = []
    for index, field in enumerate(fields):
        expression = field.get_col(Task._meta.db_table)
        backend = connection.ops.get_db_converters(expression)
        own = expression.get_db_converters(connection)
        if backend or own:
            result.append((index, backend + own, expression))
    return result


def _convert(row: tuple[Any, ...], converters: Converters) -> list[Any]:
    values = list(row)
    for index, funcs, expression in converters:
        value = values[index]
        for func in funcs:
            value = func(value, expression, connection)
        values[index] = value
    return values
