"""Fair shares for a claim: the demand per group, counted here and divided by
``policy.fair.fair_shares``; each group's room; and noticing groups that ran dry.

Counting the whole queue on every claim would cost more than the claim, so demand is counted
once per policy load (a worker reloads its policy at least once a second) and recounted early
only when a group ran out of work.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from django.db.models import Count, Sum
from django.db.models.functions import Now

from ...conf import app_settings
from ...models import Task, Worker
from ...policy.config import Policy
from ...policy.fair import UNGROUPED, fair_shares
from .state import PolicyMemo

# Demand is recounted at most this often (seconds) when groups run dry between policy loads.
RECOUNT_INTERVAL = 0.2


def current_shares(
    policy: Policy,
    live_slots: int | None = None,
    memo: PolicyMemo | None = None,
    held_per_slot: float = 1.0,
) -> dict[str, int]:
    """Slots per group for this moment (``policy.fair.fair_shares``): due or running work
    per group outside paused groups and domains, and the live workers' slots (``live_slots``
    when the caller has just read them). ``memo``: a claim's answers under ``policy``, where
    demand is kept once counted (without it, demand is counted now). ``held_per_slot``: the
    tasks a worker holds per thread (more than 1 while it claims ahead, see ``ClaimState``).

    Claimed-ahead tasks are running rows: shares of the threads alone would leave a busy
    worker no room for the queue that keeps its threads from idling through a claim's round
    trip, and every gated claim would take a few tasks at a time."""
    if memo is None:
        memo = PolicyMemo()
    if memo.demand is None:
        # Counting the whole queue on every claim would cost more than the claim; demand read
        # once per policy load (at least every second) shifts shares a second late at worst.
        memo.demand_at = time.monotonic()
        memo.demand = dict(
            (Task.objects.claimable() | Task.objects.running())
            .exclude(group_key__in=list(policy.paused_groups))
            .exclude(domain__in=list(policy.paused_domains))
            .values_list("group_key")
            .annotate(n=Count("id"))
            .order_by()
        )
    slots = live_slots if live_slots is not None else _live_slots()
    return fair_shares(policy, memo.demand, round(slots * held_per_slot))


def _live_slots() -> int:
    live = Worker.objects.filter(heartbeat_at__gte=Now() - app_settings.lease_timeout)
    return live.aggregate(n=Sum("concurrency"))["n"] or 0


def rooms(shares: dict[str, int], running: list[Any], limit: int) -> list[tuple[str, int]]:
    """Each group with an unused share, and how many more it may start (never more than the
    claim can take)."""
    used = running_by_group(running)
    found = [(g, min(share - used.get(g, 0), limit)) for g, share in shares.items()]
    return [(g, room) for g, room in found if room > 0]


def running_by_group(running: list[tuple[str, str | None, int]]) -> dict[str, int]:
    used: dict[str, int] = {}
    for _domain, group, count in running:
        used[group or UNGROUPED] = used.get(group or UNGROUPED, 0) + count
    return used


def noting_dry_groups(
    memo: PolicyMemo,
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
    if any(got[group] < room for group, room in rooms(shares, running, limit)):
        if time.monotonic() - memo.demand_at >= RECOUNT_INTERVAL:
            memo.demand = None
    return claimed
