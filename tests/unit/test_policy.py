"""Policy math without a database: concurrency gates, fair shares, aging, rate-limit buckets,
backpressure, and how settings merge with runtime overrides."""

from __future__ import annotations

import doctest
import logging

import pytest
from django.test import override_settings
from hypothesis import given
from hypothesis import strategies as st

import taskmill_django.policy.aging
import taskmill_django.policy.fair
import taskmill_django.policy.io
import taskmill_django.policy.ratelimit
from taskmill_django import RateLimit, ValidationError
from taskmill_django.policy import config
from taskmill_django.policy.aging import Aging
from taskmill_django.policy.config import Policy, build_policy
from taskmill_django.policy.fair import allocate
from taskmill_django.policy.gates import Candidate, admit, saturated
from taskmill_django.policy.pressure import DEFAULT_THROTTLE, measure, throttled_from
from taskmill_django.policy.ratelimit import refill, wait_for_token


def cand(id: int, domain: str = "d", group: str | None = None, priority: int = 128) -> Candidate:
    return Candidate(id, domain, group, f"{domain}::t", priority)


def ids(chosen: list[Candidate]) -> list[int]:
    return [c.id for c in chosen]


@pytest.mark.parametrize(
    "module",
    [
        taskmill_django.policy.aging,
        taskmill_django.policy.fair,
        taskmill_django.policy.io,
        taskmill_django.policy.ratelimit,
    ],
)
def test_doctests__policy_module_examples_hold(module):
    result = doctest.testmod(module)
    assert result.attempted > 0
    assert result.failed == 0


# --- admit: caps are AND-gates, and a refused task never blocks the ones behind it -----------


def test_admit__no_caps_takes_candidates_in_order_up_to_limit():
    chosen = admit([cand(1), cand(2), cand(3)], [], Policy(), limit=2)
    assert ids(chosen) == [1, 2]


def test_admit__global_cap_counts_tasks_running_anywhere():
    running = [("d", None, 2), ("e", "g", 1)]
    chosen = admit([cand(1), cand(2), cand(3)], running, Policy(max_concurrency=4), limit=10)
    assert ids(chosen) == [1]


def test_admit__global_cap_already_exceeded_admits_nothing():
    chosen = admit([cand(1)], [("d", None, 5)], Policy(max_concurrency=3), limit=10)
    assert chosen == []


def test_admit__domain_cap_skips_its_domain_but_not_others():
    policy = Policy(domain_caps={"media": 1})
    candidates = [cand(1, "media"), cand(2, "media"), cand(3, "mail"), cand(4, "media")]
    chosen = admit(candidates, [], policy, limit=10)
    assert ids(chosen) == [1, 3]


def test_admit__domain_cap_counts_running_tasks():
    policy = Policy(domain_caps={"media": 2})
    chosen = admit([cand(1, "media"), cand(2, "mail")], [("media", None, 2)], policy, limit=10)
    assert ids(chosen) == [2]


def test_admit__group_cap_skips_its_group_but_not_others():
    policy = Policy(group_caps={"bucket": 2})
    candidates = [cand(1, group="bucket"), cand(2, group="bucket"), cand(3, group="bucket")]
    candidates += [cand(4, group="other"), cand(5)]
    chosen = admit(candidates, [("d", "bucket", 1)], policy, limit=10)
    assert ids(chosen) == [1, 4, 5]


def test_admit__default_group_cap_applies_to_groups_without_their_own():
    policy = Policy(group_caps={"wide": 3}, default_group_cap=1)
    candidates = [cand(i, group="wide") for i in (1, 2, 3, 4)]
    candidates += [cand(i, group="narrow") for i in (5, 6)]
    chosen = admit(candidates, [], policy, limit=10)
    assert ids(chosen) == [1, 2, 3, 5]


def test_admit__default_group_cap_does_not_limit_ungrouped_tasks():
    policy = Policy(default_group_cap=1)
    chosen = admit([cand(1), cand(2), cand(3)], [], policy, limit=10)
    assert ids(chosen) == [1, 2, 3]


