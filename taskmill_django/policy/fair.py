"""Weighted fair shares between groups: allocations of the cluster's slots, in three passes.

1. Fair share: each group with pending or running work gets ``max(minimum_slots,
   floor(capacity * weight / total_weight))`` slots, never more than it can use.
2. Greedy fill: slots left over go to groups that still have work, in weight order, so the
   cluster never idles while work waits (work-conserving).
3. Urgent: tasks whose effective priority reaches the aging urgent threshold are admitted
   regardless of allocations (applied by the claim, not here).

Ungrouped tasks form a virtual group named "" here. ``fair_shares`` applies a policy's
weights, minimum slots and caps to the demand the store counted.

>>> allocate(10, {"a": 10, "b": 10}, {"a": 3, "b": 1}, {}, 1.0)
{'a': 8, 'b': 2}
>>> allocate(10, {"a": 10, "b": 1}, {"a": 1, "b": 1}, {}, 1.0)
{'a': 9, 'b': 1}
>>> allocate(4, {"a": 10, "b": 10}, {"a": 1, "b": 1}, {"b": 3}, 1.0)
{'a': 1, 'b': 3}
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from .config import Policy

UNGROUPED = ""


def fair_shares(
    policy: Policy, demand: Mapping[str | None, int], live_slots: int
) -> dict[str, int]:
    """Slots per group for this moment (ungrouped work is the virtual group "").

    ``demand`` holds the due or running tasks per group key outside paused groups and domains
    (counted by the store: this module never reads the database); no group wants more than
    its cap. Capacity is the live workers' slots, or the global cap when that is lower or no
    worker is live.

    >>> policy = Policy(max_concurrency=4, group_weights={"a": 3, "b": 1})
    >>> fair_shares(policy, {"a": 10, "b": 10}, live_slots=8)
    {'a': 3, 'b': 1}
    >>> fair_shares(Policy(group_weights={"a": 1}), {"a": 10, None: 10}, live_slots=6)
    {'a': 3, '': 3}
    """
    wanted = {(g or UNGROUPED): min(n, policy.group_cap(g) or n) for g, n in demand.items()}
    capacity = policy.max_concurrency
    if capacity is None or 0 < live_slots < capacity:
        capacity = live_slots  # shares of slots no worker has would leave the weights unused
    return allocate(
        capacity,
        wanted,
        policy.group_weights,
        policy.group_minimum_slots,
        policy.default_group_weight,
    )


def allocate(
    capacity: int,
    demand: dict[str, int],
    weights: dict[str, float],
    minimum_slots: dict[str, int],
    default_weight: float,
) -> dict[str, int]:
    """Slots per group (running + pending counts as demand)."""
    groups = [g for g, n in demand.items() if n > 0]
    if not groups or capacity <= 0:
        return {g: 0 for g in groups}
    weight = {g: float(weights.get(g, default_weight)) for g in groups}
    total = sum(weight.values()) or 1.0
    by_weight = sorted(groups, key=lambda g: -weight[g])
    alloc = {g: 0 for g in groups}
    left = capacity
    for g in by_weight:  # minimum slots first, as far as capacity allows
        give = min(minimum_slots.get(g, 0), demand[g], left)
        alloc[g] += give
        left -= give
    for g in by_weight:  # then the weighted share
        target = math.floor(capacity * weight[g] / total)
        give = min(max(target - alloc[g], 0), demand[g] - alloc[g], left)
        alloc[g] += give
        left -= give
    for g in by_weight:  # then whatever is left, to whoever still has work
        give = min(demand[g] - alloc[g], left)
        alloc[g] += give
        left -= give
    return alloc
