"""Claiming: move pending rows to running under a fresh lease, in one short transaction.

The package, by job: ``paths`` chooses the claim form, ``sql`` builds the statements (dispatch
order, filters, group heads), ``load`` takes the claim lock and reads the cluster's load,
``buckets`` pays rate-limit tokens, ``shares`` and ``candidates`` serve fair shares and the
row-by-row claim, ``rows`` runs claim statements and turns their rows into tasks, and
``state`` holds what a worker's claims carry from one to the next (``ClaimState``, owned by
its claim loop). The rest of the package uses only the names below.
"""

from __future__ import annotations

from .load import CLAIM_LOCK
from .paths import claim_batch
from .rows import claim_committed, claim_ids, claim_returning, claimed_tasks
from .shares import current_shares
from .state import ClaimState

__all__ = [
    "CLAIM_LOCK",
    "ClaimState",
    "claim_batch",
    "claim_committed",
    "claim_ids",
    "claim_returning",
    "claimed_tasks",
    "current_shares",
]
