"""Claims under cluster-wide limits: counts are taken under one lock row, so two workers can
never both see the last free slot of a group (RELIABILITY G6). Used only when the policy has
something to enforce; otherwise ``claim.claim_batch`` takes its single-statement fast path.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import CharField, Count, F, IntegerField, Q, Sum, Value
from django.db.models.expressions import RawSQL
from django.db.models.functions import Cast, Now
from django.utils import timezone

from ..conf import app_settings
from ..enums import TaskStatus
from ..models import RateBucket, SchedulerSetting, Task, Worker
from ..policy import config
from ..policy.aging import Aging
from ..policy.config import Policy
from ..policy.fair import UNGROUPED, allocate
from ..policy.gates import Candidate, admit, saturated, without_unbindable_caps
from ..policy.io import EXEMPT_PRIORITY, EXPECTED_COLUMN
from ..policy.ratelimit import RateLimit, refill, wait_for_token
from .claim import (
    ORDER,
    Then,
    claim_from,
    claim_from_statement,
    claim_ids,
    claim_returning,
    claimed_tasks,
)
from .db import Ahead, qn, run_together

CLAIM_LOCK = "__claim_lock__"
_SHARE_MODE = {"mysql": "LOCK IN SHARE MODE"}
# A claim that runs ``Then`` statements in its round trip (the payment for what it takes).
Claim = Callable[[Then], list[Task]]
FIELDS = ("id", "domain", "group_key", "task_type")
# Per worker: whether its next gated claim takes the lock exclusively (a cap was within reach
# at its last claim), and whether its last claim gave way to take it.
_EXCLUSIVE: dict[uuid.UUID, bool] = {}
_DEFERRED: set[uuid.UUID] = set()
# Where caps or rate limits may turn candidates away, read this many per slot asked for, so
# tasks skipped by a partly-full group or an empty bucket do not leave slots empty.
OVERFETCH = 4
# Above this many rate limits, a claim takes tokens per candidate instead of checking every
# bucket up front.
MANY_BUCKETS = 16


def claim_gated(
    token: uuid.UUID,
    worker_id: uuid.UUID,
    limit: int,
    domains: Sequence[str] | None,
    policy: Policy,
    ahead: Ahead | None = None,
) -> list[Task]:
    """Claim under ``policy``, paying only for the gates that can act on this claim: caps no
    live slot can reach are dropped, aging that has nothing to promote is ignored, and what is
    left decides between one claim statement and choosing candidates row by row. ``ahead``
    rides along with the first round trip (before any savepoint: nothing here undoes it)."""
    if policy.is_paused:
        return []
    with transaction.atomic(savepoint=False):
        claimed = _claim_in_one_round_trip(token, worker_id, limit, domains, policy, ahead)
        if claimed is not None:
            return claimed
        configured, exclusive = policy, True
        if policy.has_caps:
            exclusive = _EXCLUSIVE.get(worker_id, True) or connection.vendor == "sqlite"
        load = _read_state(
            worker_id,
            limit,
            lock=exclusive if policy.has_caps else None,
            count=policy.has_caps or policy.is_fair,
            buckets=_bucket_names(policy) if connection.vendor == "postgresql" else [],
            ahead=ahead,
        )
        if policy.is_fair:
            policy.memo["slots"] = load.slots  # for the next claims' one-round-trip form
        if policy.has_caps:
            policy = without_unbindable_caps(policy, load.running, load.headroom)
            _EXCLUSIVE[worker_id] = policy.has_caps
            if policy.has_caps and not exclusive:
                # Counts read under the shared lock can miss tasks other claims have not
                # committed yet; a cap that may bind needs the exclusive lock. Give way and
                # claim again.
                _DEFERRED.add(worker_id)
                return []
        if policy.aging is not None and not _may_have_aged(policy):
            policy = replace(policy, aging=None)  # nothing has aged: plain dispatch order
        if policy.is_trivial:
            return claim_returning(token, worker_id, limit, domains)
        if replace(policy, rate_limits={}, group_rate_limits={}).is_trivial:
            claimed = _claim_with_ample_tokens(
                limit,
                policy,
                lambda then: claim_returning(token, worker_id, limit, domains, then),
                (load, token, worker_id),
            )
            if claimed is not None:
                return claimed
        return _claim_under_gates(token, worker_id, limit, domains, (configured, policy), load)


def _claim_in_one_round_trip(
    token: uuid.UUID,
    worker_id: uuid.UUID,
    limit: int,
    domains: Sequence[str] | None,
    policy: Policy,
    ahead: Ahead | None,
) -> list[Task] | None:
    """PostgreSQL, when this worker's last claim found every cap out of reach and nothing has
    aged: claim as if no cap could bind and pay the buckets for what was taken, in the same
    round trip as the lock and the load that prove no cap could, then check. None when this
    form does not apply, or when a bucket was missing or went below zero and the claim was
    undone (the usual path follows); no tasks, to be claimed again at once under the exclusive
    lock, when a cap came within reach.

    The round trip it saves is a fifth of a gated claim's time. The cap check is the one the
    usual path makes before claiming, on the same reads. The payment needs no check first: its
    UPDATE returns the balance after every payment committed before it (the row lock orders
    them), so a balance of zero or more means every task claimed had its token.
    """
    if connection.vendor != "postgresql" or (policy.has_caps and _EXCLUSIVE.get(worker_id, True)):
        return None
    if policy.aging is not None and not policy.memo.get("nothing_aged"):
        return None
    limits = _bucket_limits(policy)
    if len(limits) > MANY_BUCKETS or policy.memo.get("buckets_low"):
        return None
    if policy.is_fair and "slots" not in policy.memo:
        return None
    shares = fair_shares(policy, policy.memo["slots"]) if policy.is_fair else None
    heads = _heads_with_rooms(_plain_filters(policy, domains), shares, limit)
    if not heads:
        return None
    checks = policy.has_caps or bool(limits)
    lock = False if policy.has_caps else None  # shared: this worker found the caps far away
    count = policy.has_caps or shares is not None
    statements = [(f"SAVEPOINT {_SAVEPOINT}", [])] if checks else []
    statements += _state_statements(lock, count, [])
    statements.append(claim_from_statement(token, worker_id, heads, limit))
    statements += _payments(policy, token, worker_id)
    results = iter(run_together(statements, ahead)[1 if checks else 0 :])
    locked, load = _state_from(results, lock, count, [], (worker_id, limit))
    claimed = claimed_tasks(next(results))
    balances = {name: tokens for rows in results for name, tokens in rows}
    unbindable = _still_unbindable(policy, load)
    paid = _paid_in_full(claimed, limits, balances)
    if not (locked and unbindable and paid):
        with connection.cursor() as cursor:
            cursor.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
        if locked and not unbindable:
            # A cap came within reach: give way and claim again under the exclusive lock,
            # as the usual path does when its shared-lock count shows the same.
            _EXCLUSIVE[worker_id] = True
            _DEFERRED.add(worker_id)
            return []
        if any(tokens < 0 for tokens in balances.values()):
            # Short of tokens: tasks wait for them one by one on the usual path until the
            # policy is reloaded, instead of every claim being made twice.
            policy.memo["buckets_low"] = True
        return None  # the lock row or a bucket is missing, or a bucket ran short
    if not count:
        return claimed
    policy.memo["slots"] = load.slots
    return _noting_dry_groups(policy, shares, load.running, limit, claimed)


_SAVEPOINT = "taskmill_claim"


def _plain_filters(policy: Policy, domains: Sequence[str] | None) -> _Filters:
    """The claimable rows when no cap binds: what pauses, preemption and pressure leave."""
    return _Filters(
        domains=tuple(domains or ()),
        skip_domains=frozenset(policy.paused_domains),
        skip_groups=frozenset(policy.paused_groups),
        skip_ungrouped=False,
        preemptor_priority=policy.preemptor_priority,
        throttle_from=policy.throttle_from,
        io_saturated=policy.io_saturated,
    )


def _still_unbindable(policy: Policy, load: Load) -> bool:
    return not without_unbindable_caps(policy, load.running, load.headroom).has_caps


def _paid_in_full(
    claimed: list[Task], limits: dict[str, RateLimit], balances: dict[str, float]
) -> bool:
    """Every bucket the claimed tasks cost a token exists and was not overdrawn."""
    spent = _spent(claimed)
    return all(balances.get(name, -1.0) >= 0 for name in limits if spent[name])


def _bucket_limits(policy: Policy) -> dict[str, RateLimit]:
    limits = {config.RATE + t: lim for t, lim in policy.rate_limits.items()}
    limits |= {config.GROUP_RATE + g: lim for g, lim in policy.group_rate_limits.items()}
    return limits


def _bucket_names(policy: Policy) -> list[str]:
    """Buckets a claim may pay from without locking them first (few enough to check)."""
    names = sorted(_bucket_limits(policy))
    return names if len(names) <= MANY_BUCKETS else []


def _claim_with_ample_tokens(
    limit: int,
    policy: Policy,
    claim: Claim,
    claimer: tuple[Load, uuid.UUID, uuid.UUID],
) -> list[Task] | None:
    """Every bucket holds a token for each slot asked for, so whatever ``claim`` (which admits
    every row it takes) takes can be paid: claim in one statement and pay for what was taken.
    None when some bucket runs low (the gated path then picks task by task). ``claimer``: the
    load read at the start of the claim, the claim's lease token and the worker."""
    limits = _bucket_limits(policy)
    if len(limits) > MANY_BUCKETS:
        return None
    if connection.vendor == "postgresql":
        load, token, worker_id = claimer
        payments = _payments(policy, token, worker_id)
        claimed = _claim_then_pay(limit, limits, lambda: claim(payments), load.buckets)
        if claimed is not None:
            return claimed
    elif connection.vendor == "sqlite":
        return _claim_and_pay_one_writer(limit, limits, claim)
    stored, now = _locked_buckets(limits)
    tokens = {
        name: refill(bucket.tokens, (now - bucket.refreshed_at).total_seconds(), limits[name])
        for name, bucket in stored.items()
    }
    if min(tokens.values()) < limit:
        return None
    claimed = claim(())
    spent = _spent(claimed)
    _save_buckets({name: tokens[name] - n for name, n in spent.items() if name in tokens}, now)
    return claimed