def test_admit__caps_are_and_gates():
    """A task must fit its domain cap AND its group cap AND the global cap."""
    policy = Policy(max_concurrency=3, domain_caps={"media": 5}, group_caps={"g": 1})
    candidates = [cand(1, "media", "g"), cand(2, "media", "g"), cand(3, "mail", "g")]
    candidates += [cand(4, "media"), cand(5, "media"), cand(6, "media")]
    chosen = admit(candidates, [], policy, limit=10)
    assert ids(chosen) == [1, 4, 5]


def test_admit__domain_full_and_group_free_is_refused():
    policy = Policy(domain_caps={"media": 1}, group_caps={"g": 5})
    chosen = admit([cand(1, "media", "g"), cand(2, "mail", "g")], [("media", None, 1)], policy, 9)
    assert ids(chosen) == [2]


def test_admit__fair_shares_hold_each_group_to_its_slots():
    shares = {"a": 2, "b": 1, "": 1}
    candidates = [cand(i, group="a") for i in (1, 2, 3)] + [cand(i, group="b") for i in (4, 5)]
    candidates += [cand(6), cand(7)]
    chosen = admit(candidates, [("d", "a", 1)], Policy(), limit=10, shares=shares)
    assert ids(chosen) == [1, 4, 6]


def test_admit__group_without_a_share_gets_nothing():
    chosen = admit([cand(1, group="x")], [], Policy(), limit=10, shares={"a": 4})
    assert chosen == []


def test_admit__urgent_task_bypasses_fair_shares_but_not_caps():
    policy = Policy(aging=Aging(urgent_threshold=10), group_caps={"a": 2})
    candidates = [cand(1, group="a", priority=5), cand(2, group="a", priority=10)]
    candidates += [cand(3, group="a", priority=5), cand(4, group="a", priority=11)]
    chosen = admit(candidates, [], policy, limit=10, shares={"a": 0})
    assert ids(chosen) == [1, 2]


# --- saturated: what the claim query excludes before it reads candidates -----------------------


def test_saturated__names_domains_and_groups_at_their_cap():
    policy = Policy(domain_caps={"media": 2, "mail": 3}, group_caps={"g": 1, "h": 4})
    running = [("media", "g", 1), ("media", "h", 1), ("mail", None, 2)]
    assert saturated(running, policy) == ({"media"}, {"g"})


def test_saturated__default_group_cap_counts_for_every_group():
    policy = Policy(group_caps={"wide": 5}, default_group_cap=2)
    running = [("d", "a", 2), ("d", "b", 1), ("d", "wide", 3), ("d", None, 9)]
    assert saturated(running, policy) == (set(), {"a"})


def test_saturated__nothing_without_caps():
    assert saturated([("d", "g", 100)], Policy()) == (set(), set())


# --- allocate: weighted fair shares, minimum slots, work-conserving ---------------------------


def test_allocate__slots_follow_weights():
    assert allocate(8, {"a": 20, "b": 20}, {"a": 3, "b": 1}, {}, 1.0) == {"a": 6, "b": 2}


def test_allocate__default_weight_for_groups_without_one():
    assert allocate(6, {"a": 9, "b": 9, "c": 9}, {"a": 4}, {}, 1.0) == {"a": 4, "b": 1, "c": 1}


def test_allocate__ungrouped_work_is_a_group_of_its_own():
    assert allocate(4, {"": 10, "a": 10}, {"a": 1}, {}, 1.0) == {"": 2, "a": 2}


def test_allocate__minimum_slots_come_first():
    assert allocate(4, {"a": 10, "b": 10}, {"a": 9, "b": 1}, {"b": 2}, 1.0) == {"a": 2, "b": 2}


def test_allocate__minimum_slots_never_exceed_demand():
    assert allocate(4, {"a": 10, "b": 1}, {"a": 1, "b": 1}, {"b": 3}, 1.0) == {"a": 3, "b": 1}


def test_allocate__work_conserving_leftovers_go_to_groups_with_work():
    assert allocate(10, {"a": 2, "b": 30}, {"a": 5, "b": 1}, {}, 1.0) == {"a": 2, "b": 8}


def test_allocate__groups_without_demand_get_no_slots():
    assert allocate(4, {"a": 0, "b": 3}, {"a": 1, "b": 1}, {"a": 2}, 1.0) == {"b": 3}


