"""Concurrency gates: which candidates may start now, given what is running. Pure function.

Every cap is an AND-gate (global, domain, group). A candidate refused by its domain or group
cap is skipped, not waited on, so it never holds back work of other domains or groups.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from .config import Policy


@dataclass(frozen=True)
class Candidate:
    id: int
    domain: str
    group_key: str | None
    task_type: str
    priority: int


def admit(
    candidates: Sequence[Candidate],
    running: Iterable[tuple[str, str | None, int]],
    policy: Policy,
    limit: int,
    shares: dict[str, int] | None = None,
) -> list[Candidate]:
    """Pick up to ``limit`` candidates (already in dispatch order) that fit every cap.

    ``running`` holds (domain, group, count) for tasks running anywhere in the cluster;
    ``shares`` the fair-share slots per group (ungrouped = ""), which urgent tasks bypass.
    """
    by_domain, by_group, total = _tally(running)
    by_share: Counter[str] = Counter()
    for _domain, group, count in running:
        by_share[group or ""] += count
    room = limit
    if policy.max_concurrency is not None:
        room = min(room, policy.max_concurrency - total)
    chosen: list[Candidate] = []
    for c in candidates:
        if len(chosen) >= room:
            break
        cap = policy.domain_caps.get(c.domain)
        if cap is not None and by_domain[c.domain] >= cap:
            continue
        gcap = policy.group_cap(c.group_key)
        if gcap is not None and c.group_key is not None and by_group[c.group_key] >= gcap:
            continue
        share_key = c.group_key or ""
        if shares is not None and not _urgent(c, policy):
            if by_share[share_key] >= shares.get(share_key, 0):
                continue
        chosen.append(c)
        by_share[share_key] += 1
        by_domain[c.domain] += 1
        if c.group_key is not None:
            by_group[c.group_key] += 1
    return chosen


def _tally(
    running: Iterable[tuple[str, str | None, int]],
) -> tuple[Counter[str], Counter[str], int]:
    """Running tasks per domain, per group (grouped tasks only) and in all."""
    by_domain: Counter[str] = Counter()
    by_group: Counter[str] = Counter()
    total = 0
    for domain, group, count in running:
        by_domain[domain] += count
        if group is not None:
            by_group[group] += count
        total += count
    return by_domain, by_group, total


def _urgent(c: Candidate, policy: Policy) -> bool:
    threshold = policy.aging.urgent_threshold if policy.aging else None
    return threshold is not None and c.priority <= threshold


def saturated(
    running: Iterable[tuple[str, str | None, int]], policy: Policy
) -> tuple[set[str], set[str]]:
    """Domains and groups already at their cap: excluded in SQL before candidates are read."""
    by_domain, by_group, _total = _tally(running)
    domains = {d for d, cap in policy.domain_caps.items() if by_domain[d] >= cap}
    groups = {
        g for g, n in by_group.items() if (cap := policy.group_cap(g)) is not None and n >= cap
    }
    return domains, groups


def without_unbindable_caps(
    policy: Policy, running: Iterable[tuple[str, str | None, int]], headroom: int
) -> Policy:
    """The policy minus the caps that cannot bind before this claim commits.

    ``headroom`` bounds how many tasks can start anywhere meanwhile: this claim's limit plus
    the free slots of every other live worker. A cap that the tasks running now plus that
    headroom cannot reach is a no-op for this claim, so leaving it out changes nothing, and a
    cluster whose caps are far away keeps the single-statement claim.
    """
    by_domain, by_group, total = _tally(running)
    max_c = policy.max_concurrency
    if max_c is not None and total + headroom <= max_c:
        max_c = None
    domain_caps = {d: c for d, c in policy.domain_caps.items() if by_domain[d] + headroom > c}
    default = policy.default_group_cap
    if default is not None:
        busiest = max((n for g, n in by_group.items() if g not in policy.group_caps), default=0)
        if busiest + headroom <= default:
            default = None
    group_caps = {
        g: c
        for g, c in policy.group_caps.items()
        if by_group[g] + headroom > c or default is not None
    }
    return replace(
        policy,
        max_concurrency=max_c,
        domain_caps=domain_caps,
        group_caps=group_caps,
        default_group_cap=default,
    )