def _claim_then_pay(
    limit: int,
    limits: dict[str, RateLimit],
    claim: Callable[[], list[Task]],
    rows: list[tuple[Any, ...]] | None,
) -> list[Task] | None:
    """PostgreSQL, buckets far from empty: claim first and pay right after (``claim`` runs the
    payments in its round trip), so a bucket row is locked only from its own UPDATE to the
    commit, not for the claim. Sound when every bucket holds twice the slots of every live
    worker: all claims that can run at once could not empty it. None (nothing done)
    otherwise. ``rows``: the buckets as read with the load at the start of this claim (read
    here when None)."""
    if rows is None:
        rows = run_together([_buckets_statement(sorted(limits))])[0]
    if len(rows) < len(limits):
        return None  # a bucket to create first: the locked path does it
    now, slots = rows[0][3], rows[0][4]
    tokens = min(refill(t, (now - at).total_seconds(), limits[name]) for name, t, at, *_ in rows)
    if tokens < max(limit, 2 * slots):
        return None
    return claim()


def _payments(policy: Policy, token: uuid.UUID, worker_id: uuid.UUID) -> Then:
    """One statement per bucket that pays for the rows the claim (``token``) just took, run
    in the claim's round trip; in bucket-name order, one lock order for every claimer."""
    buckets = [
        (config.RATE + task_type, "task_type", task_type, limit)
        for task_type, limit in policy.rate_limits.items()
    ]
    buckets += [
        (config.GROUP_RATE + group, "group_key", group, limit)
        for group, limit in policy.group_rate_limits.items()
    ]
    return [
        (_PAY_CLAIMED[column], [lim.burst, lim.rate, worker_id, token, value, name])
        for name, column, value, lim in sorted(buckets)
    ]