def test_allocate__no_capacity_gives_zero_slots():
    assert allocate(0, {"a": 3}, {}, {}, 1.0) == {"a": 0}


demands = st.dictionaries(
    st.sampled_from(["", "a", "b", "c", "d"]), st.integers(0, 30), min_size=1, max_size=5
)


@given(
    capacity=st.integers(0, 40),
    demand=demands,
    weights=st.dictionaries(st.sampled_from(["a", "b", "c"]), st.floats(0.1, 10.0)),
    minimum=st.dictionaries(st.sampled_from(["a", "b", "d"]), st.integers(0, 5)),
)
def test_allocate__never_overcommits_and_never_idles_while_work_waits(
    capacity, demand, weights, minimum
):
    alloc = allocate(capacity, demand, weights, minimum, 1.0)
    wanting = {g: n for g, n in demand.items() if n > 0}
    assert set(alloc) == set(wanting)
    assert all(0 <= alloc[g] <= wanting[g] for g in alloc)
    assert sum(alloc.values()) == min(capacity, sum(wanting.values()))
    if sum(min(minimum.get(g, 0), n) for g, n in wanting.items()) <= capacity:
        assert all(alloc[g] >= min(minimum.get(g, 0), n) for g, n in wanting.items())


@given(
    capacity=st.integers(1, 40),
    demand=demands,
    weights=st.dictionaries(st.sampled_from(["a", "b", "c"]), st.floats(0.1, 10.0)),
)
def test_allocate__each_group_gets_at_least_its_weighted_share(capacity, demand, weights):
    alloc = allocate(capacity, demand, weights, {}, 1.0)
    wanting = {g: n for g, n in demand.items() if n > 0}
    total = sum(weights.get(g, 1.0) for g in wanting)
    for g, n in wanting.items():
        share = int(capacity * weights.get(g, 1.0) / total)
        assert alloc[g] >= min(share, n)


# --- aging -----------------------------------------------------------------------------------


def test_aging__no_change_within_the_grace_period():
    aging = Aging(grace_period=60, interval=10, ceiling=64)
    assert aging.effective(192, waited=59.9) == 192


def test_aging__one_step_per_interval_after_grace():
    aging = Aging(grace_period=60, interval=10, step=2, ceiling=64)
    assert [aging.effective(192, waited=w) for w in (60, 69.9, 70, 95)] == [192, 192, 190, 186]


def test_aging__stops_at_the_ceiling():
    aging = Aging(grace_period=0, interval=1, ceiling=64)
    assert aging.effective(192, waited=10_000) == 64


def test_aging__never_makes_an_urgent_task_less_urgent():
    aging = Aging(grace_period=0, interval=1, ceiling=64)
    assert aging.effective(10, waited=10_000) == 10


def test_aging__from_setting_off_values():
    assert Aging.from_setting(None) is None
    assert Aging.from_setting(False) is None


def test_aging__from_setting_true_uses_defaults():
    assert Aging.from_setting(True) == Aging()


def test_aging__from_setting_dict():
    aging = Aging.from_setting({"grace_period": 5, "interval": 2, "ceiling": 0, "step": 3})
    assert aging == Aging(grace_period=5, interval=2, step=3, ceiling=0)
    assert aging.as_dict()["urgent_threshold"] is None


@pytest.mark.parametrize(
    "value",
    [
        "yes",
        {"interval": 0},
        {"interval": -1},
        {"grace_period": -1},
        {"step": 0},
        {"ceiling": 256},
        {"ceiling": -1},
        {"graceperiod": 5},
    ],
)
def test_aging__from_setting_rejects_bad_values_naming_the_setting(value):
    with pytest.raises(ValidationError) as info:
        Aging.from_setting(value)
    assert info.value.field == "PRIORITY_AGING"


# --- rate limits -----------------------------------------------------------------------------


def test_rate_limit__per_second_bursts_its_rate():
    assert RateLimit.per_second(5) == RateLimit(5.0, 5.0)


def test_rate_limit__slow_rates_still_burst_one_whole_token():
    assert RateLimit.per_second(0.5) == RateLimit(0.5, 1.0)
    assert RateLimit.per_minute(30) == RateLimit(0.5, 1.0)


