"""IO budgets: counters from /proc, smoothed rates, budgets in bytes, saturation, the disk
pressure source and the IO_CAPACITY setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskmill_django import ValidationError
from taskmill_django.policy.io import (
    ProcSampler,
    ThroughputMeter,
    budget,
    over_budget,
    parse_capacity,
    report,
    saturated,
)
from taskmill_django.policy.pressure import DiskPressure

DISKSTATS = """\
 253       0 vda 100 0 2000 0 50 0 4000 0 0 0 0
 253       1 vda1 90 0 1800 0 40 0 3000 0 0 0 0
   7       0 loop0 5 0 999 0 0 0 999 0 0 0 0
"""
NET_DEV = """\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets
    lo: 5000 10 0 0 0 0 0 0 5000 10 0 0 0 0 0 0
  eth0: 1200 3 0 0 0 0 0 0 3400 4 0 0 0 0 0 0
"""


def fake_proc(tmp_path: Path) -> ProcSampler:
    (tmp_path / "proc" / "net").mkdir(parents=True)
    (tmp_path / "proc" / "diskstats").write_text(DISKSTATS)
    (tmp_path / "proc" / "net" / "dev").write_text(NET_DEV)
    for name in ("vda", "loop0"):
        (tmp_path / "block" / name).mkdir(parents=True)
    return ProcSampler(str(tmp_path / "proc"), str(tmp_path / "block"))


def test_proc_sampler__counts_whole_disks_and_real_links_only(tmp_path):
    # vda: 2000 sectors read, 4000 written; its partition and the loop device are not added
    assert fake_proc(tmp_path).counters() == {
        "disk_read": 2000 * 512,
        "disk_write": 4000 * 512,
        "net_rx": 1200,
        "net_tx": 3400,
    }


def test_proc_sampler__without_proc_counts_nothing(tmp_path):
    sampler = ProcSampler(str(tmp_path / "missing"), str(tmp_path / "missing"))
    assert set(sampler.counters().values()) == {0}


class Scripted:
    def __init__(self, *readings: int) -> None:
        self.readings = list(readings)

    def counters(self) -> dict[str, int]:
        return {"disk_write": self.readings.pop(0)}


def test_meter__first_reading_is_a_baseline_then_rates_are_smoothed():
    meter = ThroughputMeter(Scripted(0, 1000, 1000, 1000), alpha=0.5)

    assert meter.update(now=10.0) == {}
    assert meter.update(now=11.0)["disk_write"] == 1000.0  # first rate taken as is
    assert meter.update(now=12.0)["disk_write"] == 500.0  # idle second: halfway down
    assert meter.update(now=14.0)["disk_write"] == 250.0


def test_meter__counter_reset_is_not_a_negative_rate():
    meter = ThroughputMeter(Scripted(5000, 100), alpha=1.0)
    meter.update(now=0.0)
    assert meter.update(now=1.0)["disk_write"] == 0.0


def test_saturated__at_eighty_percent_of_capacity_per_direction():
    capacity = {"disk_write": 1000.0, "net_tx": 1000.0}
    rates = {"disk_write": 800.0, "net_tx": 799.0, "disk_read": 10**9}  # read: no capacity

    assert saturated(rates, capacity) == {"disk_write"}
    assert report(rates, capacity)["disk_read"] == {
        "rate": 10**9,
        "capacity": None,
        "saturated": False,
        "budget": None,
    }


@pytest.mark.parametrize(
    ("rate", "left"),
    [
        (0.0, None),  # idle: 1,600,000 bytes in the 2 s window, nothing held back
        (399_999.0, None),  # half the budget or more is free: nothing held back yet
        (500_000.0, 600_000),  # (800,000 - 500,000) bytes/s over 2 s
        (800_000.0, 0),  # at 80% of capacity: saturated, no budget
        (3_000_000.0, 0),
    ],
)
def test_budget__bytes_left_in_the_window_below_eighty_percent(rate, left):
    found = budget({"disk_write": rate}, {"disk_write": 1_000_000.0})
    assert found.get("disk_write") == left


def test_budget__directions_without_capacity_have_none():
    assert budget({"net_rx": 10.0**12}, {"disk_write": 1_000.0}) == {}


def test_over_budget__compares_declared_bytes_per_direction():
    budgets = {"disk_write": 600_000, "net_tx": 0}
    assert over_budget({"disk_write": 600_000}, budgets) == []  # fits exactly
    assert over_budget({"disk_write": 600_001}, budgets) == ["disk_write"]
    assert over_budget({"disk_read": 10**9}, budgets) == []  # reads are not short
    assert over_budget({"disk_write": 10**9, "net_tx": 1}, budgets) == ["disk_write", "net_tx"]


def test_report__carries_the_budget_of_a_busy_direction():
    found = report({"disk_write": 500_000.0}, {"disk_write": 1_000_000.0})["disk_write"]
    assert (found["saturated"], found["budget"]) == (False, 600_000)


@pytest.mark.parametrize(
    "value",
    [{"disk": 1}, {"disk_write": 0}, {"disk_write": -5}, {"disk_write": True}, [1], "fast"],
)
def test_capacity__bad_values_are_rejected_by_name(value):
    with pytest.raises(ValidationError, match="IO_CAPACITY"):
        parse_capacity(value)


def test_capacity__none_means_nothing_is_budgeted():
    assert parse_capacity(None) == {}
    assert parse_capacity({"net_rx": 125_000_000}) == {"net_rx": 125e6}


class Counters:
    """Cumulative disk counters: ``reads`` / ``writes`` bytes more at each reading."""

    def __init__(self, reads: int, writes: int) -> None:
        self.step = {"disk_read": reads, "disk_write": writes}
        self.total = dict.fromkeys(self.step, 0)

    def counters(self) -> dict[str, int]:
        for direction, n in self.step.items():
            self.total[direction] += n
        return dict(self.total)


def test_disk_pressure__busier_direction_over_its_capacity(monkeypatch):
    ticks = iter([10.0, 11.0])
    monkeypatch.setattr("taskmill_django.policy.pressure.time.monotonic", lambda: next(ticks))
    source = DiskPressure(
        ThroughputMeter(Counters(reads=300, writes=600)),
        {"disk_read": 1000.0, "disk_write": 2000.0},
    )

    assert source.pressure() == 0.0  # the first reading is a baseline
    assert source.pressure() == pytest.approx(0.3)  # reads: 300 of 1000 per second


def test_disk_pressure__without_a_disk_capacity_reads_zero(monkeypatch):
    ticks = iter([10.0, 11.0])
    monkeypatch.setattr("taskmill_django.policy.pressure.time.monotonic", lambda: next(ticks))
    source = DiskPressure(ThroughputMeter(Counters(reads=10**9, writes=10**9)), {"net_rx": 1.0})

    source.pressure()
    assert source.pressure() == 0.0


def test_disk_pressure__capped_at_one(monkeypatch):
    ticks = iter([10.0, 11.0])
    monkeypatch.setattr("taskmill_django.policy.pressure.time.monotonic", lambda: next(ticks))
    source = DiskPressure(ThroughputMeter(Counters(reads=0, writes=10**6)), {"disk_write": 10.0})

    source.pressure()
    assert source.pressure() == 1.0