def _claim_and_pay_one_writer(
    limit: int, limits: dict[str, RateLimit], claim: Claim
) -> list[Task] | None:
    """SQLite has one writer at a time, and a claim's transaction is one from its first
    statement: what it reads is what it pays against. Plain statements (no ORM) keep small
    claims cheap. None when a bucket is missing or short (the gated path handles both)."""
    names = sorted(limits)
    marks = ", ".join(["%s"] * len(names))
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT name, tokens, refreshed_at FROM taskmill_rate_bucket "  # noqa: S608
            f"WHERE name IN ({marks})",
            names,
        )
        rows = cursor.fetchall()
    if len(rows) < len(limits):
        return None
    now = timezone.now()
    tokens = {
        name: refill(t, (now - _stored_time(at)).total_seconds(), limits[name])
        for name, t, at in rows
    }
    if min(tokens.values()) < limit:
        return None
    claimed = claim(())
    stamp = connection.ops.adapt_datetimefield_value(now)
    with connection.cursor() as cursor:
        for name, n in sorted(_spent(claimed).items()):
            if name in tokens:
                cursor.execute(
                    "UPDATE taskmill_rate_bucket SET tokens = %s, refreshed_at = %s "
                    "WHERE name = %s",
                    [tokens[name] - n, stamp, name],
                )
    return claimed


def _stored_time(value: Any) -> datetime:
    """A datetime column read with a plain cursor, converted as the ORM would."""
    return connection.ops.convert_datetimefield_value(value, None, connection)


# Tokens of each bucket, the database clock and the live workers' slots, read without locks.
_BUCKETS_AND_SLOTS = (
    "SELECT name, tokens, refreshed_at, STATEMENT_TIMESTAMP(), "
    "(SELECT COALESCE(SUM(concurrency), 0) FROM taskmill_worker "
    "WHERE heartbeat_at >= STATEMENT_TIMESTAMP() - %s) "
    "FROM taskmill_rate_bucket WHERE name = ANY(%s)"
)


def _buckets_statement(names: list[str]) -> tuple[str, list[Any]]:
    return _BUCKETS_AND_SLOTS, [app_settings.lease_timeout, names]


# Refill to now (capped at the burst) and spend what the claim with this lease token took of
# the bucket's type or group, in one locked row update (none when it took nothing). The
# worker's running rows are found through their partial index.
_PAY_CLAIMED = {
    column: (
        "UPDATE taskmill_rate_bucket SET tokens = LEAST(%s, tokens + GREATEST(0, EXTRACT(EPOCH "  # noqa: S608
        "FROM STATEMENT_TIMESTAMP() - refreshed_at)) * %s) - spent.n, "
        "refreshed_at = STATEMENT_TIMESTAMP() FROM (SELECT COUNT(*) AS n FROM taskmill_task "
        "WHERE worker_id = %s AND status = 'running' AND lease_token = %s "
        f"AND {column} = %s) AS spent WHERE name = %s AND spent.n > 0 RETURNING name, tokens"
    )
    for column in ("task_type", "group_key")
}


def _spent(claimed: list[Task]) -> Counter[str]:
    """Tokens the claimed tasks cost, per bucket name (configured or not)."""
    spent: Counter[str] = Counter()
    for task in claimed:
        spent[config.RATE + task.task_type] += 1
        if task.group_key is not None:
            spent[config.GROUP_RATE + task.group_key] += 1
    return spent


def take_deferred(worker_id: uuid.UUID) -> bool:
    """True once after a claim of this worker gave way to the exclusive lock (claim again at
    once instead of idling)."""
    if worker_id in _DEFERRED:
        _DEFERRED.discard(worker_id)
        return True
    return False


