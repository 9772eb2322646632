"""The effective dispatch policy: settings merged with runtime overrides from the database.

Workers reload it at most once per poll interval, so a change made from any process (code,
admin, API) is obeyed by every worker within one interval.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..conf import app_settings
from .aging import Aging
from .pressure import throttled_from
from .ratelimit import RateLimit

# Names of SchedulerSetting rows. A prefix is followed by the domain, group or task type.
PAUSED = "paused"
MAX_CONCURRENCY = "max_concurrency"
DOMAIN_PAUSED = "domain_paused:"
DOMAIN_CAP = "domain_max_concurrency:"
GROUP_CAP = "group_limit:"
RATE = "rate_limit:"
GROUP_RATE = "group_rate_limit:"
GROUP_WEIGHT = "group_weight:"
GROUP_MIN_SLOTS = "group_minimum_slots:"
NO_LIMIT = "none"  # stored value meaning "removed at runtime, whatever settings say"


@dataclass(frozen=True)
class Policy:
    is_paused: bool = False
    max_concurrency: int | None = None
    domain_caps: dict[str, int] = field(default_factory=dict)
    paused_domains: frozenset[str] = frozenset()
    group_caps: dict[str, int] = field(default_factory=dict)
    default_group_cap: int | None = None
    paused_groups: frozenset[str] = frozenset()
    rate_limits: dict[str, RateLimit] = field(default_factory=dict)
    group_rate_limits: dict[str, RateLimit] = field(default_factory=dict)
    preempt_priority: int = 0
    preemptor_priority: int | None = None  # most urgent active preemptor, if any
    aging: Aging | None = None
    group_weights: dict[str, float] = field(default_factory=dict)
    default_group_weight: float = 1.0
    group_minimum_slots: dict[str, int] = field(default_factory=dict)
    pressure: float = 0.0
    pressure_breakdown: dict[str, float] = field(default_factory=dict)
    throttle_from: int | None = None  # priorities >= this wait while pressure is high
    # Bytes each busy IO direction of this machine can still take over the budget window,
    # as sorted (direction, bytes) pairs: tasks declaring more wait (policy.io.budget).
    io_budget: tuple[tuple[str, int], ...] = ()

    @property
    def has_caps(self) -> bool:
        """Any concurrency cap: claims must count running tasks under the exclusive lock."""
        return bool(
            self.max_concurrency is not None
            or self.domain_caps
            or self.group_caps
            or self.default_group_cap is not None
        )

    @property
    def is_fair(self) -> bool:
        return bool(self.group_weights or self.group_minimum_slots)

    @property
    def is_trivial(self) -> bool:
        """Nothing to enforce: claims take the single-statement fast path."""
        return not (
            self.is_paused
            or self.max_concurrency is not None
            or self.domain_caps
            or self.paused_domains
            or self.group_caps
            or self.default_group_cap is not None
            or self.paused_groups
            or self.rate_limits
            or self.group_rate_limits
            or self.preemptor_priority is not None
            or self.aging is not None
            or self.is_fair
            or self.throttle_from is not None
            or bool(self.io_budget)
        )

    def group_cap(self, group: str | None) -> int | None:
        if group is None:
            return None
        return self.group_caps.get(group, self.default_group_cap)


def build_policy(
    overrides: dict[str, Any],
    paused_groups: set[str],
    domain_defaults: dict[str, int | None],
    preemptor_priority: int | None,
    pressure: tuple[float, dict[str, float]] = (0.0, {}),
    io_budget: tuple[tuple[str, int], ...] = (),
) -> Policy:
    """Merge settings, domain declarations and stored overrides (overrides win)."""
    s = app_settings
    max_c = overrides.get(MAX_CONCURRENCY, s.MAX_CONCURRENCY)
    domain_caps = {d: c for d, c in domain_defaults.items() if c is not None}
    group_caps = dict(s.GROUP_CONCURRENCY or {})
    rates = {k: RateLimit.from_json(v) for k, v in (s.RATE_LIMITS or {}).items()}
    group_rates = {k: RateLimit.from_json(v) for k, v in (s.GROUP_RATE_LIMITS or {}).items()}
    weights = {k: float(v) for k, v in (s.GROUP_WEIGHTS or {}).items()}
    minimum = {k: int(v) for k, v in (s.GROUP_MINIMUM_SLOTS or {}).items()}
    paused_domains = set()
    for name, value in overrides.items():
        for prefix, target, convert in (
            (DOMAIN_CAP, domain_caps, int),
            (GROUP_CAP, group_caps, int),
            (GROUP_WEIGHT, weights, float),
            (GROUP_MIN_SLOTS, minimum, int),
        ):
            if name.startswith(prefix):
                _set_or_drop(target, name[len(prefix) :], value, convert)
        if name.startswith(RATE):
            _set_or_drop(rates, name[len(RATE) :], value, RateLimit.from_json)
        elif name.startswith(GROUP_RATE):
            _set_or_drop(group_rates, name[len(GROUP_RATE) :], value, RateLimit.from_json)
        elif name.startswith(DOMAIN_PAUSED) and value:
            paused_domains.add(name[len(DOMAIN_PAUSED) :])
    return Policy(
        is_paused=bool(overrides.get(PAUSED, False)),
        max_concurrency=None if max_c in (None, NO_LIMIT) else int(max_c),
        domain_caps=domain_caps,
        paused_domains=frozenset(paused_domains),
        group_caps=group_caps,
        default_group_cap=s.DEFAULT_GROUP_CONCURRENCY,
        paused_groups=frozenset(paused_groups),
        rate_limits=rates,
        group_rate_limits=group_rates,
        preempt_priority=int(s.PREEMPT_PRIORITY),
        preemptor_priority=preemptor_priority,
        aging=Aging.from_setting(s.PRIORITY_AGING),
        group_weights=weights,
        default_group_weight=float(s.DEFAULT_GROUP_WEIGHT),
        group_minimum_slots=minimum,
        pressure=pressure[0],
        pressure_breakdown=pressure[1],
        throttle_from=throttled_from(pressure[0], _throttle_policy(s.THROTTLE_POLICY)),
        io_budget=io_budget,
    )


def _throttle_policy(value: Any) -> dict[int, float] | None:
    if value is None:
        return None
    return {int(k): float(v) for k, v in dict(value).items()}


def _set_or_drop(target: dict[str, Any], key: str, value: Any, convert: Any = int) -> None:
    if value in (None, NO_LIMIT):
        target.pop(key, None)
    else:
        target[key] = convert(value)
