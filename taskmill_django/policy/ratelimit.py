"""Token-bucket rate limits: the math is pure; buckets live in the database (store.control).

>>> RateLimit.per_second(5).with_burst(10)
RateLimit(rate=5.0, burst=10.0)
>>> refill(tokens=0.0, elapsed=0.5, limit=RateLimit.per_second(4))
2.0
>>> round(wait_for_token(tokens=0.25, limit=RateLimit.per_second(2)), 3)
0.375
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..exceptions import ValidationError


@dataclass(frozen=True)
class RateLimit:
    """At most ``rate`` task starts per second on average, in bursts of up to ``burst``."""

    rate: float
    burst: float

    @classmethod
    def per_second(cls, n: float) -> RateLimit:
        rate = _positive("rate", n)
        return cls(rate, max(rate, 1.0))

    @classmethod
    def per_minute(cls, n: float) -> RateLimit:
        rate = _positive("rate", n) / 60.0
        return cls(rate, max(float(n) / 60.0, 1.0))

    def with_burst(self, burst: float) -> RateLimit:
        return RateLimit(self.rate, max(_positive("burst", burst), 1.0))

    def as_json(self) -> dict[str, float]:
        return {"rate": self.rate, "burst": self.burst}

    @classmethod
    def from_json(cls, value: Any) -> RateLimit:
        """Accept a RateLimit, {"rate": r, "burst": b}, or a number (starts per second)."""
        if isinstance(value, RateLimit):
            return value
        if isinstance(value, dict) and "rate" in value:
            limit = cls.per_second(value["rate"])
            return limit.with_burst(value["burst"]) if value.get("burst") else limit
        if isinstance(value, int | float) and not isinstance(value, bool):
            return cls.per_second(value)
        raise ValidationError("rate_limit", f"expected RateLimit or {{'rate': r}}, got {value!r}")


def _positive(field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValidationError(field, f"must be a number > 0, got {value!r}")
    return float(value)


def refill(tokens: float, elapsed: float, limit: RateLimit) -> float:
    return min(limit.burst, tokens + max(elapsed, 0.0) * limit.rate)


def wait_for_token(tokens: float, limit: RateLimit) -> float:
    """Seconds until the bucket holds one whole token."""
    return max(1.0 - tokens, 0.0) / limit.rate
