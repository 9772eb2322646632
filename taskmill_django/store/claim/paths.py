"""Which claim form: move pending rows to running under a fresh lease, in one short
transaction, paying only for the gates that can act on this claim.

``claim_batch`` takes the single-statement fast path when the policy has nothing to enforce.
Otherwise ``claim_gated`` decides, cheapest first: the one-round-trip form (PostgreSQL, no cap
within reach at this worker's last claim, nothing aged), then, after the lock and the load,
one claim statement (nothing to decide row by row, tokens ample or no rate limits), else
candidates chosen row by row against caps, shares and buckets.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from django.db import connection, transaction

from ...models import Task
from ...policy.config import Policy
from ...policy.fair import UNGROUPED
from ...policy.gates import admit, saturated, without_unbindable_caps
from ..db import Ahead, preparable, run_together
from . import buckets
from .buckets import Claim
from .candidates import OVERFETCH, candidates, candidates_per_share, may_have_aged
from .load import Load, read_state, state_from, state_statements
from .rows import claim_from, claim_ids, claim_returning, claimed_tasks
from .shares import current_shares, noting_dry_groups, rooms, running_by_group
from .sql import Filters, claim_from_statement, heads, heads_with_rooms, plain_filters
from .state import ClaimState

_SAVEPOINT = "taskmill_claim"
# Sent with the statements of a one-round-trip claim (a pipeline of prepared statements).
_TAKE_SAVEPOINT = preparable(f"SAVEPOINT {_SAVEPOINT}", prepare=False)


def claim_batch(
    worker_id: uuid.UUID,
    limit: int,
    domains: Sequence[str] | None = None,
    policy: Policy | None = None,
    ahead: Ahead | None = None,
    state: ClaimState | None = None,
) -> list[Task]:
    """Claim up to ``limit`` due tasks in priority-then-FIFO order for ``worker_id``.

    ``SKIP LOCKED`` lets many workers claim side by side without waiting on each other's rows;
    on SQLite, IMMEDIATE transactions serialise writers instead. One lease token per batch
    fences every later write of this claim. PostgreSQL and SQLite claim with one
    ``UPDATE ... RETURNING`` statement; other databases use three ORM queries. ``ahead``
    (see ``db.run_together``) rides along with the claim's first round trip, if it has one.
    ``state``: what this worker's earlier claims learnt (the claim loop keeps one); without
    it, a gated claim starts from nothing.
    """
    if limit <= 0:
        return []
    token = uuid.uuid4()
    if policy is not None and not policy.is_trivial:
        return claim_gated(token, worker_id, limit, domains, policy, state or ClaimState(), ahead)
    return claim_returning(token, worker_id, limit, domains, ahead=ahead)


# --- the gated claim -------------------------------------------------------------------------


def claim_gated(
    token: uuid.UUID,
    worker_id: uuid.UUID,
    limit: int,
    domains: Sequence[str] | None,
    policy: Policy,
    state: ClaimState,
    ahead: Ahead | None = None,
) -> list[Task]:
    """Claim under ``policy``, paying only for the gates that can act on this claim: caps no
    live slot can reach are dropped, aging that has nothing to promote is ignored, and what is
    left decides between one claim statement and choosing candidates row by row. ``ahead``
    rides along with the first round trip (before any savepoint: nothing here undoes it)."""
    if policy.is_paused:
        return []
    memo = state.memo(policy)
    with transaction.atomic(savepoint=False):
        claimed = _claim_in_one_round_trip(token, worker_id, limit, domains, policy, state, ahead)
        if claimed is not None:
            return claimed
        configured, exclusive = policy, True
        if policy.has_caps:
            exclusive = state.exclusive or connection.vendor == "sqlite"
        load = read_state(
            worker_id,
            limit,
            lock=exclusive if policy.has_caps else None,
            count=policy.has_caps or policy.is_fair,
            buckets=buckets.bucket_names(policy) if connection.vendor == "postgresql" else [],
            ahead=ahead,
        )
        if policy.is_fair:
            memo.live_slots = load.slots  # for the next claims' one-round-trip form
        if policy.has_caps:
            policy = without_unbindable_caps(policy, load.running, load.headroom)
            state.exclusive = policy.has_caps
            if policy.has_caps and not exclusive:
                # Counts read under the shared lock can miss tasks other claims have not
                # committed yet; a cap that may bind needs the exclusive lock. Give way and
                # claim again.
                state.give_way()
                return []
        if policy.aging is not None and not may_have_aged(policy, memo):
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
        return _claim_under_gates(
            token, worker_id, limit, domains, (configured, policy), load, state
        )


def _claim_in_one_round_trip(
    token: uuid.UUID,
    worker_id: uuid.UUID,
    limit: int,
    domains: Sequence[str] | None,
    policy: Policy,
    state: ClaimState,
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
    if connection.vendor != "postgresql" or (policy.has_caps and state.exclusive):
        return None
    memo = state.memo(policy)
    if policy.aging is not None and not memo.nothing_aged:
        return None
    limits = buckets.bucket_limits(policy)
    if len(limits) > buckets.MANY_BUCKETS or memo.buckets_low:
        return None
    shares = None
    if policy.is_fair:
        if memo.live_slots is None:
            return None
        shares = current_shares(policy, memo.live_slots, memo, state.held_per_slot)
    parts = heads_with_rooms(plain_filters(policy, domains), shares, limit)
    if not parts:
        return None
    checks = policy.has_caps or bool(limits)
    lock = False if policy.has_caps else None  # shared: this worker found the caps far away
    count = policy.has_caps or shares is not None
    statements: list[tuple[str, Sequence[Any]]] = []
    if checks:
        statements.append((_TAKE_SAVEPOINT, []))
    statements += state_statements(lock, count, [])
    statements.append(claim_from_statement(token, worker_id, parts, limit))
    statements += buckets.payments(policy, token, worker_id)
    results = iter(run_together(statements, ahead)[1 if checks else 0 :])
    locked, load = state_from(results, lock, count, [], (worker_id, limit))
    claimed = claimed_tasks(next(results))
    balances = {name: tokens for rows in results for name, tokens in rows}
    unbindable = _still_unbindable(policy, load)
    paid = buckets.paid_in_full(claimed, limits, balances)
    if not (locked and unbindable and paid):
        with connection.cursor() as cursor:
            cursor.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
        if locked and not unbindable:
            # A cap came within reach: give way and claim again under the exclusive lock,
            # as the usual path does when its shared-lock count shows the same.
            state.give_way()
            return []
        if any(tokens < 0 for tokens in balances.values()):
            # Short of tokens: tasks wait for them one by one on the usual path until the
            # policy is reloaded, instead of every claim being made twice.
            memo.buckets_low = True
        return None  # the lock row or a bucket is missing, or a bucket ran short
    if not count:
        return claimed
    memo.live_slots = load.slots
    return noting_dry_groups(memo, shares, load.running, limit, claimed)


def _still_unbindable(policy: Policy, load: Load) -> bool:
    return not without_unbindable_caps(policy, load.running, load.headroom).has_caps


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
    limits = buckets.bucket_limits(policy)
    if len(limits) > buckets.MANY_BUCKETS:
        return None
    if connection.vendor == "postgresql":
        load, token, worker_id = claimer
        payments = buckets.payments(policy, token, worker_id)
        claimed = buckets.claim_then_pay(limit, limits, lambda: claim(payments), load.buckets)
        if claimed is not None:
            return claimed
    elif connection.vendor == "sqlite":
        return buckets.claim_and_pay_one_writer(limit, limits, claim)
    return buckets.claim_and_pay_locked(limit, limits, claim)


def _claim_under_gates(
    token: uuid.UUID,
    worker_id: uuid.UUID,
    limit: int,
    domains: Sequence[str] | None,
    policies: tuple[Policy, Policy],
    load: Load,
    state: ClaimState,
) -> list[Task]:
    """``policies``: as configured (fair shares divide its global cap) and without the caps
    that cannot bind (the gates to apply); ``state``: the worker's, whose memo holds the
    answers found under the first."""
    configured, policy = policies
    memo = state.memo(configured)
    running = load.running
    full_domains, full_groups = saturated(running, policy)
    shares = None
    if policy.is_fair:
        shares = current_shares(configured, load.slots, memo, state.held_per_slot)
    skip_groups = full_groups | set(policy.paused_groups)
    skip_ungrouped = False
    if shares is not None and not (policy.aging and policy.aging.urgent_threshold is not None):
        # Groups whose fair share is in use are left out in SQL, so a long backlog in one
        # group cannot fill the candidate window and hide the others.
        used = running_by_group(running)
        spent = {g for g, share in shares.items() if used.get(g, 0) >= share}
        skip_ungrouped = UNGROUPED in spent
        skip_groups |= spent - {UNGROUPED}
    filters = Filters(
        domains=tuple(domains or ()),
        skip_domains=frozenset(full_domains | set(policy.paused_domains)),
        skip_groups=frozenset(skip_groups),
        skip_ungrouped=skip_ungrouped,
        preemptor_priority=policy.preemptor_priority,
        throttle_from=policy.throttle_from,
        io_budget=policy.io_budget,
    )
    if _admits_every_row(policy) and connection.vendor in ("postgresql", "sqlite"):
        # Nothing left to decide row by row: the filters and the shares (a LIMIT per group)
        # are the whole policy, so claim in one statement (paying tokens afterwards when
        # every bucket has plenty).
        parts = heads(filters, rooms(shares, running, limit) if shares is not None else None, limit)
        claimed: list[Task] | None
        if not (policy.rate_limits or policy.group_rate_limits):
            claimed = claim_from(token, worker_id, parts, limit)
        else:
            claimed = _claim_with_ample_tokens(
                limit,
                policy,
                lambda then: claim_from(token, worker_id, parts, limit, then),
                (load, token, worker_id),
            )
        if claimed is not None:
            return noting_dry_groups(memo, shares, running, limit, claimed)
    qs = filters.queryset()
    if shares is not None:
        found = candidates_per_share(qs, shares, running, policy, limit, memo)
    else:
        rejects = policy.has_caps or policy.rate_limits or policy.group_rate_limits
        fetch = limit * OVERFETCH + 16 if rejects else limit
        found = candidates(qs, policy, fetch, memo)
    # Admit everything that fits the caps, then take rate tokens until ``limit`` tasks
    # are chosen: a task without a token never holds a slot another task could use.
    # (Any subset of an admissible set is admissible, so cutting afterwards is safe.)
    chosen = admit(found, running, policy, len(found), shares)
    chosen = buckets.take_tokens(chosen, policy, limit)
    claimed = claim_ids(token, worker_id, [c.id for c in chosen]) if chosen else []
    if len(claimed) < len(chosen):
        taken = {t.id for t in claimed}
        buckets.refund([c for c in chosen if c.id not in taken], policy)
    return noting_dry_groups(memo, shares, running, limit, claimed)


def _admits_every_row(policy: Policy) -> bool:
    """No cap or aged order would turn away a due row that the SQL filters let in (buckets
    are checked for plenty separately)."""
    return not (policy.has_caps or policy.aging)
