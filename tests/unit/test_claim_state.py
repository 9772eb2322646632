"""What a worker's claims carry between them: answers found under one policy load are dropped
when the claim loop loads the next policy; the lock mode and a pending give-way are not."""

from __future__ import annotations

import doctest

import taskmill_django.store.claim.state
from taskmill_django.policy.config import Policy
from taskmill_django.store.claim import ClaimState


def test_claim_state__doctests():
    assert doctest.testmod(taskmill_django.store.claim.state).failed == 0


def test_claim_state__answers_are_kept_while_the_policy_is_the_same():
    policy, state = Policy(group_weights={"a": 1.0}), ClaimState()
    memo = state.memo(policy)
    memo.live_slots, memo.demand, memo.nothing_aged, memo.buckets_low = 8, {"a": 3}, True, True

    again = state.memo(policy)

    assert (again.live_slots, again.demand, again.nothing_aged, again.buckets_low) == (
        8,
        {"a": 3},
        True,
        True,
    )


def test_claim_state__a_reloaded_policy_starts_from_no_answers():
    state = ClaimState()
    memo = state.memo(Policy(group_weights={"a": 1.0}))
    memo.live_slots, memo.demand, memo.nothing_aged, memo.buckets_low = 8, {"a": 3}, True, True

    # A reload builds a new Policy, equal or not to the last one.
    fresh = state.memo(Policy(group_weights={"a": 1.0}))

    assert (fresh.live_slots, fresh.demand, fresh.nothing_aged, fresh.buckets_low) == (
        None,
        None,
        False,
        False,
    )


def test_claim_state__lock_mode_outlives_a_policy_reload():
    state = ClaimState()
    state.memo(Policy(max_concurrency=3))
    state.exclusive = False  # the last claim found every cap out of reach

    state.memo(Policy(max_concurrency=3))

    assert state.exclusive is False


def test_claim_state__a_claim_that_gave_way_is_told_once_even_across_a_reload():
    state = ClaimState()
    state.memo(Policy(max_concurrency=3))
    state.give_way()

    state.memo(Policy(max_concurrency=3))

    assert (state.exclusive, state.take_deferred(), state.take_deferred()) == (True, True, False)
