"""Weighted fair shares between groups: allocations of the cluster's slots, in three passes.

1. Fair share: each group with pending or running work gets ``max(minimum_slots,
   floor(capacity * weight / total_weight))`` slots, never more than it can use.
2. Greedy fill: slots left over go to groups that still have work, in weight order, so the
   cluster never idles while work waits (work-conserving).
3. Urgent: tasks whose effective priority reaches the aging urgent threshold are admitted
   regardless of allocations (applied by the claim, not here).

Ungrouped tasks form a virtual group named "" here.

>>> allocate(10, {"a": 10, "b": 10}, {"a": 3, "b": 1}, {}, 1.0)
{'a': 8, 'b': 2}
>>> allocate(10, {"a": 10, "b": 1}, {"a": 1, "b": 1}, {}, 1.0)
{'a': 9, 'b': 1}
>>> allocate(4, {"a": 10, "b": 10}, {"a": 1, "b": 1}, {"b": 3}, 1.0)
{'a': 1, 'b': 3}
"""

from __future__ import annotations

import math

UNGROUPED = ""


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
