"""The worker's cycle: write the last batch's outcomes and claim the next under one commit.

On PostgreSQL the statement that moves finished tasks to history travels with the claim's
first round trip (ahead of any savepoint a gated claim may roll back to): with psycopg 3's
client-side binding (Django's default) both go as one query, and a cycle costs BEGIN, that
query and COMMIT. At a few tasks per cycle a worker mostly waits on round trips. What
follows from those ends (dependents to settle, parents to tell, reruns to start) and the
outcomes that keep a task active (retries, releases) are written after the claim, in the
same transaction: a dependent made due there is claimed by the next cycle. Elsewhere the
outcomes are written first, then the claim.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from django.db import transaction

from ..models import Task
from ..policy.config import Policy
from . import claim, lifecycle


def write_and_claim(
    outcomes: Sequence[lifecycle.Outcome],
    worker_id: uuid.UUID,
    limit: int,
    domains: Sequence[str] | None,
    policy: Policy | None,
) -> tuple[lifecycle.Applied, list[Task]]:
    """Write ``outcomes`` and claim up to ``limit`` tasks for ``worker_id``, in one
    transaction: both or neither."""
    with transaction.atomic():
        moved = lifecycle.moving_ahead(outcomes)
        if moved is None:
            applied = lifecycle.apply_outcomes(outcomes)
            return applied, claim.claim_batch(worker_id, limit, domains, policy)
        claimed = claim.claim_batch(worker_id, limit, domains, policy, moved)
        return lifecycle.apply_outcomes(outcomes, moved), claimed
