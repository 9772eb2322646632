"""Priority aging: a pending task's effective priority improves the longer it waits.

Computed in the claim query's ORDER BY (no row is ever rewritten; ``aging_sql`` writes it), from
the time since submission minus the time spent paused:

    effective = max(ceiling, priority - step * floor(max(0, waited - grace_period) / interval))

>>> aging = Aging.from_setting({"grace_period": 60, "interval": 30, "ceiling": 64})
>>> aging.effective(192, waited=150)
189
>>> aging.effective(70, waited=100000)
64
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..exceptions import ValidationError


@dataclass(frozen=True)
class Aging:
    grace_period: float = 60.0
    interval: float = 60.0
    step: int = 1
    ceiling: int = 64
    urgent_threshold: int | None = None

    @classmethod
    def from_setting(cls, value: Any) -> Aging | None:
        if value in (None, False):
            return None
        if value is True:
            return cls()
        if not isinstance(value, dict):
            raise ValidationError("PRIORITY_AGING", "must be None or a dict")
        unknown = set(value) - {"grace_period", "interval", "step", "ceiling", "urgent_threshold"}
        if unknown:
            raise ValidationError("PRIORITY_AGING", f"unknown keys {sorted(unknown)}")
        aging = cls(**value)
        if aging.interval <= 0 or aging.grace_period < 0 or aging.step < 1:
            raise ValidationError("PRIORITY_AGING", "interval > 0, grace_period >= 0, step >= 1")
        if not 0 <= aging.ceiling <= 255:
            raise ValidationError("PRIORITY_AGING", "ceiling must be in 0..255")
        return aging

    def effective(self, priority: int, waited: float) -> int:
        steps = int(max(0.0, waited - self.grace_period) // self.interval)
        return max(min(self.ceiling, priority), priority - self.step * steps)

    def effective_at(
        self,
        priority: int,
        created_at: datetime,
        paused_seconds: float,
        at: datetime,
    ) -> int:
        """The effective priority at ``at`` (the claim query's formula, by this clock)."""
        waited = (at - created_at).total_seconds() - paused_seconds
        return self.effective(priority, waited)

    def as_dict(self) -> dict[str, Any]:
        return {
            "grace_period": self.grace_period,
            "interval": self.interval,
            "step": self.step,
            "ceiling": self.ceiling,
            "urgent_threshold": self.urgent_threshold,
        }


def aging_sql(aging: Aging, vendor: str) -> tuple[str, list[object]]:
    """Effective priority as SQL for ``vendor`` (a Django ``connection.vendor``): priority
    improved by time waited minus time paused, on the database's clock. Constant text per
    vendor; the aging numbers travel as bound parameters.

    >>> sql, params = aging_sql(Aging(grace_period=60, interval=30, ceiling=64), "postgresql")
    >>> sql.startswith("GREATEST(LEAST(%s, priority), priority - %s * FLOOR(")
    True
    >>> params
    [64, 1, 60, 30]
    """
    if vendor == "postgresql":
        waited = "EXTRACT(EPOCH FROM (STATEMENT_TIMESTAMP() - created_at))"
        floor, greatest, least = "FLOOR", "GREATEST", "LEAST"
    elif vendor == "sqlite":
        waited = "((julianday('now') - julianday(created_at)) * 86400.0)"
        floor, greatest, least = "CAST", "MAX", "MIN"
    else:
        waited = "(TIMESTAMPDIFF(MICROSECOND, created_at, UTC_TIMESTAMP(6)) / 1000000.0)"
        floor, greatest, least = "FLOOR", "GREATEST", "LEAST"
    steps = f"{greatest}(0, {waited} - paused_seconds - %s) / %s"
    steps = f"CAST({steps} AS INTEGER)" if floor == "CAST" else f"FLOOR({steps})"
    sql = f"{greatest}({least}(%s, priority), priority - %s * {steps})"
    return sql, [aging.ceiling, aging.step, aging.grace_period, aging.interval]


def configured() -> Aging | None:
    """The aging policy of the settings (None when aging is off)."""
    from ..conf import app_settings

    return Aging.from_setting(app_settings.PRIORITY_AGING)