def _claim_under_gates(
    token: uuid.UUID,
    worker_id: uuid.UUID,
    limit: int,
    domains: Sequence[str] | None,
    policies: tuple[Policy, Policy],
    load: Load,
) -> list[Task]:
    """``policies``: as configured (fair shares divide its global cap) and without the caps
    that cannot bind (the gates to apply)."""
    configured, policy = policies
    running = load.running
    full_domains, full_groups = saturated(running, policy)
    shares = fair_shares(configured, load.slots) if policy.is_fair else None
    skip_groups = full_groups | set(policy.paused_groups)
    skip_ungrouped = False
    if shares is not None and not (policy.aging and policy.aging.urgent_threshold is not None):
        # Groups whose fair share is in use are left out in SQL, so a long backlog in one
        # group cannot fill the candidate window and hide the others.
        used = _running_by_group(running)
        spent = {g for g, share in shares.items() if used.get(g, 0) >= share}
        skip_ungrouped = UNGROUPED in spent
        skip_groups |= spent - {UNGROUPED}
    filters = _Filters(
        domains=tuple(domains or ()),
        skip_domains=frozenset(full_domains | set(policy.paused_domains)),
        skip_groups=frozenset(skip_groups),
        skip_ungrouped=skip_ungrouped,
        preemptor_priority=policy.preemptor_priority,
        throttle_from=policy.throttle_from,
        io_saturated=policy.io_saturated,
    )
    if _admits_every_row(policy) and connection.vendor in ("postgresql", "sqlite"):
        # Nothing left to decide row by row: the filters and the shares (a LIMIT per group)
        # are the whole policy, so claim in one statement (paying tokens afterwards when
        # every bucket has plenty).
        rooms = _rooms(shares, running, limit) if shares is not None else None
        heads = _heads(filters, rooms, limit)
        if not (policy.rate_limits or policy.group_rate_limits):
            claimed = claim_from(token, worker_id, heads, limit)
        else:
            claimed = _claim_with_ample_tokens(
                limit,
                policy,
                lambda then: claim_from(token, worker_id, heads, limit, then),
                (load, token, worker_id),
            )
        if claimed is not None:
            return _noting_dry_groups(configured, shares, running, limit, claimed)
    qs = filters.queryset()
    if shares is not None:
        candidates = _candidates_per_share(qs, shares, running, policy, limit)
    else:
        rejects = policy.has_caps or policy.rate_limits or policy.group_rate_limits
        fetch = limit * OVERFETCH + 16 if rejects else limit
        candidates = _candidates(qs, policy, fetch)
    # Admit everything that fits the caps, then take rate tokens until ``limit`` tasks
    # are chosen: a task without a token never holds a slot another task could use.
    # (Any subset of an admissible set is admissible, so cutting afterwards is safe.)
    chosen = admit(candidates, running, policy, len(candidates), shares)
    chosen = _take_tokens(chosen, policy, limit)
    claimed = claim_ids(token, worker_id, [c.id for c in chosen]) if chosen else []
    if len(claimed) < len(chosen):
        taken = {t.id for t in claimed}
        _refund([c for c in chosen if c.id not in taken], policy)
    return _noting_dry_groups(configured, shares, running, limit, claimed)


def _refund(missed: list[Candidate], policy: Policy) -> None:
    """Give back the tokens of chosen tasks another claim took first (candidates are read
    without locks). The buckets are still locked by this claim, so nobody spent them since."""
    owed: Counter[str] = Counter()
    for c in missed:
        owed.update(name for name, _ in _buckets_for(c, policy))
    for name, n in sorted(owed.items()):
        RateBucket.objects.filter(name=name).update(tokens=F("tokens") + n)


@functools.lru_cache(maxsize=8)
def _load_sql(vendor: str, lease_timeout: timedelta) -> tuple[str, tuple[Any, ...]]:
    """The load statement (compiled once: building two querysets per claim cost more than
    running them). Typed NULLs: each side of the UNION is a derived table (MySQL needs that),
    whose untyped NULLs PostgreSQL would take for text."""
    per_worker = (
        Task.objects.filter(status=TaskStatus.RUNNING)
        .values_list("worker_id", "domain", "group_key")
        .annotate(n=Count("id"), slots=Cast(Value(None), IntegerField()))
        .order_by()
    )
    live = (
        Worker.objects.filter(heartbeat_at__gte=Now() - lease_timeout)
        .annotate(
            none=Cast(Value(None), CharField()),
            zero=Cast(Value(0), IntegerField()),
        )
        .values_list("id", "none", "none", "zero", "concurrency")
        .order_by()
    )
    first, first_params = per_worker.query.sql_with_params()
    second, second_params = live.query.sql_with_params()
    sql = (
        f"SELECT * FROM ({first}) AS {qn('running')} "  # noqa: S608
        f"UNION ALL SELECT * FROM ({second}) AS {qn('live')}"
    )
    return sql, (*first_params, *second_params)


@dataclass(frozen=True)
class Load:
    """What the cluster runs now, read at the start of a gated claim."""

    running: list[tuple[str, str | None, int]]  # (domain, group, count) of running tasks
    headroom: int  # this claim's limit plus the free slots of every other live worker
    slots: int  # the concurrency of every live worker, this one included
    buckets: list[tuple[Any, ...]] | None = None  # PostgreSQL: rows of _BUCKETS_AND_SLOTS


