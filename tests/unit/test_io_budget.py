"""IO budgets: counters from /proc, smoothed rates, saturation and the IO_CAPACITY setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskmill_django import ValidationError
from taskmill_django.policy.io import (
    ProcSampler,
    ThroughputMeter,
    parse_capacity,
    report,
    saturated,
)

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
    }


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
