"""IO budgets: tasks that declare disk or network IO wait while this machine's measured
throughput in that direction is near its capacity.

Each worker measures the machine it runs on (disks and links are per machine, like pressure):
a sampler returns cumulative byte counters, the meter turns two readings into a rate and
smooths it with an exponentially weighted moving average, so one burst does not stall work
and a sustained load does. A direction is *saturated* when its smoothed rate reaches
``SATURATION`` of the capacity given in ``IO_CAPACITY``; while it is, the worker claims no task
whose ``expected_io`` has bytes in that direction, unless the task is HIGH priority or more
urgent. Tasks that declare no IO are never held back, so saturation causes no head-of-line
blocking. A worker that has just started has no rate yet and holds nothing back.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Protocol

from django.utils.module_loading import import_string

from ..exceptions import ValidationError

DIRECTIONS = ("disk_read", "disk_write", "net_rx", "net_tx")
# Task columns holding each direction's expected bytes.
EXPECTED_COLUMN = {
    "disk_read": "expected_read_bytes",
    "disk_write": "expected_write_bytes",
    "net_rx": "expected_net_rx_bytes",
    "net_tx": "expected_net_tx_bytes",
}
SATURATION = 0.8  # share of capacity at which a direction counts as saturated
EXEMPT_PRIORITY = 64  # HIGH and more urgent tasks are never held back (like THROTTLE_POLICY)
DEFAULT_ALPHA = 0.3  # EWMA weight of the newest reading: about 3 readings to follow a change
SECTOR = 512  # /proc/diskstats counts 512-byte sectors whatever the device's block size


class IoSampler(Protocol):
    def counters(self) -> dict[str, int]:
        """Cumulative bytes per direction since some fixed point (boot, say)."""
        ...


class ProcSampler:
    """Linux counters: whole block devices from /proc/diskstats (partitions, loop and ram
    devices are skipped so nothing is counted twice) and every link but loopback from
    /proc/net/dev. Elsewhere the counters stay at zero and nothing is ever saturated."""

    def __init__(self, proc: str = "/proc", sys_block: str = "/sys/block") -> None:
        self.proc = proc
        self.sys_block = sys_block

    def counters(self) -> dict[str, int]:
        found = dict.fromkeys(DIRECTIONS, 0)
        disks = self._whole_disks()
        try:
            with open(os.path.join(self.proc, "diskstats")) as handle:
                for line in handle:
                    parts = line.split()
                    if len(parts) >= 10 and parts[2] in disks:
                        found["disk_read"] += int(parts[5]) * SECTOR
                        found["disk_write"] += int(parts[9]) * SECTOR
        except OSError:
            pass
        try:
            with open(os.path.join(self.proc, "net", "dev")) as handle:
                for line in handle:
                    name, _, rest = line.partition(":")
                    fields = rest.split()
                    if not rest or name.strip() == "lo" or len(fields) < 9:
                        continue
                    found["net_rx"] += int(fields[0])
                    found["net_tx"] += int(fields[8])
        except (OSError, ValueError):
            pass
        return found

    def _whole_disks(self) -> set[str]:
        try:
            names = os.listdir(self.sys_block)
        except OSError:
            return set()
        return {n for n in names if not n.startswith(("loop", "ram", "zram"))}


@dataclass
class ThroughputMeter:
    """Smoothed bytes per second per direction, from successive sampler readings."""

    sampler: Any
    alpha: float = DEFAULT_ALPHA
    rates: dict[str, float] = field(default_factory=dict)
    _last: dict[str, int] | None = None
    _last_at: float = 0.0

    def update(self, now: float) -> dict[str, float]:
        """Read the counters and fold the rate since the last reading into the averages.
        The first reading only sets the baseline (an empty result)."""
        counters = self.sampler.counters()
        if self._last is not None and now > self._last_at:
            elapsed = now - self._last_at
            for direction in DIRECTIONS:
                delta = max(0, counters.get(direction, 0) - self._last.get(direction, 0))
                rate = delta / elapsed
                previous = self.rates.get(direction)
                self.rates[direction] = (
                    rate if previous is None else previous + self.alpha * (rate - previous)
                )
        self._last, self._last_at = counters, now
        return dict(self.rates)


def parse_capacity(value: Any) -> dict[str, float]:
    """``IO_CAPACITY``: ``{direction: bytes per second}`` for any of DIRECTIONS."""
    if value in (None, {}):
        return {}
    if not isinstance(value, dict):
        raise ValidationError("IO_CAPACITY", "must be a dict of bytes per second")
    unknown = set(value) - set(DIRECTIONS)
    if unknown:
        raise ValidationError("IO_CAPACITY", f"unknown directions {sorted(unknown)}")
    capacity = {}
    for direction, limit in value.items():
        if isinstance(limit, bool) or not isinstance(limit, int | float) or limit <= 0:
            raise ValidationError("IO_CAPACITY", f"{direction} must be > 0 bytes per second")
        capacity[direction] = float(limit)
    return capacity


def saturated(rates: dict[str, float], capacity: dict[str, float]) -> frozenset[str]:
    """Directions whose smoothed rate has reached SATURATION of their capacity."""
    return frozenset(d for d, limit in capacity.items() if rates.get(d, 0.0) >= SATURATION * limit)


def load_meter(sampler_path: str | None) -> ThroughputMeter:
    sampler = import_string(sampler_path)() if sampler_path else ProcSampler()
    return ThroughputMeter(sampler)


def report(rates: dict[str, float], capacity: dict[str, float]) -> dict[str, dict[str, Any]]:
    """What the worker stores and the snapshot shows, per measured direction."""
    return {
        d: {
            "rate": round(rates[d], 1),
            "capacity": capacity.get(d),
            "saturated": d in capacity and rates[d] >= SATURATION * capacity[d],
        }
        for d in DIRECTIONS
        if d in rates
    }