def _read_state(
    worker_id: uuid.UUID,
    limit: int,
    *,
    lock: bool | None,
    count: bool,
    buckets: list[str],
    ahead: Ahead | None = None,
) -> Load:
    """Take the claim lock (``lock``: exclusive or shared; None: none), then read the load
    (when ``count``) and the rate buckets (when named), in one round trip where the driver
    allows: each read comes after the lock, so it sees every claim committed before it."""
    results = run_together(_state_statements(lock, count, buckets), ahead)
    locked, load = _state_from(iter(results), lock, count, buckets, (worker_id, limit))
    if not locked:
        # The lock row does not exist yet: create it, lock it, and read again.
        _lock(bool(lock))
        results = run_together(_state_statements(None, count, buckets))
        load = _state_from(iter(results), None, count, buckets, (worker_id, limit))[1]
    return load


def _state_statements(
    lock: bool | None, count: bool, buckets: list[str]
) -> list[tuple[str, Sequence[Any]]]:
    """The statements of ``_read_state``, in order (also the head of a one-round-trip claim)."""
    statements: list[tuple[str, Sequence[Any]]] = []
    if lock is not None and connection.vendor != "sqlite":
        statements.append(_lock_statement(lock))
    if count:
        statements.append(_load_sql(connection.vendor, app_settings.lease_timeout))
    if buckets:
        statements.append(_buckets_statement(buckets))
    return statements


def _state_from(
    results: Iterator[list[tuple[Any, ...]]],
    lock: bool | None,
    count: bool,
    buckets: list[str],
    claimer: tuple[uuid.UUID, int],
) -> tuple[bool, Load]:
    """Whether the lock row was found (True when none was asked for) and the load, taken
    from the results of ``_state_statements`` (consumed from ``results``)."""
    worker_id, limit = claimer
    locked = bool(next(results)) if lock is not None and connection.vendor != "sqlite" else True
    load = _load_from(next(results), worker_id, limit) if count else Load([], limit, 0)
    if buckets:
        load = replace(load, buckets=next(results))
    return locked, load


def _load_from(rows: list[tuple[Any, ...]], worker_id: uuid.UUID, limit: int) -> Load:
    """Running tasks per worker, domain and group, and every live worker's pool size, from
    the rows of the load statement (a UNION of both reads)."""
    running: Counter[tuple[str, str | None]] = Counter()
    busy: Counter[str] = Counter()
    slots: dict[str, int] = {}
    for worker, domain, group, count, concurrency in rows:
        key = uuid.UUID(str(worker)).hex if worker is not None else ""
        if concurrency is None:  # (MySQL types the UNION's numbers as decimals)
            running[(domain, group)] += int(count)
            busy[key] += int(count)
        else:
            slots[key] = int(concurrency)
    others = sum(max(0, n - busy[w]) for w, n in slots.items() if w != worker_id.hex)
    return Load([(d, g, n) for (d, g), n in running.items()], limit + others, sum(slots.values()))


def _admits_every_row(policy: Policy) -> bool:
    """No cap or aged order would turn away a due row that the SQL filters let in (buckets
    are checked for plenty separately)."""
    return not (policy.has_caps or policy.aging)


@dataclass(frozen=True)
class _Filters:
    """Which pending rows a gated claim may take, before caps and shares decide among them.
    Hashable, so the SQL compiled for one set of filters is reused by later claims."""

    domains: tuple[str, ...]
    skip_domains: frozenset[str]
    skip_groups: frozenset[str]
    skip_ungrouped: bool
    preemptor_priority: int | None
    throttle_from: int | None
    io_saturated: frozenset[str]

    def queryset(self, *, one_group: bool = False) -> Any:
        """``one_group``: "pending" stated as a one-value range (the same rows) for the head
        of one group on PostgreSQL (see ``_group_head``)."""
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
        if self.io_saturated:
            qs = qs.exclude(io_bound(self.io_saturated))
        return qs


@functools.lru_cache(maxsize=256)
def _compiled(
    vendor: str, filters: _Filters, *, one_group: bool = False
) -> tuple[str, tuple[Any, ...]]:
    """``SELECT id, priority`` of the claimable rows, compiled once per set of filters
    (building and compiling the queryset cost more than the claim statement it feeds);
    ``one_group``: for the head of one group (see ``_group_head``)."""
    qs = filters.queryset(one_group=one_group)
    return qs.values_list("id", "priority").order_by().query.sql_with_params()


def _group_head(vendor: str, filters: _Filters) -> tuple[str, tuple[Any, ...], str]:
    """The claimable rows of one group (the caller adds the group's condition) and their
    dispatch order. On PostgreSQL the planner, taking a group's rows to be spread evenly
    through the queue, may read them from the pending-only dispatch index and filter out
    every other group's rows on the way; when one group's rows sit far behind (it drains
    faster, its weight being higher), that read passed thousands of rows on every claim.
    Stating "pending" as a range keeps that index out of reach, and ordering by the status
    first (a single value) lets the group's own index (group, status, priority, id) deliver
    the rows in order: a head reads only its group's rows."""
    if vendor != "postgresql":
        return (*_compiled(vendor, filters), ORDER)
    return (*_compiled(vendor, filters, one_group=True), f"{qn('status')}, {ORDER}")


