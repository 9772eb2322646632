"""The worker's cycle: write the last batch's outcomes and claim the next under one commit.

On PostgreSQL the statement that moves finished tasks to history travels with the claim's
first round trip (ahead of any savepoint a gated claim may roll back to): for the ungated
claim both are prepared statements in one pipeline with the transaction's BEGIN, and a cycle
costs that round trip and COMMIT; a cycle with nothing to write is the claim alone, one round
trip committed on its own. At a few tasks per cycle a worker mostly waits on round trips. What
follows from those ends (dependents to settle, parents to tell, reruns to start) and the
outcomes that keep a task active (retries, releases) are written after the claim, in the
same transaction: a dependent made due there is claimed by the next cycle. Elsewhere the
outcomes are written first, then the claim.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from contextlib import nullcontext

from django.db import connection, transaction
from django.db.models import Q
from django.db.models.functions import Now

from ..models import Task
from ..policy.config import Policy
from . import claim, counters, lifecycle
from .db import Ahead, Statements, pipelines, preparable


def write_and_claim(
    outcomes: Sequence[lifecycle.Outcome],
    worker_id: uuid.UUID,
    limit: int,
    domains: Sequence[str] | None,
    policy: Policy | None,
    state: claim.ClaimState | None = None,
    counts: counters.Buffered | None = None,
) -> tuple[lifecycle.Applied, list[Task]]:
    """Write ``outcomes`` and claim up to ``limit`` tasks for ``worker_id``, in one
    transaction: both or neither. ``state``: the worker's ``ClaimState`` (see
    ``claim.claim_batch``); ``counts``: the worker's counter buffer, which the cycle's counts
    go to and which is written with the cycle when it is due."""
    if not outcomes and connection.vendor == "sqlite" and not _anything_due(domains):
        # SQLite: a transaction here takes the database's one write lock (IMMEDIATE), which
        # an idle worker would otherwise do at every poll, delaying everyone's heartbeats.
        if counts is not None and counts.due():
            counts.flush()
        return lifecycle.Applied([], []), []
    plain = policy is None or policy.is_trivial
    flush = counts is not None and counts.due()
    if not outcomes and plain and not flush and _is_postgres() and pipelines():
        # Nothing to write: the claim alone, committed at the end of its one round trip (an
        # idle worker picking up a task it was woken for pays no BEGIN and COMMIT).
        alone = Ahead([], prelude=PLAN_HINT)
        return lifecycle.Applied([], []), claim.claim_committed(worker_id, limit, domains, alone)
    with transaction.atomic(), counts.gathering() if counts else nullcontext():
        moved = lifecycle.moving_ahead(outcomes)
        if moved is None:
            applied = lifecycle.apply_outcomes(outcomes)
            hint = Ahead([], prelude=PLAN_HINT) if plain and _is_postgres() else None
            return applied, claim.claim_batch(worker_id, limit, domains, policy, hint, state)
        if plain:
            moved.prelude = PLAN_HINT
        else:
            moved.prelude, moved.coda = HINT_SAVING, HINT_UNDONE
        claimed = claim.claim_batch(worker_id, limit, domains, policy, moved, state)
        return lifecycle.apply_outcomes(outcomes, moved), claimed


# PostgreSQL: the plain claim walks the dispatch index in order, which its LIMIT makes
# cheap however many rows are pending. Statistics taken while the table was nearly empty (a
# bulk load right after a quiet period, before any ANALYZE) make the planner prefer reading
# every pending row and sorting them, 50 times slower at 20,000 rows. Taking the sort off
# the table for the cycle's transaction keeps the index plan whatever the statistics say.
# The cycle's statements are prepared (db.run_together) and planned once per connection: a
# generic plan, which does not know the LIMIT and guesses a tenth of the table, so hash and
# merge joins are off too (the claim would otherwise join its few ids to a scan of the whole
# table; it looks them up by primary key), and so are sequential scans (the move to history
# finds its rows by primary key, one probe per outcome, where a generic plan that guesses a
# hundred outcomes would read a small table whole). JIT is off: a disabled node's cost crosses
# ``jit_above_cost``, and a cached plan would compile at every run.
_HINTED = {
    "enable_sort": "off",
    "enable_seqscan": "off",
    "enable_hashjoin": "off",
    "enable_mergejoin": "off",
    "jit": "off",
    "plan_cache_mode": "force_generic_plan",
}


def _set_locally(values: dict[str, str]) -> Statements:
    """One statement setting each of ``values`` (SQL expressions) until the transaction
    ends, as SET LOCAL does."""
    sets = ", ".join(f"set_config('{name}', {value}, true)" for name, value in values.items())
    return ((preparable(f"SELECT {sets}", prepare=False), ()),)


PLAN_HINT = _set_locally({name: f"'{value}'" for name, value in _HINTED.items()})

# Gated claims (caps, rate limits, fair shares, aging) read group heads and candidates their
# own way and keep the planner's choice; the move to history ahead of them needs the hint all
# the same (at a few thousand tasks the planner would otherwise read the whole table for a
# batch of outcomes: 4 ms instead of 0.5). So it is planned under the hint, which the coda
# then undoes: each setting gets back the value it had (kept meanwhile in a setting of our
# own), the project's SET LOCAL included.
HINT_SAVING = (
    *_set_locally({f"taskmill.saved_{name}": f"current_setting('{name}')" for name in _HINTED}),
    *PLAN_HINT,
)
HINT_UNDONE = _set_locally({name: f"current_setting('taskmill.saved_{name}')" for name in _HINTED})


def _is_postgres() -> bool:
    return connection.vendor == "postgresql"


def _anything_due(domains: Sequence[str] | None) -> bool:
    """A plain read: is any task due to be claimed at all?"""
    due = Task.objects.claimable().filter(Q(expires_at__isnull=True) | Q(expires_at__gt=Now()))
    if domains:
        due = due.filter(domain__in=list(domains))
    return due.exists()
