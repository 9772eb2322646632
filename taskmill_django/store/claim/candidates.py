"""Candidates of the row-by-row claim: the first rows in dispatch (or aged) order, read
without locks, for ``policy.gates.admit`` to choose among.

Candidate queries of one claim run as one statement (a UNION ALL of derived tables, which
every supported database accepts with ORDER BY/LIMIT inside), merged in dispatch order.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import connection
from django.db.models.expressions import CombinedExpression, RawSQL
from django.db.models.functions import Now

from ...models import Task
from ...models.task import TaskQuerySet
from ...policy.aging import Aging, aging_sql
from ...policy.config import Policy
from ...policy.fair import UNGROUPED
from ...policy.gates import Candidate
from ..db import qn
from .shares import rooms
from .state import PolicyMemo

FIELDS = ("id", "domain", "group_key", "task_type")
# Where caps or rate limits may turn candidates away, read this many per slot asked for, so
# tasks skipped by a partly-full group or an empty bucket do not leave slots empty.
OVERFETCH = 4


def candidates(qs: TaskQuerySet, policy: Policy, count: int, memo: PolicyMemo) -> list[Candidate]:
    """The first ``count`` rows of ``qs`` in dispatch order (by effective priority with aging;
    ``Candidate.priority`` holds the effective one then)."""
    return _fetch(_candidate_queries(qs, policy, count, memo))[:count]


def candidates_per_share(
    qs: TaskQuerySet,
    shares: dict[str, int],
    running: list[Any],
    policy: Policy,
    limit: int,
    memo: PolicyMemo,
) -> list[Candidate]:
    """With fair shares, read each group's head separately (up to its unused share, and never
    more than the claim can take), so a long backlog in one group cannot fill the window and
    hide the others; urgent tasks (aged to the urgent threshold) are read from every group.
    One statement for all groups, merged in dispatch order."""
    parts = []
    threshold = policy.aging.urgent_threshold if policy.aging else None
    if threshold is not None:
        parts += _candidate_queries(qs, policy, limit, memo)
    for group, room in rooms(shares, running, limit):
        parts += _candidate_queries(_of_group(qs, group), policy, room, memo)
    # Non-urgent rows of the urgent read are held to their group's share by admit().
    return _fetch(parts)


def _of_group(qs: TaskQuerySet, group: str) -> TaskQuerySet:
    return qs.filter(group_key__isnull=True) if group == UNGROUPED else qs.filter(group_key=group)


def _candidate_queries(qs: TaskQuerySet, policy: Policy, count: int, memo: PolicyMemo) -> list[Any]:
    """Queries whose rows, merged, hold the first ``count`` of ``qs`` in dispatch order."""
    if policy.aging is None:
        return [qs.in_dispatch_order().values_list(*FIELDS, "priority")[:count]]
    # Only rows waiting longer than grace + interval have aged by a step, and every other row's
    # effective priority is its priority: so the head in plain (priority, id) order, walked on
    # the dispatch index, plus the aged rows' head, hold the first ``count`` by effective
    # priority.
    # Constant SQL text; the aging numbers travel as bound parameters.
    effective = aging_sql(policy.aging, connection.vendor)
    parts = [qs.annotate(effective=RawSQL(*effective)).in_dispatch_order()]  # noqa: S611
    if may_have_aged(policy, memo):
        aged = qs.filter(created_at__lte=_aged_before(policy.aging))
        parts.append(aged.annotate(effective=RawSQL(*effective)).order_by("effective", "id"))  # noqa: S611
    return [part.values_list(*FIELDS, "effective")[:count] for part in parts]


def _fetch(parts: list[Any]) -> list[Candidate]:
    """Run the candidate queries as one statement (UNION ALL of derived tables, which every
    supported database accepts with ORDER BY/LIMIT inside); unique rows in dispatch order."""
    if not parts:
        return []
    if len(parts) == 1:
        rows = list(parts[0])
    else:
        sql, params = [], []
        for index, part in enumerate(parts):
            text, values = part.query.sql_with_params()
            sql.append(f"SELECT * FROM ({text}) AS {qn(f'part{index}')}")  # noqa: S608
            params.extend(values)
        with connection.cursor() as cursor:
            cursor.execute(" UNION ALL ".join(sql), params)
            rows = cursor.fetchall()
    unique = {row[0]: Candidate(*row) for row in rows}
    return sorted(unique.values(), key=lambda c: (c.priority, c.id))


def may_have_aged(policy: Policy, memo: PolicyMemo) -> bool:
    """False when no due row had waited long enough to age as this policy was loaded: aging
    moves in steps of ``interval``, so a promotion noticed up to a second late changes
    nothing, while looking on every claim would scan the whole queue each time. (Then every
    effective priority is the priority, and the claim keeps its one-statement form.)"""
    assert policy.aging is not None  # noqa: S101 - only asked with aging on
    if memo.nothing_aged:
        return False
    if Task.objects.claimable().filter(created_at__lte=_aged_before(policy.aging)).exists():
        return True
    memo.nothing_aged = True
    return False


def _aged_before(aging: Aging) -> CombinedExpression:
    """Rows created before this have waited grace + one interval: aged by a step at least."""
    return Now() - timedelta(seconds=aging.grace_period + aging.interval)