def test_rate_limit__per_minute_is_per_second_over_sixty():
    assert RateLimit.per_minute(120) == RateLimit(2.0, 2.0)


def test_rate_limit__with_burst():
    assert RateLimit.per_second(5).with_burst(10) == RateLimit(5.0, 10.0)
    assert RateLimit.per_second(5).with_burst(0.25) == RateLimit(5.0, 1.0)


@pytest.mark.parametrize("bad", [0, -1, True, "5", None])
def test_rate_limit__rate_must_be_a_positive_number(bad):
    with pytest.raises(ValidationError) as info:
        RateLimit.per_second(bad)
    assert info.value.field == "rate"
    with pytest.raises(ValidationError):
        RateLimit.per_minute(bad)


@pytest.mark.parametrize("bad", [0, -3, False])
def test_rate_limit__burst_must_be_a_positive_number(bad):
    with pytest.raises(ValidationError) as info:
        RateLimit.per_second(1).with_burst(bad)
    assert info.value.field == "burst"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (RateLimit(2.0, 7.0), RateLimit(2.0, 7.0)),
        ({"rate": 4}, RateLimit(4.0, 4.0)),
        ({"rate": 4, "burst": 9}, RateLimit(4.0, 9.0)),
        (3, RateLimit(3.0, 3.0)),
        (0.25, RateLimit(0.25, 1.0)),
    ],
)
def test_rate_limit__from_json_accepts_stored_and_setting_forms(value, expected):
    assert RateLimit.from_json(value) == expected


def test_rate_limit__json_round_trip():
    limit = RateLimit.per_minute(90).with_burst(4)
    assert RateLimit.from_json(limit.as_json()) == limit


@pytest.mark.parametrize("bad", ["fast", [5], {"burst": 3}, True, None])
def test_rate_limit__from_json_rejects_other_values(bad):
    with pytest.raises(ValidationError) as info:
        RateLimit.from_json(bad)
    assert info.value.field == "rate_limit"


def test_refill__adds_rate_times_elapsed_up_to_burst():
    limit = RateLimit.per_second(5)
    assert refill(0.0, 0.2, limit) == pytest.approx(1.0)
    assert refill(2.0, 10.0, limit) == 5.0


def test_refill__clock_going_backwards_adds_nothing():
    assert refill(1.5, -3.0, RateLimit.per_second(5)) == 1.5


def test_wait_for_token__time_to_next_whole_token():
    limit = RateLimit.per_second(5)
    assert wait_for_token(0.0, limit) == pytest.approx(0.2)
    assert wait_for_token(0.5, limit) == pytest.approx(0.1)
    assert wait_for_token(1.0, limit) == 0.0
    assert wait_for_token(3.0, limit) == 0.0


def test_rate_limit__fifteen_starts_at_five_per_second_take_two_seconds():
    """The arithmetic the acceptance test relies on: burst 5, then one token every 0.2 s."""
    limit = RateLimit.per_second(5)
    tokens, clock, starts = limit.burst, 0.0, []
    while len(starts) < 15:
        if tokens >= 1.0:
            tokens -= 1.0
            starts.append(clock)
            continue
        wait = wait_for_token(tokens, limit)
        tokens, clock = refill(tokens, wait, limit), clock + wait
    assert starts[4] == 0.0
    assert starts[-1] == pytest.approx(2.0)


# --- pressure --------------------------------------------------------------------------------


class _Source:
    def __init__(self, name: str, value: object) -> None:
        self.name = name
        self.value = value

    def pressure(self) -> float:
        if isinstance(self.value, Exception):
            raise self.value
        return self.value  # type: ignore[return-value]


class _Nameless:
    def pressure(self) -> float:
        return 0.3


def test_throttled_from__default_policy_tiers():
    assert throttled_from(0.0, None) is None
    assert throttled_from(0.5, None) is None  # "above 0.5": the limit itself is fine
    assert throttled_from(0.51, None) == 192
    assert throttled_from(0.75, None) == 192
    assert throttled_from(0.9, None) == 128
    assert throttled_from(1.0, None) == 128  # HIGH is never throttled by default
    assert DEFAULT_THROTTLE == {192: 0.5, 128: 0.75}