def _heads(
    filters: _Filters,
    rooms: list[tuple[str, int]] | None,
    limit: int,
) -> list[tuple[str, list[Any]]]:
    """Locked heads to claim from, as SQL: the queue's, or (with fair shares) each group's up
    to its room. Each group adds one condition to the compiled filters."""
    vendor = connection.vendor
    base, params = _compiled(vendor, filters)
    lock = " FOR UPDATE SKIP LOCKED" if vendor == "postgresql" else ""
    if rooms is None:
        return [(f"{base} ORDER BY {ORDER} LIMIT %s{lock}", [*params, limit])]
    one, one_params, order = _group_head(vendor, filters)
    parts = []
    for group, room in rooms:
        if group == UNGROUPED:
            head = f"{base} AND {qn('group_key')} IS NULL ORDER BY {ORDER} LIMIT %s{lock}"
            parts.append((head, [*params, room]))
        else:
            head = f"{one} AND {qn('group_key')} = %s ORDER BY {order} LIMIT %s{lock}"
            parts.append((head, [*one_params, group, room]))
    return parts


def _heads_with_rooms(
    filters: _Filters, shares: dict[str, int] | None, limit: int
) -> list[tuple[str, list[Any]]]:
    """Like ``_heads``, but each group's room (its share less its running tasks, at most
    ``limit``) is counted by the statement itself, so no load needs reading first. PostgreSQL:
    one LATERAL head over a VALUES list of the groups plans in a third of the time of one
    head per group."""
    if shares is None:
        return _heads(filters, None, limit)
    vendor = connection.vendor
    table, group = qn(Task._meta.db_table), qn("group_key")
    running = f"(SELECT COUNT(*) FROM {table} AS x WHERE x.{qn('status')} = 'running' AND x.{group}"  # noqa: S608
    tail = f"LIMIT GREATEST(0, LEAST(%s, {{share}} - {running} {{same}}))) FOR UPDATE SKIP LOCKED"
    named = [(g, share) for g, share in sorted(shares.items()) if share > 0 and g != UNGROUPED]
    parts = []
    if named:
        one, one_params, order = _group_head(vendor, filters)
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
        base, params = _compiled(vendor, filters)
        ungrouped = tail.format(share="%s", same="IS NULL")
        parts.append(
            (
                f"{base} AND {group} IS NULL ORDER BY {ORDER} {ungrouped}",
                [*params, limit, shares[UNGROUPED]],
            )
        )
    return parts


def _rooms(shares: dict[str, int], running: list[Any], limit: int) -> list[tuple[str, int]]:
    """Each group with an unused share, and how many more it may start (never more than the
    claim can take)."""
    used = _running_by_group(running)
    rooms = [(g, min(share - used.get(g, 0), limit)) for g, share in shares.items()]
    return [(g, room) for g, room in rooms if room > 0]


# Demand is recounted at most this often (seconds) when groups run dry between policy loads.
RECOUNT_INTERVAL = 0.2


def _noting_dry_groups(
    policy: Policy,
    shares: dict[str, int] | None,
    running: list[Any],
    limit: int,
    claimed: list[Task],
) -> list[Task]:
    """Return ``claimed``, after checking it for groups that ran dry.

    A group that had room but yielded less than it while the claim took less than it asked
    has run out of due work (or its rows are being claimed by another worker): its share,
    computed from demand counted up to a second ago, is then held for work that is gone. The
    counted demand is dropped so the next claim hands that share to the groups that still
    have work.
    """
    if shares is None or len(claimed) >= limit:
        return claimed
    got = Counter(t.group_key or UNGROUPED for t in claimed)
    if any(got[group] < room for group, room in _rooms(shares, running, limit)):
        if time.monotonic() - policy.memo.get("demand_at", 0.0) >= RECOUNT_INTERVAL:
            policy.memo.pop("demand", None)
    return claimed


def _of_group(qs: Any, group: str) -> Any:
    return qs.filter(group_key__isnull=True) if group == UNGROUPED else qs.filter(group_key=group)


def _candidates_per_share(
    qs: Any,
    shares: dict[str, int],
    running: list[Any],
    policy: Policy,
    limit: int,
) -> list[Candidate]:
    """With fair shares, read each group's head separately (up to its unused share, and never
    more than the claim can take), so a long backlog in one group cannot fill the window and
    hide the others; urgent tasks (aged to the urgent threshold) are read from every group.
    One statement for all groups, merged in dispatch order."""
    parts = []
    threshold = policy.aging.urgent_threshold if policy.aging else None
    if threshold is not None:
        parts += _candidate_queries(qs, policy, limit)
    for group, room in _rooms(shares, running, limit):
        parts += _candidate_queries(_of_group(qs, group), policy, room)
    # Non-urgent rows of the urgent read are held to their group's share by admit().
    return _fetch(parts)


def _candidates(qs: Any, policy: Policy, count: int) -> list[Candidate]:
    """The first ``count`` rows of ``qs`` in dispatch order (by effective priority with aging;
    ``Candidate.priority`` holds the effective one then)."""
    return _fetch(_candidate_queries(qs, policy, count))[:count]


def _candidate_queries(qs: Any, policy: Policy, count: int) -> list[Any]:
    """Queries whose rows, merged, hold the first ``count`` of ``qs`` in dispatch order."""
    if policy.aging is None:
        return [qs.in_dispatch_order().values_list(*FIELDS, "priority")[:count]]
    # Only rows waiting longer than grace + interval have aged by a step, and every other row's
    # effective priority is its priority: so the head in plain (priority, id) order, walked on
    # the dispatch index, plus the aged rows' head, hold the first ``count`` by effective
    # priority.
    aging = policy.aging
    parts = [_annotated(qs, aging).in_dispatch_order()]
    if _may_have_aged(policy):
        aged = qs.filter(created_at__lte=_aged_before(aging))
        parts.append(_annotated(aged, aging).order_by("effective", "id"))
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


