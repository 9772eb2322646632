"""Backpressure: pluggable pressure sources (0.0 to 1.0, aggregate = max) and a throttle policy
per priority tier. Pressure is measured where the worker runs, so each machine protects itself.
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any, Protocol

from django.utils.module_loading import import_string

logger = logging.getLogger(__name__)

# priority at or above which work is throttled → pressure above which it is.
DEFAULT_THROTTLE = {192: 0.5, 128: 0.75}


class PressureSource(Protocol):
    name: str

    def pressure(self) -> float: ...


class MemoryPressure:
    """Share of memory in use (MemAvailable from /proc/meminfo)."""

    name = "memory"

    def pressure(self) -> float:
        info = {}
        with open("/proc/meminfo") as handle:
            for line in handle:
                key, value = line.split(":", 1)
                info[key] = float(value.split()[0])
        total = info.get("MemTotal", 0.0)
        return 1.0 - info.get("MemAvailable", total) / total if total else 0.0


class CpuPressure:
    """One-minute load average per core, capped at 1."""

    name = "cpu"

    def pressure(self) -> float:
        return min(os.getloadavg()[0] / (os.cpu_count() or 1), 1.0)


class DiskPressure:
    """Share of the filesystem holding the working directory in use."""

    name = "disk"

    def pressure(self) -> float:
        usage = shutil.disk_usage(os.getcwd())
        return usage.used / usage.total if usage.total else 0.0


def load_sources(paths: list[str], resource_monitoring: bool) -> list[Any]:
    sources: list[Any] = [import_string(path)() for path in paths]
    if resource_monitoring:
        sources += [MemoryPressure(), CpuPressure(), DiskPressure()]
    return sources


def measure(sources: list[Any]) -> tuple[float, dict[str, float]]:
    """Aggregate pressure (the max) and the breakdown; a failing source counts as 0."""
    breakdown: dict[str, float] = {}
    for source in sources:
        try:
            value = float(source.pressure())
        except Exception:
            logger.exception("pressure source %s failed", getattr(source, "name", source))
            value = 0.0
        breakdown[str(getattr(source, "name", type(source).__name__))] = min(max(value, 0.0), 1.0)
    return (max(breakdown.values()) if breakdown else 0.0), breakdown


def throttled_from(pressure: float, policy: dict[int, float] | None) -> int | None:
    """The lowest priority number throttled at this pressure (tasks at or above it wait),
    or None when nothing is throttled."""
    levels = policy if policy is not None else DEFAULT_THROTTLE
    hit = [int(priority) for priority, limit in levels.items() if pressure > float(limit)]
    return min(hit) if hit else None
