"""IO budgets: a task's declared bytes (``expected_io``) are compared with what this machine's
disks and links can still take, measured, before a worker claims it.

Each worker measures the machine it runs on (disks and links are per machine, like pressure):
a sampler returns cumulative byte counters, the meter turns two readings into a rate and
smooths it with an exponentially weighted moving average, so one burst does not stall work
and a sustained load does.

A direction's *budget* is the bytes it can still take over the next ``WINDOW`` seconds before
its smoothed rate reaches ``SATURATION`` of the capacity given in ``IO_CAPACITY``:
``(SATURATION x capacity - rate) x WINDOW``. A task below HIGH priority whose declared bytes in
a direction exceed its budget waits; smaller tasks, tasks that declare nothing there and HIGH
or more urgent tasks are claimed as usual, so a busy disk holds back only the work that would
overload it, never the queue behind it. While at least half of a direction's budget is free
it holds nothing back, so a task declaring more than a whole window (a 5 GB upload) still runs
whenever its link is not busy; once the budget is gone the direction is *saturated*. A worker
that has just started has no rate yet and holds nothing back.

>>> budget({"disk_write": 500.0}, {"disk_write": 1000.0})
{'disk_write': 600}
>>> over_budget({"disk_write": 4096}, {"disk_write": 600})
['disk_write']
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from django.db.models import Q
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
SATURATION = 0.8  # share of capacity a direction's budget fills up to
WINDOW = 2.0  # seconds of traffic a budget covers: declared bytes are spread over this long
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
    """Directions whose smoothed rate has reached SATURATION of their capacity (no budget)."""
    return frozenset(d for d, limit in capacity.items() if rates.get(d, 0.0) >= SATURATION * limit)


def budget(rates: Mapping[str, float], capacity: Mapping[str, float]) -> dict[str, int]:
    """Bytes each direction can still take over the next WINDOW seconds, for the directions
    busy enough to hold anything back (less than half their budget free)."""
    found = {}
    for direction, limit in capacity.items():
        whole = SATURATION * limit * WINDOW
        left = max(whole - rates.get(direction, 0.0) * WINDOW, 0.0)
        if left < whole / 2:
            found[direction] = int(left)
    return found


def over_budget(expected: Mapping[str, int], budgets: Mapping[str, int]) -> list[str]:
    """The directions in which a task declaring ``expected`` bytes does not fit (sorted)."""
    return sorted(d for d, left in budgets.items() if expected.get(d, 0) > left)


def held_back(budgets: Mapping[str, int]) -> Q:
    """The claim's filter for ``budgets``: tasks below HIGH priority declaring more bytes in a
    direction than its budget (matches nothing for an empty budget)."""
    if not budgets:
        return Q(pk__in=[])
    over = Q()
    for direction in sorted(budgets):
        over |= Q(**{f"{EXPECTED_COLUMN[direction]}__gt": budgets[direction]})
    return Q(priority__gt=EXEMPT_PRIORITY) & over


def expected_of(task: Any) -> dict[str, int]:
    """A task row's declared bytes per direction."""
    return {d: int(getattr(task, column)) for d, column in EXPECTED_COLUMN.items()}


def load_meter(sampler_path: str | None) -> ThroughputMeter:
    sampler = import_string(sampler_path)() if sampler_path else ProcSampler()
    return ThroughputMeter(sampler)


def report(rates: dict[str, float], capacity: dict[str, float]) -> dict[str, dict[str, Any]]:
    """What the worker stores and the snapshot shows, per measured direction: its rate, its
    capacity, whether it is saturated, and its budget in bytes (None while it holds nothing
    back)."""
    budgets = budget(rates, capacity)
    return {
        d: {
            "rate": round(rates[d], 1),
            "capacity": capacity.get(d),
            "saturated": d in capacity and rates[d] >= SATURATION * capacity[d],
            "budget": budgets.get(d),
        }
        for d in DIRECTIONS
        if d in rates
    }