def _may_have_aged(policy: Policy) -> bool:
    """False when no due row had waited long enough to age as this policy was loaded: aging
    moves in steps of ``interval``, so a promotion noticed up to a second late changes
    nothing, while looking on every claim would scan the whole queue each time. (Then every
    effective priority is the priority, and the claim keeps its one-statement form.)"""
    assert policy.aging is not None  # noqa: S101 - only asked with aging on
    if policy.memo.get("nothing_aged"):
        return False
    if Task.objects.claimable().filter(created_at__lte=_aged_before(policy.aging)).exists():
        return True
    policy.memo["nothing_aged"] = True
    return False


def _aged_before(aging: Aging) -> Any:
    """Rows created before this have waited grace + one interval: aged by a step at least."""
    return Now() - timedelta(seconds=aging.grace_period + aging.interval)


def _annotated(qs: Any, aging: Aging) -> Any:
    # Constant SQL text; the aging numbers travel as bound parameters.
    return qs.annotate(effective=RawSQL(*aging_sql(aging)))  # noqa: S611


def _running_by_group(running: list[tuple[str, str | None, int]]) -> dict[str, int]:
    used: dict[str, int] = {}
    for _domain, group, count in running:
        used[group or UNGROUPED] = used.get(group or UNGROUPED, 0) + count
    return used


def fair_shares(policy: Policy, live_slots: int | None = None) -> dict[str, int]:
    """Slots per group for this moment (ungrouped work is the virtual group ""). Demand is
    due or running work outside paused groups and domains, capped by each group's limit.
    Capacity is the live workers' slots (``live_slots`` when the caller has just read them),
    or the global cap when that is lower or no worker is live."""
    demand = policy.memo.get("demand")
    if demand is None:
        # Counting the whole queue on every claim would cost more than the claim; demand read
        # once per policy load (at least every second) shifts shares a second late at worst.
        policy.memo["demand_at"] = time.monotonic()
        demand = policy.memo["demand"] = {
            (g or UNGROUPED): min(n, policy.group_cap(g) or n)
            for g, n in (Task.objects.claimable() | Task.objects.running())
            .exclude(group_key__in=list(policy.paused_groups))
            .exclude(domain__in=list(policy.paused_domains))
            .values_list("group_key")
            .annotate(n=Count("id"))
            .order_by()
        }
    slots = live_slots if live_slots is not None else _live_slots()
    capacity = policy.max_concurrency
    if capacity is None or 0 < slots < capacity:
        capacity = slots  # shares of slots no worker has would leave the weights unused
    return allocate(
        capacity,
        demand,
        policy.group_weights,
        policy.group_minimum_slots,
        policy.default_group_weight,
    )


def _live_slots() -> int:
    live = Worker.objects.filter(heartbeat_at__gte=Now() - app_settings.lease_timeout)
    return live.aggregate(n=Sum("concurrency"))["n"] or 0


def io_bound(directions: frozenset[str]) -> Q:
    """Tasks an IO budget holds back: below HIGH priority, with expected bytes in a
    saturated direction."""
    uses = Q()
    for direction in sorted(directions):
        uses |= Q(**{f"{EXPECTED_COLUMN[direction]}__gt": 0})
    return Q(priority__gt=EXEMPT_PRIORITY) & uses


def aging_sql(aging: Aging) -> tuple[str, list[object]]:
    """Effective priority as SQL: priority improved by time waited minus time paused."""
    if connection.vendor == "postgresql":
        waited = "EXTRACT(EPOCH FROM (STATEMENT_TIMESTAMP() - created_at))"
        floor, greatest, least = "FLOOR", "GREATEST", "LEAST"
    elif connection.vendor == "sqlite":
        waited = "((julianday('now') - julianday(created_at)) * 86400.0)"
        floor, greatest, least = "CAST", "MAX", "MIN"
    else:
        waited = "(TIMESTAMPDIFF(MICROSECOND, created_at, UTC_TIMESTAMP(6)) / 1000000.0)"
        floor, greatest, least = "FLOOR", "GREATEST", "LEAST"
    steps = f"{greatest}(0, {waited} - paused_seconds - %s) / %s"
    steps = f"CAST({steps} AS INTEGER)" if floor == "CAST" else f"FLOOR({steps})"
    sql = f"{greatest}({least}(%s, priority), priority - %s * {steps})"
    return sql, [aging.ceiling, aging.step, aging.grace_period, aging.interval]


def _lock(exclusive: bool) -> None:
    """Hold the claim lock row until commit: exclusively to count running tasks against caps
    (one such claimer at a time, cluster-wide), shared otherwise (claims side by side, but
    never while an exclusive claimer counts). SQLite serialises writers anyway."""
    if connection.vendor == "sqlite":
        return
    if not _lock_row(exclusive):
        try:
            with transaction.atomic():
                SchedulerSetting.objects.create(name=CLAIM_LOCK, value=None)
        except IntegrityError:
            pass
        _lock_row(exclusive)


def _lock_row(exclusive: bool) -> bool:
    sql, params = _lock_statement(exclusive)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone() is not None


