"""The query API of SPEC §3: TaskStore, DomainHandle, snapshots, lookups and tag queries."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from django.db.models import F
from django.utils import timezone

from taskmill_django import (
    IoBudget,
    TaskNotFound,
    TypeStats,
    UnknownTaskType,
    ValidationError,
    scheduler,
)
from taskmill_django.models import Task, TaskHistory, Worker
from taskmill_django.records import EstimatedProgress
from taskmill_django.store import workers
from tests.db.conftest import claim_one, finish
from tests.testapp.tasks import echo, keyed, other_noop, record

pytestmark = pytest.mark.django_db


def _ids(rows) -> list[int]:
    return [row.id for row in rows]


@pytest.fixture
def store():
    return scheduler.store()


@pytest.fixture
def tests_domain():
    return scheduler.domain("tests")


# --- active tasks ----------------------------------------------------------------------------


def test_store_pending_tasks__in_priority_then_fifo_order(store):
    a = record.using(priority=200).submit(n=1)
    b = record.using(priority=10).submit(n=2)
    c = record.using(priority=10).submit(n=3)
    d = record.using(priority=0).submit(n=4)
    assert _ids(store.pending_tasks()) == [d.id, b.id, c.id, a.id]
    assert _ids(store.pending_tasks(limit=2)) == [d.id, b.id]


def test_store_pending_tasks__excludes_running(store):
    record.submit_batch([{"n": 1}, {"n": 2}])
    running = claim_one()
    assert running.id not in _ids(store.pending_tasks())
    assert store.pending_count() == 1


def test_store_running_tasks__only_running_in_start_order(store):
    record.submit_batch([{"n": n} for n in range(3)])
    first, second = claim_one(), claim_one()
    Task.objects.filter(id=first.id).update(started_at=timezone.now() - timedelta(minutes=1))
    assert _ids(store.running_tasks()) == [first.id, second.id]
    assert store.running_count() == 2


def test_store_pending_by_type__filters_by_qualified_type(store):
    record.submit(n=1)
    wanted = echo.submit(value=1)
    assert _ids(store.pending_by_type("tests::echo")) == [wanted.id]
    assert store.pending_by_type("echo") == []


def test_store_paused_tasks__lists_paused_rows(store):
    outcome = record.submit(n=1)
    record.submit(n=2)
    Task.objects.filter(id=outcome.id).update(status="paused")
    assert _ids(store.paused_tasks()) == [outcome.id]
    assert store.paused_count() == 1


def test_store_task_by_id__active_row_or_none(store):
    outcome = record.submit(n=1)
    assert store.task_by_id(outcome.id).payload == {"n": 1}
    finish(claim_one())
    assert store.task_by_id(outcome.id) is None


def test_store_task_by_key__finds_active_task(store):
    outcome = record.submit(n=1)
    key = Task.objects.get().key
    assert store.task_by_key(key).id == outcome.id
    assert store.task_by_key("0" * 64) is None


def test_store_running_io_totals__sums_expected_io_of_running(store):
    record.using(expected_io=IoBudget.disk(100, 10)).submit(n=1)
    record.using(expected_io=IoBudget.net(7, 3)).submit(n=2)
    record.using(expected_io=IoBudget.disk(1000, 1000)).submit(n=3)
    claim_one()
    claim_one()
    totals = store.running_io_totals()
    assert (totals.read_bytes, totals.write_bytes) == (100, 10)
    assert (totals.net_rx_bytes, totals.net_tx_bytes) == (7, 3)


def test_store_next_run_after__earliest_delayed_pending(store):
    assert store.next_run_after() is None
    record.submit(n=0)
    record.using(run_after=timedelta(hours=2)).submit(n=1)
    soon = timezone.now() + timedelta(hours=1)
    record.using(run_after=soon).submit(n=2)
    assert store.next_run_after() == soon


def test_store_recurring_schedules__empty_without_schedules(store):
    assert store.recurring_schedules() == []


def test_scheduler_active_tasks__running_tasks_of_every_domain():
    record.submit(n=1)
    other_noop.submit()  # priority 64 by domain default: claimed first
    first, second = claim_one(), claim_one()
    record.submit(n=2)  # pending: not active in taskmill's sense

    assert sorted(_ids(scheduler.active_tasks())) == sorted([first.id, second.id])
    assert {first.domain, second.domain} == {"tests", "other"}


# --- history ---------------------------------------------------------------------------------


def _finished(history_factory, minutes_ago: float, **fields):
    return history_factory(finished_at=timezone.now() - timedelta(minutes=minutes_ago), **fields)


def test_store_history__newest_first_with_limit_and_offset(store, history_factory):
    rows = [_finished(history_factory, m) for m in (3, 2, 1)]
    assert _ids(store.history()) == [rows[2].id, rows[1].id, rows[0].id]
    assert _ids(store.history(limit=1, offset=1)) == [rows[1].id]


def test_store_history_by_type__filters_and_limits(store, history_factory):
    old = _finished(history_factory, 2, task_type="tests::echo")
    new = _finished(history_factory, 1, task_type="tests::echo")
    _finished(history_factory, 0, task_type="tests::record")
    assert _ids(store.history_by_type("tests::echo")) == [new.id, old.id]
    assert _ids(store.history_by_type("tests::echo", limit=1)) == [new.id]


def test_store_history_by_key__every_run_of_a_key(store):
    first = record.submit(n=1)
    finish(claim_one())
    second = record.submit(n=1)
    finish(claim_one())
    record.submit(n=2)
    key = TaskHistory.objects.get(id=first.id).key
    assert set(_ids(store.history_by_key(key))) == {first.id, second.id}


def test_store_failed_tasks__failed_and_dead_letter_only(store, history_factory):
    failed = _finished(history_factory, 3, status="failed")
    dead = _finished(history_factory, 2, status="dead_letter")
    for status in ("completed", "cancelled", "superseded", "expired", "dependency_failed"):
        _finished(history_factory, 1, status=status)
    assert _ids(store.failed_tasks()) == [dead.id, failed.id]
    assert _ids(store.failed_tasks(limit=1)) == [dead.id]


def test_store_history_stats__aggregates_per_type(store, history_factory):
    kw = {"task_type": "tests::echo"}
    history_factory(duration_ms=100, read_bytes=10, write_bytes=1, **kw)
    history_factory(duration_ms=300, read_bytes=30, write_bytes=3, **kw)
    history_factory(status="dead_letter", duration_ms=5000, read_bytes=20, write_bytes=2, **kw)
    history_factory(status="failed", duration_ms=None, read_bytes=0, write_bytes=0, **kw)
    history_factory(task_type="tests::record", duration_ms=9999)
    stats = store.history_stats("tests::echo")
    assert isinstance(stats, TypeStats)
    assert stats.count == 4
    assert stats.avg_duration_ms == pytest.approx(200.0)  # completed runs only
    assert stats.avg_read_bytes == pytest.approx(20.0)  # so is the IO
    assert stats.avg_write_bytes == pytest.approx(2.0)
    assert stats.failure_rate == pytest.approx(0.5)


def test_store_history_stats__unknown_type_is_all_zero(store):
    assert store.history_stats("tests::nothing") == TypeStats(0, 0.0, 0.0, 0.0, 0.0)


def test_store_avg_throughput__bytes_per_second_of_completed_runs(store, history_factory):
    kw = {"task_type": "tests::echo"}
    _finished(history_factory, 3, duration_ms=1000, read_bytes=1000, write_bytes=0, **kw)
    _finished(history_factory, 2, duration_ms=1000, read_bytes=2000, write_bytes=1000, **kw)
    _finished(history_factory, 1, status="failed", duration_ms=1, read_bytes=10**9, **kw)
    _finished(history_factory, 1, duration_ms=0, read_bytes=10**9, **kw)
    assert store.avg_throughput("tests::echo") == pytest.approx((1500.0, 500.0))


def test_store_avg_throughput__limit_uses_newest_runs(store, history_factory):
    kw = {"task_type": "tests::echo", "duration_ms": 1000}
    _finished(history_factory, 2, read_bytes=1000, **kw)
    _finished(history_factory, 1, read_bytes=5000, **kw)
    assert store.avg_throughput("tests::echo", limit=1) == pytest.approx((5000.0, 0.0))


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda h: h.pending_tasks(limit=-1), "limit"),
        (lambda h: h.history(limit=-1), "limit"),
        (lambda h: h.history(offset=-5), "offset"),
        (lambda h: h.history_by_type("tests::echo", limit=-1), "limit"),
        (lambda h: h.failed_tasks(limit=-1), "limit"),
        (lambda h: h.avg_throughput("tests::echo", limit=-1), "limit"),
        (lambda h: h.dead_letter_tasks(limit=-1), "limit"),
        (lambda h: h.dead_letter_tasks(offset=-1), "offset"),
        (lambda h: h.history(limit="10"), "limit"),
        (lambda h: h.prune_history_by_count(-1), "keep"),
    ],
)
def test_query_api__negative_limits_and_offsets_name_the_argument(tests_domain, call, field):
    with pytest.raises(ValidationError) as info:
        call(tests_domain)
    assert info.value.field == field


def test_store_avg_throughput__no_runs_is_zero(store):
    assert store.avg_throughput("tests::echo") == (0.0, 0.0)


# --- scheduler.task and lookups --------------------------------------------------------------


def test_scheduler_task__active_then_history():
    outcome = record.submit(n=1)
    assert isinstance(scheduler.task(outcome.id), Task)
    finish(claim_one())
    row = scheduler.task(outcome.id)
    assert isinstance(row, TaskHistory)
    assert row.status == "completed"


def test_scheduler_task__unknown_id_raises():
    with pytest.raises(TaskNotFound, match="4242"):
        scheduler.task(4242)


def test_task_lookup__active_task_by_explicit_key():
    outcome = record.using(key="report-1").submit(n=1)
    found = scheduler.task_lookup("tests::record", "report-1")
    assert found.state == "active"
    assert found.record.id == outcome.id


def test_task_lookup__finds_key_function_keys():
    outcome = keyed.submit(path="a.png", size=64)
    assert scheduler.task_lookup("tests::keyed", "a.png").record.id == outcome.id


def test_task_lookup__finished_task_is_in_history():
    outcome = record.using(key="report-1").submit(n=1)
    finish(claim_one())
    found = scheduler.task_lookup("tests::record", "report-1")
    assert (found.state, found.record.id) == ("history", outcome.id)


def test_task_lookup__newest_history_row_wins():
    record.using(key="report-1").submit(n=1)
    finish(claim_one())
    second = record.using(key="report-1").submit(n=2)
    finish(claim_one())
    assert scheduler.task_lookup("tests::record", "report-1").record.id == second.id


def test_task_lookup__unknown_key_is_not_found():
    found = scheduler.task_lookup("tests::record", "nothing")
    assert (found.state, found.record) == ("not_found", None)


def test_task_lookup__same_key_of_another_type_is_not_found():
    record.using(key="report-1").submit(n=1)
    assert scheduler.task_lookup("tests::echo", "report-1").state == "not_found"


def test_task_lookup__unknown_type_raises():
    with pytest.raises(UnknownTaskType):
        scheduler.task_lookup("tests::nope", "k")


def test_lookup_typed__finds_task_by_payload():
    outcome = record.submit(n=7)
    found = scheduler.lookup_typed(record, n=7)
    assert (found.state, found.record.id) == ("active", outcome.id)
    assert scheduler.lookup_typed(record, n=8).state == "not_found"


def test_lookup_typed__uses_key_function():
    outcome = keyed.submit(path="a.png", size=64)
    assert scheduler.lookup_typed(keyed, path="a.png", size=1).record.id == outcome.id


def test_lookup_typed__history_after_completion():
    outcome = record.submit(n=7)
    finish(claim_one())
    found = scheduler.lookup_typed(record, n=7)
    assert (found.state, found.record.id) == ("history", outcome.id)


# --- snapshots and workers -------------------------------------------------------------------


def test_snapshot__counts_by_status_and_domain():
    record.submit_batch([{"n": n} for n in range(3)])
    dep = other_noop.submit()
    echo.using(depends_on=[dep.id]).submit(value=1)
    running = claim_one(domains=["tests"])
    snap = scheduler.snapshot()
    assert (snap.pending_count, snap.running_count, snap.blocked_count) == (3, 1, 1)
    assert (snap.paused_count, snap.waiting_count) == (0, 0)
    assert snap.counts_by_domain == {
        "tests": {"pending": 2, "running": 1, "blocked": 1},
        "other": {"pending": 1},
    }
    assert [r.id for r in snap.running] == [running.id]
    assert snap.running[0].task_type == "tests::record"


def test_snapshot__of_domain_counts_only_that_domain():
    record.submit(n=1)
    other_noop.submit()
    claim_one(domains=["other"])
    snap = scheduler.domain("other").snapshot()
    assert (snap.pending_count, snap.running_count) == (0, 1)
    assert snap.counts_by_domain == {"other": {"running": 1}}
    assert [r.task_type for r in snap.running] == ["other::noop"]


def test_snapshot__empty_queue():
    snap = scheduler.snapshot()
    assert (snap.pending_count, snap.running_count, snap.running) == (0, 0, [])
    assert snap.counts_by_domain == {}


def test_snapshot__lists_workers_with_liveness():
    alive = workers.register_worker("alive", os.getpid(), 4, None, claim_ahead=4)
    silent = workers.register_worker("silent", os.getpid(), 2, ["tests"])
    workers.heartbeat(alive, 3)
    Worker.objects.filter(id=silent).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    infos = {w.name: w for w in scheduler.snapshot().workers}
    assert infos["alive"].is_alive is True
    assert (infos["alive"].running_count, infos["alive"].concurrency) == (3, 4)
    assert (infos["alive"].claim_ahead, infos["silent"].claim_ahead) == (4, 0)
    assert infos["alive"].id == str(alive)
    assert infos["silent"].is_alive is False
    assert infos["silent"].heartbeat_age_seconds > 3000


# --- DomainHandle scoping --------------------------------------------------------------------


def test_domain_handle__counts_and_lists_only_its_domain(tests_domain):
    mine = record.submit(n=1)
    other_noop.submit()
    assert tests_domain.pending_count() == 1
    assert _ids(tests_domain.pending_tasks()) == [mine.id]
    assert tests_domain.task_by_id(Task.objects.get(domain="other").id) is None


def test_domain_handle__active_tasks_are_its_running_tasks(tests_domain):
    record.submit_batch([{"n": 1}, {"n": 2}])
    other_noop.submit()
    running = claim_one(domains=["tests"])
    claim_one(domains=["other"])

    assert _ids(tests_domain.active_tasks()) == [running.id]


def test_domain_handle__history_and_failures_only_its_domain(tests_domain, history_factory):
    mine = history_factory(status="failed")
    history_factory(status="failed", domain="other", task_type="other::noop")
    assert _ids(tests_domain.history()) == [mine.id]
    assert _ids(tests_domain.failed_tasks()) == [mine.id]


def test_domain_handle__next_run_after_only_its_domain(tests_domain):
    other_noop.using(run_after=timedelta(minutes=5)).submit()
    assert tests_domain.next_run_after() is None


def test_domain_handle__history_by_type_only_its_domain(tests_domain, history_factory):
    history_factory(domain="other", task_type="other::noop")
    assert tests_domain.history_by_type("other::noop") == []


def test_domain_handle__dead_letter_tasks_newest_first_paged(tests_domain, history_factory):
    old = _finished(history_factory, 3, status="dead_letter")
    new = _finished(history_factory, 1, status="dead_letter")
    _finished(history_factory, 2, status="failed")
    _finished(history_factory, 0, status="dead_letter", domain="other", task_type="other::noop")
    assert _ids(tests_domain.dead_letter_tasks()) == [new.id, old.id]
    assert _ids(tests_domain.dead_letter_tasks(limit=1, offset=1)) == [old.id]


def test_domain_handle__estimated_progress_of_its_running_tasks(tests_domain):
    record.submit_batch([{"n": 1}, {"n": 2}])
    other_noop.submit()
    task = claim_one(domains=["tests"])
    claim_one(domains=["other"])
    Task.objects.filter(id=task.id).update(progress=0.25, progress_at=F("started_at"))

    assert tests_domain.estimated_progress() == [
        EstimatedProgress(task.id, "tests::record", 0.25, None, 0.25)
    ]


# --- tag queries -----------------------------------------------------------------------------


@pytest.fixture
def tagged():
    """Four tagged tests:: tasks (one running) and one tagged other:: task."""
    a = record.using(tags={"tenant": "a", "user.id": "1"}).submit(n=1)
    b = record.using(tags={"tenant": "a", "user.name": "bob"}).submit(n=2)
    c = record.using(tags={"tenant": "b", "user.id": "2"}).submit(n=3)
    d = record.using(tags={"region": "eu"}).submit(n=4)
    o = other_noop.using(tags={"tenant": "a", "user.id": "1"}).submit()
    claim_one(domains=["tests"])  # a is running
    return {"a": a.id, "b": b.id, "c": c.id, "d": d.id, "o": o.id}


def test_task_ids_by_tags__every_filter_must_match(tests_domain, tagged):
    assert tests_domain.task_ids_by_tags({"tenant": "a"}) == [tagged["a"], tagged["b"]]
    assert tests_domain.task_ids_by_tags({"tenant": "a", "user.id": "1"}) == [tagged["a"]]
    assert tests_domain.task_ids_by_tags({"tenant": "z"}) == []


def test_task_ids_by_tags__status_filter(tests_domain, tagged):
    assert tests_domain.task_ids_by_tags({"tenant": "a"}, status="pending") == [tagged["b"]]
    assert tests_domain.task_ids_by_tags({"tenant": "a"}, status="running") == [tagged["a"]]


def test_count_by_tag__per_value(tests_domain, tagged):
    assert tests_domain.count_by_tag("tenant") == {"a": 2, "b": 1}
    assert tests_domain.count_by_tag("tenant", status="pending") == {"a": 1, "b": 1}
    assert tests_domain.count_by_tag("missing") == {}


def test_tag_values__value_count_pairs_most_common_first(tests_domain, tagged):
    record.using(tags={"tenant": "c"}).submit(n=5)
    assert tests_domain.tag_values("tenant") == [("a", 2), ("b", 1), ("c", 1)]
    assert tests_domain.tag_values("region") == [("eu", 1)]
    assert tests_domain.tag_values("missing") == []


def test_tag_keys_by_prefix__distinct_and_sorted(tests_domain, tagged):
    assert tests_domain.tag_keys_by_prefix("user.") == ["user.id", "user.name"]
    assert tests_domain.tag_keys_by_prefix("nope") == []


def test_task_ids_by_tag_key_prefix__any_key_with_prefix(tests_domain, tagged):
    expected = [tagged["a"], tagged["b"], tagged["c"]]
    assert tests_domain.task_ids_by_tag_key_prefix("user.") == expected
    assert tests_domain.task_ids_by_tag_key_prefix("user.", status="running") == [tagged["a"]]


def test_tag_key_prefix_queries__letter_case_counts(tests_domain):
    upper = record.using(tags={"User.id": "1"}).submit(n=1)
    lower = record.using(tags={"user.id": "2"}).submit(n=2)

    assert tests_domain.tag_keys_by_prefix("user.") == ["user.id"]
    assert tests_domain.task_ids_by_tag_key_prefix("User.") == [upper.id]
    assert tests_domain.count_by_tag_key_prefix("user.") == 1
    assert tests_domain.cancel_by_tag_key_prefix("user.") == [lower.id]


def test_count_by_tag_key_prefix__counts_tasks_not_tags(tests_domain, tagged):
    record.using(tags={"user.id": "9", "user.name": "x"}).submit(n=5)
    assert tests_domain.count_by_tag_key_prefix("user.") == 4
    assert tests_domain.count_by_tag_key_prefix("user.", status="pending") == 3


def test_tag_queries__other_domain_sees_its_own(tagged):
    other = scheduler.domain("other")
    assert other.task_ids_by_tags({"tenant": "a"}) == [tagged["o"]]
    assert other.count_by_tag("tenant") == {"a": 1}
    assert other.tag_keys_by_prefix("user.") == ["user.id"]
    assert other.count_by_tag_key_prefix("user.") == 1
