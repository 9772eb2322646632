"""Claims under cluster-wide limits: counts are taken under one lock row, so two workers can
never both see the last free slot of a group (RELIABILITY G6). Used only when the policy has
something to enforce; otherwise ``claim.claim_batch`` takes its single-statement fast path.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import Count, Q, Sum
from django.db.models.expressions import RawSQL
from django.db.models.functions import Now
from django.utils import timezone

from ..conf import app_settings
from ..enums import TaskStatus
from ..models import RateBucket, SchedulerSetting, Task, Worker
from ..policy import config
from ..policy.aging import Aging
from ..policy.config import Policy
from ..policy.fair import UNGROUPED, allocate
from ..policy.gates import Candidate, admit, saturated
from ..policy.io import EXEMPT_PRIORITY, EXPECTED_COLUMN
from ..policy.ratelimit import RateLimit, refill, wait_for_token
from .claim import claim_ids

CLAIM_LOCK = "__claim_lock__"
# Read this many candidates per slot asked for, so tasks skipped by a partly-full group or a
# rate limit do not leave slots empty.
OVERFETCH = 4


def claim_gated(
    token: uuid.UUID,
    worker_id: uuid.UUID,
    limit: int,
    domains: Sequence[str] | None,
    policy: Policy,
) -> list[Task]:
    if policy.is_paused:
        return []
    with transaction.atomic(savepoint=False):
        _lock()
        running = list(
            Task.objects.filter(status=TaskStatus.RUNNING)
            .values_list("domain", "group_key")
            .annotate(n=Count("id"))
            .order_by()
        )
        full_domains, full_groups = saturated(running, policy)
        qs = Task.objects.claimable().exclude(expires_at__lte=Now())
        if domains:
            qs = qs.filter(domain__in=list(domains))
        skip_domains = full_domains | set(policy.paused_domains)
        if skip_domains:
            qs = qs.exclude(domain__in=skip_domains)
        shares = fair_shares(policy) if policy.is_fair else None
        skip_groups = full_groups | set(policy.paused_groups)
        skip_ungrouped = False
        if shares is not None and not (policy.aging and policy.aging.urgent_threshold is not None):
            # Groups whose fair share is in use are left out in SQL, so a long backlog in one
            # group cannot fill the candidate window and hide the others.
            used = _running_by_group(running)
            spent = {g for g, share in shares.items() if used.get(g, 0) >= share}
            skip_ungrouped = UNGROUPED in spent
            skip_groups |= spent - {UNGROUPED}
        if skip_groups:
            qs = qs.exclude(group_key__in=skip_groups)
        if skip_ungrouped:
            qs = qs.exclude(group_key__isnull=True)
        if policy.preemptor_priority is not None:
            qs = qs.filter(priority__lte=policy.preemptor_priority)
        if policy.throttle_from is not None:
            qs = qs.filter(priority__lt=policy.throttle_from)
        if policy.io_saturated:
            qs = qs.exclude(io_bound(policy.io_saturated))
        if policy.aging is not None:
            # Constant SQL text; the aging numbers travel as bound parameters.
            effective = RawSQL(*aging_sql(policy.aging))  # noqa: S611
            qs = qs.annotate(effective=effective).order_by("effective", "id")
            fields = ("id", "domain", "group_key", "task_type", "effective")
        else:
            qs = qs.in_dispatch_order()
            fields = ("id", "domain", "group_key", "task_type", "priority")
        if shares is not None:
            candidates = _candidates_per_share(qs, fields, shares, running, policy, limit)
        else:
            rows = qs.values_list(*fields)[: limit * OVERFETCH + 16]
            candidates = [Candidate(*row) for row in rows]
        # Admit everything that fits the caps, then take rate tokens until ``limit`` tasks
        # are chosen: a task without a token never holds a slot another task could use.
        # (Any subset of an admissible set is admissible, so cutting afterwards is safe.)
        chosen = admit(candidates, running, policy, len(candidates), shares)
        chosen = _take_tokens(chosen, policy, limit)
        if not chosen:
            return []
        return claim_ids(token, worker_id, [c.id for c in chosen])


def _candidates_per_share(
    qs: Any,
    fields: tuple[str, ...],
    shares: dict[str, int],
    running: list[Any],
    policy: Policy,
    limit: int,
) -> list[Candidate]:
    """With fair shares, read each group's head separately (up to its unused share), so a long
    backlog in one group cannot fill the window and hide the others; urgent tasks (aged to
    the urgent threshold) are read from every group. Merged in dispatch order."""
    used = _running_by_group(running)
    found: list[Candidate] = []
    threshold = policy.aging.urgent_threshold if policy.aging else None
    if threshold is not None:
        urgent = qs.filter(effective__lte=threshold).values_list(*fields)[:limit]
        found += [Candidate(*row) for row in urgent]
    for group, share in shares.items():
        room = share - used.get(group, 0)
        if room <= 0:
            continue
        part = (
            qs.filter(group_key__isnull=True) if group == UNGROUPED else qs.filter(group_key=group)
        )
        found += [Candidate(*row) for row in part.values_list(*fields)[:room]]
    unique = {c.id: c for c in found}
    return sorted(unique.values(), key=lambda c: (c.priority, c.id))


def _running_by_group(running: list[tuple[str, str | None, int]]) -> dict[str, int]:
    used: dict[str, int] = {}
    for _domain, group, count in running:
        used[group or UNGROUPED] = used.get(group or UNGROUPED, 0) + count
    return used


def fair_shares(policy: Policy) -> dict[str, int]:
    """Slots per group for this moment (ungrouped work is the virtual group ""). Demand is
    due or running work outside paused groups and domains, capped by each group's limit."""
    demand = {
        (g or UNGROUPED): min(n, policy.group_cap(g) or n)
        for g, n in (Task.objects.claimable() | Task.objects.running())
        .exclude(group_key__in=list(policy.paused_groups))
        .exclude(domain__in=list(policy.paused_domains))
        .values_list("group_key")
        .annotate(n=Count("id"))
        .order_by()
    }
    capacity = policy.max_concurrency
    if capacity is None:
        live = Worker.objects.filter(heartbeat_at__gte=Now() - app_settings.lease_timeout)
        capacity = live.aggregate(n=Sum("concurrency"))["n"] or 0
    return allocate(
        capacity,
        demand,
        policy.group_weights,
        policy.group_minimum_slots,
        policy.default_group_weight,
    )


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