def _lock_statement(exclusive: bool) -> tuple[str, list[Any]]:
    table = qn(SchedulerSetting._meta.db_table)
    mode = "FOR UPDATE" if exclusive else _SHARE_MODE.get(connection.vendor, "FOR SHARE")
    return f"SELECT 1 FROM {table} WHERE {qn('name')} = %s {mode}", [CLAIM_LOCK]  # noqa: S608


def _db_now() -> datetime:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT STATEMENT_TIMESTAMP()")
            return cursor.fetchone()[0]
    return timezone.now()


def _clock(db_now: datetime) -> datetime:
    """The database clock on PostgreSQL (shared by every machine), else this machine's."""
    return db_now if connection.vendor == "postgresql" else timezone.now()


def _buckets_for(c: Candidate, policy: Policy) -> list[tuple[str, RateLimit]]:
    found = []
    if c.task_type in policy.rate_limits:
        found.append((config.RATE + c.task_type, policy.rate_limits[c.task_type]))
    if c.group_key is not None and c.group_key in policy.group_rate_limits:
        found.append((config.GROUP_RATE + c.group_key, policy.group_rate_limits[c.group_key]))
    return found


def _take_tokens(chosen: list[Candidate], policy: Policy, slots: int) -> list[Candidate]:
    """Take one token per rate limit for admitted tasks, in order, until ``slots`` are allowed:
    the last of all gates. A task that finds a bucket empty is not blocked in place: its
    run_after moves to the next token."""
    if not (policy.rate_limits or policy.group_rate_limits):
        return chosen[:slots]
    wanted = {c.id: _buckets_for(c, policy) for c in chosen}
    if not any(wanted.values()):
        return chosen[:slots]
    limits = {name: limit for pairs in wanted.values() for name, limit in pairs}
    stored, now = _locked_buckets(limits)
    tokens = {
        name: refill(bucket.tokens, (now - bucket.refreshed_at).total_seconds(), limits[name])
        for name, bucket in stored.items()
    }
    allowed, delays = [], {}
    for c in chosen:
        if len(allowed) >= slots:
            break
        pairs = wanted[c.id]
        if all(tokens[name] >= 1.0 for name, _ in pairs):
            for name, _ in pairs:
                tokens[name] -= 1.0
            allowed.append(c)
        else:
            delays[c.id] = max(wait_for_token(tokens[n], lim) for n, lim in pairs)
    _save_buckets(tokens, now)
    _delay(delays, now)
    return allowed


def _delay(delays: dict[int, float], now: datetime) -> None:
    """Push the run_after of tasks that found a bucket empty by their wait for a token.

    Rows another claim has locked are left alone: it is claiming them. Waiting for them here,
    with the buckets locked, could deadlock with a claim that pays after claiming (it holds
    its rows and waits for a bucket)."""
    if not delays:
        return
    free = Task.objects.filter(id__in=list(delays), status=TaskStatus.PENDING)
    ids = list(free.select_for_update(skip_locked=True).values_list("id", flat=True))
    by_delay: dict[float, list[int]] = {}
    for task_id in ids:
        by_delay.setdefault(delays[task_id], []).append(task_id)
    for delay, same in by_delay.items():
        Task.objects.filter(id__in=same).update(run_after=now + timedelta(seconds=delay))


def _locked_buckets(limits: dict[str, RateLimit]) -> tuple[dict[str, RateBucket], datetime]:
    """The buckets, locked until commit (claims under the shared lock run side by side, and
    two of them must never spend the same token), with the database clock. A bucket used for
    the first time is created full."""
    if connection.vendor == "mysql":
        _create_missing_buckets(limits)
    # In name order, as every claim pays (one lock order for every claimer).
    locked = RateBucket.objects.filter(name__in=list(limits)).order_by("name").select_for_update()
    rows = list(locked.annotate(db_now=Now()))
    missing = set(limits) - {b.name for b in rows}
    if missing:
        now = _db_now()
        new = [RateBucket(name=n, tokens=limits[n].burst, refreshed_at=now) for n in missing]
        RateBucket.objects.bulk_create(new, ignore_conflicts=True)
        rows = list(locked.annotate(db_now=Now()))
    return {b.name: b for b in rows}, _clock(rows[0].db_now)


def _create_missing_buckets(limits: dict[str, RateLimit]) -> None:
    """MySQL: a locking read of a missing row takes a gap lock, and claimers inserting into
    gaps they all locked deadlock. Create missing buckets before locking, with an upsert whose
    duplicate path takes the row's exclusive lock at once (INSERT IGNORE takes a shared one,
    and two claimers upgrading shared locks deadlock too)."""
    names = list(limits)
    present = set(RateBucket.objects.filter(name__in=names).values_list("name", flat=True))
    missing = sorted(set(names) - present)
    if not missing:
        return
    stamp = connection.ops.adapt_datetimefield_value(timezone.now())
    values = ", ".join(["(%s, %s, %s)"] * len(missing))
    params = [value for name in missing for value in (name, limits[name].burst, stamp)]
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO taskmill_rate_bucket (name, tokens, refreshed_at) "  # noqa: S608
            f"VALUES {values} ON DUPLICATE KEY UPDATE name = name",
            params,
        )


def _save_buckets(tokens: dict[str, float], now: datetime) -> None:
    for name, value in tokens.items():
        RateBucket.objects.filter(name=name).update(tokens=value, refreshed_at=now)
