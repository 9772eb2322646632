"""Retry policies: pure backoff math, no database.

>>> RetryPolicy.exponential(5, initial=1, maximum=10, jitter=False).delay_for(4)
8.0
>>> RetryPolicy.exponential(5, initial=1, maximum=10, jitter=False).delay_for(6)
10.0
>>> RetryPolicy.linear(3, initial=2, increment=3, maximum=100).delay_for(3)
8.0
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta

from .exceptions import ValidationError
from .validation import validate_seconds

Seconds = float | int | timedelta


def _seconds(field: str, value: Seconds) -> float:
    seconds = validate_seconds(field, value, allow_none=False)
    assert seconds is not None  # noqa: S101 - allow_none=False never returns None
    return seconds


def _count(field: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(field, f"must be a non-negative integer, got {value!r}")
    return value


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how late a failed task is tried again.

    ``delay_for(attempt)`` gives the wait before retry number ``attempt`` (1-based). Jitter
    spreads retries of tasks that failed together (a downstream outage) so they do not return
    in a herd.
    """

    max_retries: int
    kind: str = "constant"
    initial: float = 0.0
    increment: float = 0.0
    maximum: float | None = None
    multiplier: float = 2.0
    jitter: bool = False

    @classmethod
    def constant(cls, max_retries: int, delay: Seconds = 0) -> RetryPolicy:
        return cls(_count("max_retries", max_retries), "constant", _seconds("delay", delay))

    @classmethod
    def linear(
        cls, max_retries: int, initial: Seconds, increment: Seconds, maximum: Seconds | None = None
    ) -> RetryPolicy:
        return cls(
            _count("max_retries", max_retries),
            "linear",
            _seconds("initial", initial),
            _seconds("increment", increment),
            None if maximum is None else _seconds("maximum", maximum),
        )

    @classmethod
    def exponential(
        cls,
        max_retries: int,
        initial: Seconds,
        maximum: Seconds | None = None,
        multiplier: float = 2.0,
        jitter: bool = True,
    ) -> RetryPolicy:
        if isinstance(multiplier, bool) or not isinstance(multiplier, int | float):
            raise ValidationError("multiplier", f"expected a number, got {multiplier!r}")
        if multiplier < 1:
            raise ValidationError("multiplier", f"must be >= 1, got {multiplier!r}")
        return cls(
            _count("max_retries", max_retries),
            "exponential",
            _seconds("initial", initial),
            0.0,
            None if maximum is None else _seconds("maximum", maximum),
            float(multiplier),
            bool(jitter),
        )

    def delay_for(self, attempt: int) -> float:
        """Seconds to wait before retry ``attempt`` (1 = first retry)."""
        n = max(attempt, 1) - 1
        if self.kind == "linear":
            delay = self.initial + self.increment * n
        elif self.kind == "exponential":
            try:
                delay = self.initial * (self.multiplier**n)
            except OverflowError:  # attempt 1100 of a doubling policy: the cap decides
                delay = float("inf")
        else:
            delay = self.initial
        if self.maximum is not None:
            delay = min(delay, self.maximum)
        elif delay == float("inf"):
            delay = 86400.0 * 365  # uncapped and astronomically late: a year is late enough
        if self.jitter and delay > 0:
            # "Equal jitter": keep at least half the delay so backoff still grows.
            delay = delay / 2 + random.uniform(0, delay / 2)  # noqa: S311 - not crypto
        return float(delay)
