"""Backpressure: pluggable pressure sources (0.0 to 1.0, aggregate = max) and a throttle policy
per priority tier. Pressure is measured where the worker runs, so each machine protects itself.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Protocol

from django.utils.module_loading import import_string

from ..conf import app_settings
from .io import ThroughputMeter, load_meter, parse_capacity

DISK = ("disk_read", "disk_write")

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
    """Disk throughput against its capacity: the busier of reading and writing, as a share of
    its ``IO_CAPACITY`` (``disk_read``, ``disk_write``), from the smoothed rate of the IO meter
    (see policy.io). A direction without a capacity cannot be judged and reads 0; so does the
    first reading, which only sets the meter's baseline. How full the disk is plays no part."""

    name = "disk"

    def __init__(
        self, meter: ThroughputMeter | None = None, capacity: dict[str, float] | None = None
    ) -> None:
        if meter is None:
            meter = load_meter(app_settings.IO_SAMPLER)
        if capacity is None:
            capacity = parse_capacity(app_settings.IO_CAPACITY)
        self.meter, self.capacity = meter, capacity
        self._lock = threading.Lock()  # a web process may share one source between threads

    def pressure(self) -> float:
        with self._lock:
            rates = self.meter.update(time.monotonic())
        shares = [
            rates.get(direction, 0.0) / limit
            for direction in DISK
            if (limit := self.capacity.get(direction))
        ]
        return min(max(shares, default=0.0), 1.0)


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
