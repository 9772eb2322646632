"""RetryPolicy backoff math: pure functions, no database."""

from __future__ import annotations

from datetime import timedelta

import pytest

from taskmill_django import RetryPolicy, ValidationError


def test_retry_policy__constant_gives_same_delay_for_every_attempt():
    policy = RetryPolicy.constant(3, 2.5)
    assert [policy.delay_for(n) for n in (1, 2, 3)] == [2.5, 2.5, 2.5]


def test_retry_policy__constant_defaults_to_no_delay():
    assert RetryPolicy.constant(3).delay_for(1) == 0.0


def test_retry_policy__constant_accepts_timedelta():
    assert RetryPolicy.constant(1, timedelta(minutes=1)).delay_for(1) == 60.0


def test_retry_policy__max_retries_is_kept():
    assert RetryPolicy.constant(4, 1).max_retries == 4
    assert RetryPolicy.linear(5, 1, 1).max_retries == 5
    assert RetryPolicy.exponential(6, 1).max_retries == 6


def test_retry_policy__linear_grows_by_increment():
    policy = RetryPolicy.linear(5, initial=2, increment=3)
    assert [policy.delay_for(n) for n in (1, 2, 3, 4)] == [2.0, 5.0, 8.0, 11.0]


def test_retry_policy__linear_is_capped_at_maximum():
    policy = RetryPolicy.linear(10, initial=2, increment=3, maximum=6)
    assert [policy.delay_for(n) for n in (1, 2, 3, 9)] == [2.0, 5.0, 6.0, 6.0]


def test_retry_policy__exponential_doubles_by_default():
    policy = RetryPolicy.exponential(5, initial=1, jitter=False)
    assert [policy.delay_for(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]


def test_retry_policy__exponential_uses_multiplier():
    policy = RetryPolicy.exponential(5, initial=2, multiplier=3, jitter=False)
    assert [policy.delay_for(n) for n in (1, 2, 3)] == [2.0, 6.0, 18.0]


def test_retry_policy__exponential_is_capped_at_maximum():
    policy = RetryPolicy.exponential(10, initial=1, maximum=10, jitter=False)
    assert [policy.delay_for(n) for n in (4, 5, 8)] == [8.0, 10.0, 10.0]


def test_retry_policy__exponential_cap_holds_for_very_late_attempts():
    policy = RetryPolicy.exponential(5000, initial=1, maximum=60, jitter=False)
    assert policy.delay_for(1100) == 60.0


def test_retry_policy__exponential_jitters_by_default():
    assert RetryPolicy.exponential(3, initial=1).jitter is True


def test_retry_policy__jitter_stays_between_half_and_full_delay():
    policy = RetryPolicy.exponential(5, initial=4, maximum=100, jitter=True)
    delays = [policy.delay_for(3) for _ in range(500)]  # un-jittered: 16 s
    assert all(8.0 <= d <= 16.0 for d in delays)
    assert len(set(delays)) > 1


def test_retry_policy__jitter_respects_the_cap():
    policy = RetryPolicy.exponential(20, initial=1, maximum=10, jitter=True)
    delays = [policy.delay_for(15) for _ in range(200)]
    assert all(5.0 <= d <= 10.0 for d in delays)


def test_retry_policy__jitter_of_zero_delay_is_zero():
    assert RetryPolicy.exponential(3, initial=0, jitter=True).delay_for(2) == 0.0


def test_retry_policy__attempt_below_one_counts_as_first_retry():
    policy = RetryPolicy.exponential(3, initial=5, jitter=False)
    assert policy.delay_for(0) == policy.delay_for(1) == 5.0


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: RetryPolicy.constant(-1, 1), "max_retries"),
        (lambda: RetryPolicy.constant(True, 1), "max_retries"),
        (lambda: RetryPolicy.constant(3, -1), "delay"),
        (lambda: RetryPolicy.constant(3, "1"), "delay"),
        (lambda: RetryPolicy.linear(3, -1, 1), "initial"),
        (lambda: RetryPolicy.linear(3, 1, -1), "increment"),
        (lambda: RetryPolicy.linear(3, 1, 1, maximum=-5), "maximum"),
        (lambda: RetryPolicy.exponential(3, initial=timedelta(seconds=-1)), "initial"),
        (lambda: RetryPolicy.exponential(3, initial=1, multiplier=0.5), "multiplier"),
        (lambda: RetryPolicy.exponential(3, initial=1, multiplier=True), "multiplier"),
    ],
)
def test_retry_policy__bad_arguments_name_the_field(build, field):
    with pytest.raises(ValidationError) as info:
        build()
    assert info.value.field == field