def _lock() -> None:
    """Hold the claim lock row until commit (one gated claimer at a time, cluster-wide)."""
    if not SchedulerSetting.objects.select_for_update().filter(name=CLAIM_LOCK).exists():
        try:
            with transaction.atomic():
                SchedulerSetting.objects.create(name=CLAIM_LOCK, value=None)
        except IntegrityError:
            pass
        SchedulerSetting.objects.select_for_update().filter(name=CLAIM_LOCK).exists()


def _db_now() -> datetime:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT STATEMENT_TIMESTAMP()")
            return cursor.fetchone()[0]
    return timezone.now()


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
    names = {name for pairs in wanted.values() for name, _ in pairs}
    if not names:
        return chosen[:slots]
    now = _db_now()
    stored = {b.name: b for b in RateBucket.objects.filter(name__in=names)}
    tokens: dict[str, float] = {}
    for pairs in wanted.values():
        for name, limit in pairs:
            if name not in tokens:
                bucket = stored.get(name)
                tokens[name] = (
                    limit.burst
                    if bucket is None
                    else refill(bucket.tokens, (now - bucket.refreshed_at).total_seconds(), limit)
                )
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
    _save_buckets(tokens, stored, now)
    for task_id, delay in delays.items():
        Task.objects.filter(id=task_id).update(run_after=now + timedelta(seconds=delay))
    return allowed


def _save_buckets(tokens: dict[str, float], stored: dict[str, RateBucket], now: datetime) -> None:
    new = [
        RateBucket(name=n, tokens=t, refreshed_at=now) for n, t in tokens.items() if n not in stored
    ]
    for name, value in tokens.items():
        if name in stored:
            RateBucket.objects.filter(name=name).update(tokens=value, refreshed_at=now)
    if new:
        RateBucket.objects.bulk_create(new)
