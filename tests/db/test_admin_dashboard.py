"""The dashboard's numbers (taskmill_django.dashboard): SQL aggregates over history and tasks."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from taskmill_django import scheduler
from taskmill_django.models import RateBucket, Task
from taskmill_django.policy.ratelimit import RateLimit
from taskmill_django.read import dashboard
from taskmill_django.store import workers
from tests.db.conftest import claim_one
from tests.testapp.tasks import record

pytestmark = pytest.mark.django_db

START = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def at(minute: float) -> datetime:
    return START + timedelta(minutes=minute)


def test_window_start__last_minute_is_the_current_one():
    now = datetime(2030, 1, 1, 12, 59, 42, tzinfo=UTC)
    assert dashboard.window_start(now, 60) == START


def test_throughput__per_minute_and_domain(history_factory):
    history_factory(domain="tests", finished_at=at(0.5))
    history_factory(domain="tests", finished_at=at(0.7))
    history_factory(domain="tests", finished_at=at(59.2), status="dead_letter")
    history_factory(domain="other", task_type="other::noop", finished_at=at(3), status="failed")
    history_factory(domain="tests", finished_at=at(3), status="cancelled")  # neither
    history_factory(domain="tests", finished_at=at(-1))  # before the window
    series = {s.name: s for s in dashboard.throughput_by_domain(START, 60)}
    assert series["tests"].completed[0] == 2
    assert series["tests"].failed[59] == 1
    assert sum(series["tests"].completed) == 2
    assert series["other"].failed[3] == 1
    assert sum(series["flows"].completed) == 0  # registered domains always have a series


def test_queue_depth__most_unfinished_in_each_minute_from_arrivals_and_departures(
    history_factory,
):
    # Created before the window, finished in minute 10.
    history_factory(created_at=at(-30), finished_at=at(10.5))
    # Created in minute 2, finished in minute 5.
    history_factory(created_at=at(2.1), finished_at=at(5.2))
    # Still active: one from before the window, one created in minute 20.
    old = record.submit(n=1)
    new = record.submit(n=2)
    Task.objects.filter(id=old.id).update(created_at=at(-5))
    Task.objects.filter(id=new.id).update(created_at=at(20.3))
    depth = dashboard.queue_depth(START, 60, active_now=2)
    assert depth[0] == 2  # the old history row and the old active task
    assert depth[2] == 3
    assert (depth[5], depth[6]) == (3, 2)  # there at the start of minute 5, gone after
    assert (depth[10], depth[11]) == (2, 1)
    assert depth[20] == 2
    assert depth[59] == 2


def test_queue_depth__work_that_comes_and_goes_within_a_minute_shows(history_factory):
    for n in range(4):  # four tasks of 10 s each, one after the other, within minute 30
        history_factory(created_at=at(30 + n / 6), finished_at=at(30 + (n + 0.9) / 6))
    history_factory(created_at=at(40.2), finished_at=at(40.2))  # done in the same second

    depth = dashboard.queue_depth(START, 60, active_now=0)

    assert (depth[29], depth[30], depth[31]) == (0, 1, 0)
    assert depth[40] == 1


def test_type_rows__window_stats_and_percentiles(history_factory):
    now = timezone.now()
    for n in range(1, 11):
        history_factory(task_type="tests::record", duration_ms=n * 10, read_bytes=100)
    history_factory(task_type="tests::record", status="dead_letter", duration_ms=None)
    history_factory(
        task_type="tests::record", duration_ms=5000, finished_at=now - timedelta(days=2)
    )
    start = dashboard.window_start(now, 60)
    rows = {r.task_type: r for r in dashboard.type_rows(start)}
    row = rows["tests::record"]
    assert (row.runs, row.completed, row.failures) == (11, 10, 1)
    assert row.failure_rate == pytest.approx(1 / 11)
    assert row.avg_duration_ms == pytest.approx(55.0)
    assert row.avg_read_bytes == pytest.approx(1000 / 11)
    # Percentiles cover the newest completed runs of any age: 10..100 and the old 5000.
    assert row.sample_size == 11
    assert row.p50_ms == pytest.approx(60.0)
    assert "tests::noop" not in rows  # never ran


def test_duration_percentiles__use_only_the_newest_sample(history_factory):
    now = timezone.now()
    for n, duration in enumerate([1000, 10, 20, 30]):
        history_factory(
            task_type="tests::echo", duration_ms=duration, finished_at=now - timedelta(hours=4 - n)
        )
    p50, p95, size = dashboard.duration_percentiles("tests::echo", sample=3)
    assert size == 3
    assert p50 == pytest.approx(20.0)
    assert p95 == pytest.approx(29.0)


def test_duration_percentiles__none_without_runs():
    assert dashboard.duration_percentiles("tests::echo") == (None, None, 0)


def test_running_rows__worker_name_and_estimated_progress(history_factory):
    history_factory(task_type="tests::record", duration_ms=60_000)
    worker_id = workers.register_worker("w-est", 1, 1, None)
    record.submit(n=1)
    task = claim_one(worker_id=worker_id)
    Task.objects.filter(id=task.id).update(started_at=timezone.now() - timedelta(seconds=30))
    board = dashboard.collect()
    (row,) = board.running
    assert row.worker_name == "w-est"
    assert row.is_estimated
    assert row.progress == pytest.approx(0.5, abs=0.05)


def test_running_rows__reported_progress_wins():
    record.submit(n=1)
    task = claim_one()
    Task.objects.filter(id=task.id).update(progress=0.25, progress_message="a quarter")
    (row,) = dashboard.collect().running
    assert (row.progress, row.is_estimated, row.message) == (0.25, False, "a quarter")


def test_rate_limit_rows__tokens_refill_since_last_use():
    scheduler.set_rate_limit("tests::record", RateLimit.per_second(2).with_burst(10))
    RateBucket.objects.create(
        name="rate_limit:tests::record",
        tokens=1.0,
        refreshed_at=timezone.now() - timedelta(seconds=2),
    )
    policy = dashboard.current_policy(scheduler.snapshot())
    (row,) = dashboard.rate_limit_rows(policy, timezone.now())
    assert (row.scope, row.name, row.rate, row.burst) == ("type", "tests::record", 2.0, 10.0)
    assert row.tokens == pytest.approx(5.0, abs=0.2)


def test_group_rows__tasks_caps_pauses_and_weights():
    record.using(group="busy").submit(n=1)
    scheduler.set_group_limit("capped", 3)
    scheduler.pause_group("held")
    scheduler.set_group_weight("heavy", 2.0)
    scheduler.set_group_rate_limit("slow", RateLimit.per_second(1))
    snapshot = scheduler.snapshot()
    policy = dashboard.current_policy(snapshot)
    limits = dashboard.rate_limit_rows(policy, timezone.now())
    rows = {g.name: g for g in dashboard.group_rows(snapshot, policy, limits)}
    assert set(rows) == {"busy", "capped", "held", "heavy", "slow"}
    assert rows["busy"].counts["pending"] == 1
    assert rows["capped"].cap == 3
    assert rows["held"].is_paused and rows["held"].paused_until is None
    assert rows["heavy"].weight == 2.0
    assert rows["slow"].rate_limit is not None and rows["slow"].rate_limit.rate == 1.0


def test_collect__totals_domains_and_json():
    record.submit(n=1)
    record.submit(n=2)
    claim_one()
    board = dashboard.collect()
    assert board.totals["pending"] == 1 and board.totals["running"] == 1
    tests_row = next(d for d in board.domains if d.name == "tests")
    assert tests_row.counts["running"] == 1
    encoded = json.loads(json.dumps(dashboard.to_json(board)))
    assert encoded["snapshot"]["running_count"] == 1
    assert isinstance(encoded["generated_at"], str)


def test_tag_counts__keys_by_prefix_and_values():
    record.using(tags={"customer": "acme", "cost": "1"}).submit(n=1)
    record.using(tags={"customer": "acme"}).submit(n=2)
    record.using(tags={"customer": "globex"}).submit(n=3)
    keys = dashboard.tag_keys("c")
    assert [(k.value, k.count) for k in keys] == [("cost", 1), ("customer", 3)]
    values = dashboard.tag_values("customer")
    assert [(v.value, v.count) for v in values] == [("acme", 2), ("globex", 1)]
    assert dashboard.tag_keys("c", history=True) == []
