"""Rate-limit tokens: paying for what a claim took, taking tokens row by row, refunds and
delays.

Buckets are rows of ``taskmill_rate_bucket``, refilled lazily from the time since their last
write (``policy.ratelimit.refill``). Two claims must never spend the same token: either a
claim locks the buckets before it chooses (row by row, or where tokens may run short), or it
pays after claiming with an ``UPDATE`` whose returned balance says whether every task had its
token. Every claimer locks buckets in name order: one lock order, no deadlock between them.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import F
from django.db.models.functions import Now
from django.utils import timezone

from ...enums import TaskStatus
from ...models import RateBucket, Task
from ...policy import config
from ...policy.config import Policy
from ...policy.gates import Candidate
from ...policy.ratelimit import RateLimit, refill, wait_for_token
from ..db import preparable, run_together
from .load import buckets_statement
from .rows import Then

# A claim that runs ``Then`` statements in its round trip (the payment for what it takes).
Claim = Callable[[Then], list[Task]]
# Above this many rate limits, a claim takes tokens per candidate instead of checking every
# bucket up front.
MANY_BUCKETS = 16
# Refill to now (capped at the burst) and spend what the claim with this lease token took of
# the bucket's type or group, in one locked row update (none when it took nothing). The
# worker's running rows are found through their partial index.
_PAY_CLAIMED = {
    column: preparable(
        "UPDATE taskmill_rate_bucket SET tokens = LEAST(%s, tokens + GREATEST(0, EXTRACT(EPOCH "  # noqa: S608
        "FROM STATEMENT_TIMESTAMP() - refreshed_at)) * %s) - spent.n, "
        "refreshed_at = STATEMENT_TIMESTAMP() FROM (SELECT COUNT(*) AS n FROM taskmill_task "
        "WHERE worker_id = %s AND status = 'running' AND lease_token = %s "
        f"AND {column} = %s) AS spent WHERE name = %s AND spent.n > 0 RETURNING name, tokens"
    )
    for column in ("task_type", "group_key")
}


def bucket_limits(policy: Policy) -> dict[str, RateLimit]:
    limits = {config.RATE + t: lim for t, lim in policy.rate_limits.items()}
    limits |= {config.GROUP_RATE + g: lim for g, lim in policy.group_rate_limits.items()}
    return limits


def bucket_names(policy: Policy) -> list[str]:
    """Buckets a claim may pay from without locking them first (few enough to check)."""
    names = sorted(bucket_limits(policy))
    return names if len(names) <= MANY_BUCKETS else []


# --- paying for a claim made in one statement ------------------------------------------------


def claim_then_pay(
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
        rows = run_together([buckets_statement(sorted(limits))])[0]
    if len(rows) < len(limits):
        return None  # a bucket to create first: the locked path does it
    now, slots = rows[0][3], rows[0][4]
    tokens = min(refill(t, (now - at).total_seconds(), limits[name]) for name, t, at, *_ in rows)
    if tokens < max(limit, 2 * slots):
        return None
    return claim()


def payments(policy: Policy, token: uuid.UUID, worker_id: uuid.UUID) -> Then:
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


def paid_in_full(
    claimed: list[Task], limits: dict[str, RateLimit], balances: dict[str, float]
) -> bool:
    """Every bucket the claimed tasks cost a token exists and was not overdrawn."""
    used = spent(claimed)
    return all(balances.get(name, -1.0) >= 0 for name in limits if used[name])


def claim_and_pay_one_writer(
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
        for name, n in sorted(spent(claimed).items()):
            if name in tokens:
                cursor.execute(
                    "UPDATE taskmill_rate_bucket SET tokens = %s, refreshed_at = %s "
                    "WHERE name = %s",
                    [tokens[name] - n, stamp, name],
                )
    return claimed


def claim_and_pay_locked(
    limit: int, limits: dict[str, RateLimit], claim: Claim
) -> list[Task] | None:
    """Lock the buckets, claim when each holds a token for every slot asked for, and pay for
    what was taken. None (nothing claimed) when some bucket runs low."""
    stored, now = _locked_buckets(limits)
    tokens = _refilled(stored, now, limits)
    if min(tokens.values()) < limit:
        return None
    claimed = claim(())
    used = spent(claimed)
    _save_buckets({name: tokens[name] - n for name, n in used.items() if name in tokens}, now)
    return claimed


def _stored_time(value: Any) -> datetime:
    """A datetime column read with a plain cursor, converted as the ORM would."""
    ops: Any = connection.ops  # SQLite's (the only caller) converts stored text
    converted: datetime = ops.convert_datetimefield_value(value, None, connection)
    return converted


def spent(claimed: list[Task]) -> Counter[str]:
    """Tokens the claimed tasks cost, per bucket name (configured or not)."""
    used: Counter[str] = Counter()
    for task in claimed:
        used[config.RATE + task.task_type] += 1
        if task.group_key is not None:
            used[config.GROUP_RATE + task.group_key] += 1
    return used


# --- taking tokens row by row ----------------------------------------------------------------


def take_tokens(chosen: list[Candidate], policy: Policy, slots: int) -> list[Candidate]:
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
    tokens = _refilled(stored, now, limits)
    allowed: list[Candidate] = []
    delays: dict[int, float] = {}
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


def refund(missed: list[Candidate], policy: Policy) -> None:
    """Give back the tokens of chosen tasks another claim took first (candidates are read
    without locks). The buckets are still locked by this claim, so nobody spent them since."""
    owed: Counter[str] = Counter()
    for c in missed:
        owed.update(name for name, _ in _buckets_for(c, policy))
    for name, n in sorted(owed.items()):
        RateBucket.objects.filter(name=name).update(tokens=F("tokens") + n)


def _buckets_for(c: Candidate, policy: Policy) -> list[tuple[str, RateLimit]]:
    found = []
    if c.task_type in policy.rate_limits:
        found.append((config.RATE + c.task_type, policy.rate_limits[c.task_type]))
    if c.group_key is not None and c.group_key in policy.group_rate_limits:
        found.append((config.GROUP_RATE + c.group_key, policy.group_rate_limits[c.group_key]))
    return found


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


# --- locked buckets --------------------------------------------------------------------------


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


def _refilled(
    stored: dict[str, RateBucket], now: datetime, limits: dict[str, RateLimit]
) -> dict[str, float]:
    """Each locked bucket's tokens, refilled up to ``now``."""
    return {
        name: refill(bucket.tokens, (now - bucket.refreshed_at).total_seconds(), limits[name])
        for name, bucket in stored.items()
    }


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


def _db_now() -> datetime:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT STATEMENT_TIMESTAMP()")
            now: datetime = cursor.fetchall()[0][0]
            return now
    return timezone.now()


def _clock(db_now: datetime) -> datetime:
    """The database clock on PostgreSQL (shared by every machine), else this machine's."""
    return db_now if connection.vendor == "postgresql" else timezone.now()