def test_throttled_from__custom_policy():
    policy = {64: 0.95, 255: 0.1}
    assert throttled_from(0.05, policy) is None
    assert throttled_from(0.2, policy) == 255
    assert throttled_from(0.99, policy) == 64


def test_throttled_from__empty_policy_never_throttles():
    assert throttled_from(1.0, {}) is None


def test_measure__aggregate_is_the_maximum_with_breakdown():
    total, breakdown = measure([_Source("memory", 0.4), _Source("queue", 0.7)])
    assert total == 0.7
    assert breakdown == {"memory": 0.4, "queue": 0.7}


def test_measure__values_are_clamped_to_zero_and_one():
    total, breakdown = measure([_Source("hot", 3.0), _Source("cold", -1)])
    assert total == 1.0
    assert breakdown == {"hot": 1.0, "cold": 0.0}


def test_measure__failing_source_counts_as_zero_and_is_logged(caplog):
    sources = [_Source("broken", RuntimeError("sensor gone")), _Source("ok", 0.2)]
    with caplog.at_level(logging.ERROR, logger="taskmill_django.policy.pressure"):
        total, breakdown = measure(sources)
    assert (total, breakdown) == (0.2, {"broken": 0.0, "ok": 0.2})
    assert "broken" in caplog.text
    assert "sensor gone" in caplog.text


def test_measure__no_sources_is_no_pressure():
    assert measure([]) == (0.0, {})


def test_measure__source_without_name_is_named_by_its_class():
    assert measure([_Nameless()]) == (0.3, {"_Nameless": 0.3})


# --- build_policy: settings + declarations + runtime overrides ---------------------------------


def policy_from(overrides=None, paused=(), domains=None, preemptor=None, pressure=(0.0, {})):
    return build_policy(
        dict(overrides or {}), set(paused), dict(domains or {}), preemptor, pressure
    )


def test_build_policy__nothing_configured_is_trivial():
    policy = policy_from()
    assert policy.is_trivial
    assert policy.max_concurrency is None
    assert policy.throttle_from is None


@pytest.mark.parametrize(
    "overrides",
    [
        {config.PAUSED: True},
        {config.MAX_CONCURRENCY: 3},
        {config.DOMAIN_CAP + "media": 1},
        {config.DOMAIN_PAUSED + "media": True},
        {config.GROUP_CAP + "g": 2},
        {config.RATE + "tests::noop": {"rate": 1.0, "burst": 1.0}},
        {config.GROUP_RATE + "g": {"rate": 1.0, "burst": 1.0}},
        {config.GROUP_WEIGHT + "g": 2.0},
        {config.GROUP_MIN_SLOTS + "g": 1},
    ],
)
def test_build_policy__any_runtime_limit_leaves_the_fast_path(overrides):
    assert not policy_from(overrides).is_trivial


def test_build_policy__preemptor_pause_and_pressure_leave_the_fast_path():
    assert not policy_from(preemptor=0).is_trivial
    assert not policy_from(paused={"g"}).is_trivial
    assert not policy_from(pressure=(0.9, {"x": 0.9})).is_trivial
    assert not policy_from(domains={"media": 2}).is_trivial


def test_build_policy__domain_declared_without_a_cap_has_none():
    assert policy_from(domains={"media": None}).domain_caps == {}


@override_settings(TASKMILL={"MAX_CONCURRENCY": 8})
def test_build_policy__runtime_max_concurrency_wins_over_settings():
    assert policy_from().max_concurrency == 8
    assert policy_from({config.MAX_CONCURRENCY: 2}).max_concurrency == 2


@override_settings(TASKMILL={"MAX_CONCURRENCY": 8})
def test_build_policy__no_limit_removes_the_settings_max_concurrency():
    assert policy_from({config.MAX_CONCURRENCY: config.NO_LIMIT}).max_concurrency is None


def test_build_policy__domain_caps_merge_declarations_and_overrides():
    overrides = {config.DOMAIN_CAP + "media": 3, config.DOMAIN_CAP + "mail": config.NO_LIMIT}
    policy = policy_from(overrides, domains={"media": 1, "mail": 2, "sms": 4, "idle": None})
    assert policy.domain_caps == {"media": 3, "sms": 4}


def test_build_policy__paused_domains_are_those_set_true():
    overrides = {config.DOMAIN_PAUSED + "media": True, config.DOMAIN_PAUSED + "mail": False}
    assert policy_from(overrides).paused_domains == frozenset({"media"})


@override_settings(TASKMILL={"GROUP_CONCURRENCY": {"a": 1, "b": 2}, "DEFAULT_GROUP_CONCURRENCY": 5})
def test_build_policy__group_caps_merge_settings_and_overrides():
    overrides = {config.GROUP_CAP + "a": 4, config.GROUP_CAP + "b": config.NO_LIMIT}
    overrides[config.GROUP_CAP + "c"] = 7
    policy = policy_from(overrides)
    assert policy.group_caps == {"a": 4, "c": 7}
    assert policy.default_group_cap == 5
    assert (policy.group_cap("a"), policy.group_cap("b"), policy.group_cap(None)) == (4, 5, None)


@override_settings(
    TASKMILL={
        "RATE_LIMITS": {"tests::noop": 2, "tests::echo": {"rate": 1, "burst": 3}},
        "GROUP_RATE_LIMITS": {"g": RateLimit.per_minute(60)},
    }
)
def test_build_policy__rate_limits_merge_settings_and_overrides():
    overrides = {
        config.RATE + "tests::noop": config.NO_LIMIT,
        config.RATE + "tests::record": {"rate": 5.0, "burst": 10.0},
        config.GROUP_RATE + "h": {"rate": 0.5, "burst": 1.0},
    }
    policy = policy_from(overrides)
    assert policy.rate_limits == {
        "tests::echo": RateLimit(1.0, 3.0),
        "tests::record": RateLimit(5.0, 10.0),
    }
    assert policy.group_rate_limits == {"g": RateLimit(1.0, 1.0), "h": RateLimit(0.5, 1.0)}


@override_settings(
    TASKMILL={
        "GROUP_WEIGHTS": {"a": 3, "b": 2},
        "DEFAULT_GROUP_WEIGHT": 0.5,
        "GROUP_MINIMUM_SLOTS": {"a": 1, "b": 2},
    }
)
def test_build_policy__weights_and_minimum_slots_merge_settings_and_overrides():
    overrides = {
        config.GROUP_WEIGHT + "a": 1.5,
        config.GROUP_WEIGHT + "b": config.NO_LIMIT,
        config.GROUP_MIN_SLOTS + "b": config.NO_LIMIT,
        config.GROUP_MIN_SLOTS + "c": 3,
    }
    policy = policy_from(overrides)
    assert policy.group_weights == {"a": 1.5}
    assert policy.default_group_weight == 0.5
    assert policy.group_minimum_slots == {"a": 1, "c": 3}
    assert policy.is_fair


def test_build_policy__removing_every_weight_leaves_fair_scheduling_off():
    policy = policy_from({config.GROUP_WEIGHT + "a": config.NO_LIMIT})
    assert not policy.is_fair
    assert policy.is_trivial


@override_settings(TASKMILL={"PRIORITY_AGING": {"grace_period": 1, "interval": 2}})
def test_build_policy__aging_from_settings():
    assert policy_from().aging == Aging(grace_period=1, interval=2)


@override_settings(TASKMILL={"PREEMPT_PRIORITY": 64})
def test_build_policy__preemption_threshold_and_current_preemptor():
    policy = policy_from(preemptor=10)
    assert (policy.preempt_priority, policy.preemptor_priority) == (64, 10)


def test_build_policy__pressure_sets_the_throttle_with_default_tiers():
    policy = policy_from(pressure=(0.6, {"fixed": 0.6}))
    assert policy.pressure == 0.6
    assert policy.pressure_breakdown == {"fixed": 0.6}
    assert policy.throttle_from == 192


@override_settings(TASKMILL={"THROTTLE_POLICY": {64: 0.2}})
def test_build_policy__throttle_policy_setting_replaces_the_default_tiers():
    assert policy_from(pressure=(0.3, {})).throttle_from == 64
    assert policy_from(pressure=(0.1, {})).throttle_from is None
