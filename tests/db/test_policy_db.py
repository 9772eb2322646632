"""Cluster-wide policy in the store: gated claims (caps, pauses, rate limits, fair shares,
aging, backpressure), preemption, runtime setters, snapshots, metrics and system checks.

Claims go through ``claim_batch(worker_id, n, policy=control.load_policy())``, exactly as a
worker makes them after reloading its policy; different worker ids stand for different
processes, since every count is read from the database, each with the ``ClaimState`` its
claim loop would keep.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.db import connection, transaction
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from taskmill_django import (
    Domain,
    IoBudget,
    Priority,
    RateLimit,
    UnknownTaskType,
    ValidationError,
    scheduler,
    signals,
)
from taskmill_django.checks import check_settings
from taskmill_django.models import PausedGroup, RateBucket, SchedulerSetting, Task, TaskHistory
from taskmill_django.policy import config
from taskmill_django.policy.config import Policy
from taskmill_django.store import claim, control, lifecycle, workers
from taskmill_django.store.claim import ClaimState
from tests.db.conftest import executed_plans, finish, plan_nodes, round_trips, touching
from tests.testapp import pressure as test_pressure
from tests.testapp.tasks import echo, other_wf_step, progress, record, sleep

pytestmark = pytest.mark.django_db

FIXED_PRESSURE = "tests.testapp.pressure.Fixed"


def taskmill(**extra: Any) -> override_settings:
    """The test settings plus ``extra`` TASKMILL keys."""
    return override_settings(TASKMILL={**settings.TASKMILL, **extra})


# The claim state of each worker id (each stands for a worker process, which keeps its own).
claim_states: dict[uuid.UUID, ClaimState] = {}


@pytest.fixture(autouse=True)
def _forget_claim_states():
    yield
    claim_states.clear()


def state_of(worker_id: uuid.UUID) -> ClaimState:
    return claim_states.setdefault(worker_id, ClaimState())


def claim_now(
    limit: int = 10, worker_id: uuid.UUID | None = None, policy: Policy | None = None
) -> list[Task]:
    """Claim as a worker would right after reloading its policy."""
    if policy is None:
        policy = control.load_policy()
    worker_id = worker_id or uuid.uuid4()
    return claim.claim_batch(worker_id, limit, policy=policy, state=state_of(worker_id))


def _each_in_a_thread(work: Callable[[uuid.UUID], None], worker_ids: list[uuid.UUID]) -> None:
    """Run ``work`` for each worker at once, one thread (and connection) each."""
    threads = [threading.Thread(target=work, args=(w,)) for w in worker_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)


def claimed_ids(tasks: list[Task]) -> set[int]:
    return {t.id for t in tasks}


def submit_records(count: int, start: int = 0, **options: Any) -> list[int]:
    call = record.using(**options) if options else record
    return [call.submit(n=start + i).id for i in range(count)]


def running_count(**filters: Any) -> int:
    return Task.objects.filter(status="running", **filters).count()


# --- concurrency caps ------------------------------------------------------------------------


def test_global_cap__holds_across_workers():
    scheduler.set_max_concurrency(2)
    submit_records(5)

    first = claim_now(10)
    second = claim_now(10)

    assert (len(first), second) == (2, [])
    assert running_count() == 2


def test_global_cap__a_finished_task_frees_its_slot():
    scheduler.set_max_concurrency(2)
    submit_records(4)
    running = claim_now(10)

    finish(running[0])

    assert len(claim_now(10)) == 1
    assert running_count() == 2


def test_global_cap__none_removes_it():
    scheduler.set_max_concurrency(1)
    submit_records(3)
    assert len(claim_now(10)) == 1

    scheduler.set_max_concurrency(None)

    assert len(claim_now(10)) == 2


def test_global_cap__far_from_binding_claims_like_no_cap_and_holds_when_a_worker_joins():
    # Worker a alone (2 slots) cannot reach a cap of 3: its claims skip the count. Once b
    # joins, the cap can bind, and every claim counts again under the exclusive lock.
    scheduler.set_max_concurrency(3)
    submit_records(8)
    a = workers.register_worker("a", 1, 2, None)
    assert len(claim_now(2, worker_id=a)) == 2
    assert not state_of(a).take_deferred()

    b = workers.register_worker("b", 2, 2, None)
    assert len(claim_now(2, worker_id=b)) == 1  # 2 running + 1 = the cap
    finish(Task.objects.filter(worker_id=a).first())

    if connection.vendor != "sqlite":
        # a's next claim would count under the shared lock: it gives way, and says so once.
        # (SQLite runs one writer at a time, so there every claim counts in place.)
        assert claim_now(1, worker_id=a) == []
        assert state_of(a).take_deferred()
        assert not state_of(a).take_deferred()
    assert len(claim_now(1, worker_id=a)) == 1
    assert running_count() == 3
    assert claim_now(1, worker_id=a) == []
    assert not state_of(a).take_deferred()  # an ordinary "nothing fits" this time


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "database",
    [
        pytest.param("postgresql", marks=pytest.mark.postgres_only),
        pytest.param("mysql", marks=pytest.mark.mariadb_only),
    ],
)
def test_global_cap__holds_when_workers_claiming_ahead_claim_at_once(database):
    # (SQLite runs one writer at a time: claims never meet there.)
    assert connection.vendor == database
    # Two workers of 4 threads that claim up to 4 tasks ahead each: 16 tasks between them,
    # over a cap of 14. Each must count the other's queue among the slots that could claim
    # meanwhile, or both find the cap out of reach under the shared lock and claim 8 each.
    scheduler.set_max_concurrency(14)
    SchedulerSetting.objects.create(name=claim.CLAIM_LOCK, value=None)  # as after any claim
    submit_records(40)
    ids = [workers.register_worker(f"w{i}", i, 4, None, claim_ahead=4) for i in range(2)]
    barrier = threading.Barrier(len(ids))
    claimed: list[int] = []

    def work(worker_id: uuid.UUID) -> None:
        try:
            policy, state = control.load_policy(), ClaimState()
            state.exclusive = False  # as after an earlier claim that found the cap far away
            with transaction.atomic():
                claimed.append(len(claim.claim_batch(worker_id, 8, policy=policy, state=state)))
                barrier.wait(10)  # both claims made before either commits
            while state.take_deferred():  # gave way to the exclusive lock: claim again
                with transaction.atomic():
                    claimed.append(len(claim.claim_batch(worker_id, 8, policy=policy, state=state)))
        finally:
            connection.close()

    _each_in_a_thread(work, ids)

    assert running_count() == sum(claimed) <= 14, claimed


def test_caps__a_cap_out_of_reach_of_every_live_slot_is_left_out_of_the_claim():
    submit_records(15, group="a")
    w = workers.register_worker("w", 1, 20, None)
    with round_trips() as plain_trips, CaptureQueriesContext(connection) as plain:
        assert len(claim.claim_batch(w, 5)) == 5
    scheduler.set_max_concurrency(100)
    scheduler.domain("tests").set_max_concurrency(50)
    scheduler.set_group_limit("a", 40)
    policy = control.load_policy()
    assert len(claim_now(5, worker_id=w, policy=policy)) == 5  # the first also makes the lock row

    with round_trips() as gated_trips, CaptureQueriesContext(connection) as gated:
        assert len(claim_now(5, worker_id=w, policy=policy)) == 5

    # The plain claim's statements plus the lock and one read of the load: no candidate query,
    # no claim of chosen ids. On PostgreSQL all of it travels in one round trip, as the plain
    # claim does.
    def reads_tasks(sql: str) -> bool:
        return f"FROM {connection.ops.quote_name('taskmill_task')}" in sql

    plain_sql = [q["sql"] for q in plain.captured_queries if reads_tasks(q["sql"])]
    gated_sql = [q["sql"] for q in gated.captured_queries if reads_tasks(q["sql"])]
    if connection.vendor == "postgresql":
        assert len(gated_trips) == len(plain_trips) == 1
        assert any("FOR SHARE" in q["sql"] for q in gated.captured_queries)
        assert any("UPDATE" in sql for sql in gated_sql)
    else:
        assert len(gated_sql) == len(plain_sql) + 1, gated_sql


def test_run_together__returns_the_rows_of_each_statement_in_order():
    """The gated claim reads the lock, the load and the buckets this way: in one round trip
    on PostgreSQL with psycopg 3, one by one elsewhere."""
    from taskmill_django.store.db import run_together

    record.submit(n=1)
    rows = run_together(
        [("SELECT COUNT(*) FROM taskmill_task WHERE priority >= %s", [0]), ("SELECT %s", ["x"])]
    )
    assert rows == [[(1,)], [("x",)]]


@taskmill(MAX_CONCURRENCY=1)
def test_global_cap__from_settings():
    submit_records(3)
    assert len(claim_now(10)) == 1
    assert claim_now(10) == []


def test_domain_cap__runtime_setter_caps_only_that_domain():
    scheduler.domain("tests").set_max_concurrency(1)
    tests_ids = submit_records(3)
    other_ids = [other_wf_step.submit(n=i).id for i in range(2)]

    got = claimed_ids(claim_now(10)) | claimed_ids(claim_now(10))

    assert len(got & set(tests_ids)) == 1
    assert set(other_ids) <= got


def test_domain_cap__declared_on_the_domain(isolated_registry):
    capped = Domain("capped_db", max_concurrency=2)

    @capped.task("work")
    def work(ctx, n: int) -> None:
        return None

    for n in range(4):
        work.submit(n=n)

    assert len(claim_now(10)) == 2
    assert claim_now(10) == []

    scheduler.domain("capped_db").set_max_concurrency(None)  # runtime override removes it

    assert len(claim_now(10)) == 2


def test_domain_cap__runtime_value_replaces_the_declared_one(isolated_registry):
    capped = Domain("capped_db", max_concurrency=1)

    @capped.task("work")
    def work(ctx, n: int) -> None:
        return None

    for n in range(5):
        work.submit(n=n)
    scheduler.domain("capped_db").set_max_concurrency(3)

    assert len(claim_now(10)) == 3


def test_group_cap__holds_across_workers_without_blocking_others():
    scheduler.set_group_limit("bucket", 2)
    grouped = submit_records(4, group="bucket")  # first in line
    ungrouped = submit_records(2, start=10)

    first = claim_now(1)
    rest = claim_now(10)
    again = claim_now(10)

    got = claimed_ids(first) | claimed_ids(rest)
    assert len(got & set(grouped)) == 2
    assert set(ungrouped) <= got
    assert again == []
    assert running_count(group_key="bucket") == 2


@taskmill(
    GROUP_CONCURRENCY={"narrow": 1},
    DEFAULT_GROUP_CONCURRENCY=2,
)
def test_group_cap__settings_and_default_for_other_groups():
    narrow = submit_records(3, group="narrow")
    wide = submit_records(3, start=10, group="wide")
    ungrouped = submit_records(3, start=20)

    got = claimed_ids(claim_now(20))

    assert len(got & set(narrow)) == 1
    assert len(got & set(wide)) == 2
    assert set(ungrouped) <= got


@taskmill(GROUP_CONCURRENCY={"g": 1})
def test_group_cap__runtime_removal_overrides_settings():
    submit_records(3, group="g")
    assert len(claim_now(10)) == 1

    scheduler.remove_group_limit("g")

    assert len(claim_now(10)) == 2
    assert SchedulerSetting.objects.get(name=config.GROUP_CAP + "g").value == config.NO_LIMIT


def test_group_cap__raised_at_runtime_admits_more():
    scheduler.set_group_limit("g", 1)
    submit_records(4, group="g")
    assert len(claim_now(10)) == 1

    scheduler.set_group_limit("g", 3)

    assert len(claim_now(10)) == 2


# --- pauses ----------------------------------------------------------------------------------


def test_pause_all__nothing_is_claimed_until_resume_all():
    submit_records(2)
    scheduler.pause_all()

    assert claim_now(10) == []

    scheduler.resume_all()

    assert len(claim_now(10)) == 2


def test_pause_all__state_is_stored_in_the_database():
    scheduler.pause_all()
    assert SchedulerSetting.objects.get(name=config.PAUSED).value is True
    assert control.load_policy().is_paused
    scheduler.resume_all()
    assert not control.load_policy().is_paused


def test_pause_domain__stops_claims_of_that_domain_only():
    handle = scheduler.domain("tests")
    tests_ids = submit_records(2)
    other_id = other_wf_step.submit(n=1).id

    handle.pause()
    got = claimed_ids(claim_now(10))

    assert got == {other_id}
    handle.resume()
    assert claimed_ids(claim_now(10)) == set(tests_ids)


def test_pause_domain__running_task_is_paused_without_spending_a_retry():
    handle = scheduler.domain("tests")
    submit_records(1)
    (task,) = claim_now(1)

    assert handle.pause() == 1
    row = Task.objects.get(id=task.id)
    assert (row.status, row.cancel_reason) == ("running", "domain_paused")

    finish(task, lifecycle.RELEASE)

    row = Task.objects.get(id=task.id)
    assert (row.status, row.pause_reason, row.retry_count) == ("paused", "domain_paused", 0)
    assert (row.lease_token, row.worker_id, row.cancel_reason) == (None, None, "")
    assert row.paused_at is not None

    assert handle.resume() == 1
    row = Task.objects.get(id=task.id)
    assert (row.status, row.pause_reason, row.paused_at) == ("pending", "", None)
    assert claimed_ids(claim_now(10)) == {task.id}


def test_pause_domain__resume_counts_the_time_spent_paused():
    submit_records(1)
    (task,) = claim_now(1)
    scheduler.domain("tests").pause()
    finish(task, lifecycle.RELEASE)
    Task.objects.filter(id=task.id).update(paused_at=timezone.now() - timedelta(seconds=100))

    scheduler.domain("tests").resume()

    assert Task.objects.get(id=task.id).paused_seconds == pytest.approx(100, abs=5)


def test_pause_domain__quick_resume_does_not_strand_a_running_task():
    submit_records(1)
    (task,) = claim_now(1)
    handle = scheduler.domain("tests")
    handle.pause()
    handle.resume()  # before the worker's next heartbeat

    finish(task, lifecycle.RELEASE)  # the worker saw the request and released the attempt

    assert Task.objects.get(id=task.id).status == "pending"


def test_pause_group__stops_claims_of_that_group_only():
    paused = submit_records(2, group="g")
    free = submit_records(2, start=10, group="h")

    scheduler.pause_group("g")

    assert claimed_ids(claim_now(10)) == set(free)
    assert scheduler.resume_group("g") is True
    assert claimed_ids(claim_now(10)) == set(paused)


def test_pause_group__submission_reports_group_paused():
    scheduler.pause_group("g")

    assert record.using(group="g").submit(n=1).group_paused is True
    assert record.using(group="h").submit(n=2).group_paused is False
    assert record.submit(n=3).group_paused is False


def test_pause_group__timed_pause_is_lifted_when_its_time_has_passed(
    received, django_capture_on_commit_callbacks
):
    resumed = received(signals.group_resumed)
    ids = submit_records(2, group="g")
    scheduler.pause_group("g", until=timezone.now() + timedelta(hours=1))
    assert claim_now(10) == []
    assert control.resume_expired_group_pauses() == []

    PausedGroup.objects.filter(group_key="g").update(
        paused_until=timezone.now() - timedelta(seconds=1)
    )

    with django_capture_on_commit_callbacks(execute=True):
        assert control.resume_expired_group_pauses() == ["g"]
    assert not PausedGroup.objects.exists()
    assert [e["sender"] for e in resumed] == ["g"]
    assert claimed_ids(claim_now(10)) == set(ids)


def test_pause_group__expired_pause_no_longer_reported_on_submit():
    scheduler.pause_group("g", until=timezone.now() + timedelta(hours=1))
    PausedGroup.objects.update(paused_until=timezone.now() - timedelta(seconds=1))

    assert record.using(group="g").submit(n=1).group_paused is False
    assert scheduler.snapshot().paused_groups == []


def test_pause_group__pausing_again_replaces_the_until():
    scheduler.pause_group("g", until=timezone.now() + timedelta(hours=1))
    scheduler.pause_group("g")

    assert PausedGroup.objects.get(group_key="g").paused_until is None


def test_pause_group__signals_after_commit(received, django_capture_on_commit_callbacks):
    paused, resumed = received(signals.group_paused), received(signals.group_resumed)
    until = timezone.now() + timedelta(minutes=5)

    with django_capture_on_commit_callbacks(execute=True):
        scheduler.pause_group("g", until=until)
        assert paused == []  # not before the pause is committed
    with django_capture_on_commit_callbacks(execute=True):
        scheduler.resume_group("g")
        scheduler.resume_group("g")  # not paused any more: no second signal

    assert [(e["sender"], e["until"]) for e in paused] == [("g", until)]
    assert [e["sender"] for e in resumed] == ["g"]


def test_pause_group__rolled_back_pause_sends_nothing(received):
    paused = received(signals.group_paused)
    with pytest.raises(RuntimeError), transaction.atomic():
        scheduler.pause_group("g")
        raise RuntimeError("the caller's transaction fails")

    assert paused == []
    assert not PausedGroup.objects.exists()


# --- rate limits -----------------------------------------------------------------------------


def test_rate_limit__empty_bucket_pushes_run_after_instead_of_blocking_others():
    scheduler.set_rate_limit("tests::record", RateLimit.per_second(1).with_burst(2))
    limited = submit_records(4)
    other = [echo.submit(value=i).id for i in range(2)]

    before = timezone.now()
    got = claimed_ids(claim_now(10))

    assert len(got & set(limited)) == 2
    assert set(other) <= got
    waiting = Task.objects.filter(id__in=limited, status="pending")
    assert waiting.count() == 2
    for row in waiting:
        assert row.run_after is not None
        assert before + timedelta(seconds=0.8) <= row.run_after <= before + timedelta(seconds=2)
    assert claimed_ids(claim_now(10)) == set()  # not due yet


def test_rate_limit__bucket_is_shared_by_every_worker():
    scheduler.set_rate_limit("tests::record", RateLimit.per_second(1).with_burst(3))
    submit_records(5)

    first = claim_now(2, worker_id=uuid.uuid4())
    second = claim_now(10, worker_id=uuid.uuid4())

    assert (len(first), len(second)) == (2, 1)
    assert RateBucket.objects.get(name=config.RATE + "tests::record").tokens < 1.0


def test_rate_limit__plenty_of_tokens_pays_type_and_group_buckets_for_what_was_claimed():
    scheduler.set_rate_limit("tests::record", RateLimit.per_minute(1).with_burst(50))
    scheduler.set_group_rate_limit("g", RateLimit.per_minute(1).with_burst(50))
    submit_records(4, group="g")
    submit_records(3, start=10)
    echo.submit(value=1)

    assert len(claim_now(10)) == 8

    tokens = dict(RateBucket.objects.values_list("name", "tokens"))
    assert tokens[config.RATE + "tests::record"] == pytest.approx(43, abs=0.1)
    assert tokens[config.GROUP_RATE + "g"] == pytest.approx(46, abs=0.1)

    # With the buckets in place (PostgreSQL: claimed first, paid just before commit).
    submit_records(5, start=100, group="g")
    assert len(claim_now(10)) == 5
    tokens = dict(RateBucket.objects.values_list("name", "tokens"))
    assert tokens[config.RATE + "tests::record"] == pytest.approx(38, abs=0.1)
    assert tokens[config.GROUP_RATE + "g"] == pytest.approx(41, abs=0.1)


def test_rate_limit__bucket_short_of_twice_the_live_slots_is_spent_under_its_lock():
    # 30 live slots, 50 tokens: claims running at once could empty it, so tokens are checked
    # under the bucket lock; the accounting is the same.
    workers.register_worker("w", 1, 30, None)
    scheduler.set_rate_limit("tests::record", RateLimit.per_minute(1).with_burst(50))
    submit_records(4)
    assert len(claim_now(2)) == 2
    assert len(claim_now(10)) == 2

    tokens = RateBucket.objects.get(name=config.RATE + "tests::record").tokens
    assert tokens == pytest.approx(46, abs=0.1)


def test_rate_limit__claims_reusing_a_policy_spend_each_token_once_down_to_an_empty_bucket():
    # Two live slots: a bucket with 4 tokens or more is paid after claiming (on PostgreSQL in
    # the claim's round trip); below that the claim is undone and tokens are taken one by one.
    w = workers.register_worker("w", 1, 2, None)
    scheduler.set_rate_limit("tests::record", RateLimit.per_minute(1).with_burst(10))
    submit_records(20)
    policy = control.load_policy()

    got = [len(claim_now(3, worker_id=w, policy=policy)) for _ in range(3)]
    with CaptureQueriesContext(connection) as last:
        got.append(len(claim_now(3, worker_id=w, policy=policy)))

    assert got == [3, 3, 3, 1]
    assert running_count() == 10
    tokens = RateBucket.objects.get(name=config.RATE + "tests::record").tokens
    assert 0 <= tokens < 0.5
    if connection.vendor == "postgresql":
        assert any("ROLLBACK TO SAVEPOINT" in q["sql"] for q in last.captured_queries)


@pytest.mark.django_db(transaction=True)
def test_rate_limit__workers_claiming_at_once_never_deadlock_nor_overspend_the_bucket():
    # 32 live slots and 12 tokens: every kind of claim (paid in its round trip, undone when
    # the balance went below zero, token by token under the bucket lock) meets the others,
    # none deadlocks, and every token spent started a task (a claim whose chosen tasks
    # another claim took first gives their tokens back), never more than the bucket held.
    scheduler.set_rate_limit("tests::record", RateLimit.per_minute(1).with_burst(12))
    submit_records(40)
    ids = [workers.register_worker(f"w{i}", i, 8, None) for i in range(4)]
    barrier = threading.Barrier(len(ids))
    got: list[int] = []

    def work(worker_id: uuid.UUID) -> None:
        try:
            policy, state = control.load_policy(), ClaimState()
            barrier.wait()
            for _ in range(4):
                with transaction.atomic():
                    got.append(len(claim.claim_batch(worker_id, 5, policy=policy, state=state)))
        finally:
            connection.close()

    _each_in_a_thread(work, ids)

    assert len(got) == 16  # every claim finished
    assert 0 < sum(got) == running_count() <= 12
    tokens = RateBucket.objects.get(name=config.RATE + "tests::record").tokens
    assert tokens >= 0
    assert sum(got) + tokens == pytest.approx(12, abs=0.1)  # (refill: one token a minute)


def test_rate_limit__bucket_refills_with_time():
    scheduler.set_rate_limit("tests::record", RateLimit.per_second(2).with_burst(2))
    submit_records(5)
    assert len(claim_now(10)) == 2

    Task.objects.filter(status="pending").update(run_after=None)
    RateBucket.objects.update(refreshed_at=timezone.now() - timedelta(seconds=1))

    assert len(claim_now(10)) == 2


def test_rate_limit__group_bucket_limits_every_type_in_the_group():
    scheduler.set_group_rate_limit("api", RateLimit.per_minute(60))  # burst 1
    grouped = [*submit_records(2, group="api"), echo.using(group="api").submit(value=1).id]
    free = submit_records(2, start=10, group="other")

    got = claimed_ids(claim_now(10))

    assert len(got & set(grouped)) == 1
    assert set(free) <= got
    assert Task.objects.filter(id__in=grouped, run_after__isnull=False).count() == 2


def test_rate_limit__token_taken_only_after_every_other_gate_passed():
    """Tasks refused by their group cap neither take a token nor get their run_after moved."""
    scheduler.set_rate_limit("tests::record", RateLimit.per_second(1).with_burst(3))
    scheduler.set_group_limit("g", 1)
    submit_records(3, group="g")

    assert len(claim_now(10)) == 1

    bucket = RateBucket.objects.get(name=config.RATE + "tests::record")
    assert bucket.tokens == pytest.approx(2.0, abs=0.05)
    assert Task.objects.filter(status="pending", run_after__isnull=False).count() == 0


def test_rate_limit__both_type_and_group_buckets_must_have_a_token():
    scheduler.set_rate_limit("tests::record", RateLimit.per_second(1).with_burst(5))
    scheduler.set_group_rate_limit("g", RateLimit.per_second(1).with_burst(1))
    submit_records(3, group="g")

    assert len(claim_now(10)) == 1

    type_bucket = RateBucket.objects.get(name=config.RATE + "tests::record")
    assert type_bucket.tokens == pytest.approx(4.0, abs=0.05)  # one taken, not three


def test_rate_limit__task_without_a_token_does_not_take_a_free_slot():
    scheduler.set_rate_limit("tests::record", RateLimit.per_second(0.1))  # burst 1
    limited = submit_records(3)
    other = echo.submit(value=1).id
    assert claimed_ids(claim_now(1)) == {limited[0]}  # the one token

    got = claimed_ids(claim_now(1))  # one free slot, and a runnable echo task waiting

    assert got == {other}


def test_rate_limit__removed_at_runtime_lifts_it():
    scheduler.set_rate_limit("tests::record", RateLimit.per_second(1))
    submit_records(3)
    assert len(claim_now(10)) == 1

    scheduler.set_rate_limit("tests::record", None)
    Task.objects.filter(status="pending").update(run_after=None)

    assert len(claim_now(10)) == 2


@taskmill(RATE_LIMITS={"tests::record": 1})
def test_rate_limit__from_settings():
    submit_records(3)
    assert len(claim_now(10)) == 1


# --- preemption ------------------------------------------------------------------------------


def urgent_sleep(n: int = 100) -> int:
    return sleep.using(priority=Priority.REALTIME).submit(seconds=1, n=n).id


def background_running(n: int = 1) -> Task:
    sleep.using(priority=Priority.BACKGROUND).submit(seconds=1, n=n)
    (task,) = claim_now(1)
    return task


def test_preemption__urgent_submission_marks_less_urgent_running_tasks():
    low = background_running()
    high = sleep.using(priority=Priority.HIGH).submit(seconds=1, n=2).id
    claim_now(1)

    urgent_sleep()

    reasons = dict(Task.objects.filter(status="running").values_list("id", "cancel_reason"))
    assert reasons == {low.id: "preempted", high: "preempted"}


def test_preemption__equally_urgent_running_task_is_left_alone():
    running = sleep.using(priority=Priority.REALTIME).submit(seconds=1, n=1).id
    claim_now(1)

    urgent_sleep()

    assert Task.objects.get(id=running).cancel_reason == ""


def test_preemption__normal_submission_preempts_nothing():
    low = background_running()

    record.submit(n=1)

    assert Task.objects.get(id=low.id).cancel_reason == ""


@taskmill(PREEMPT_PRIORITY=Priority.HIGH)
def test_preemption__threshold_from_settings():
    low = background_running()

    sleep.using(priority=Priority.HIGH).submit(seconds=1, n=2)

    assert Task.objects.get(id=low.id).cancel_reason == "preempted"


def test_preemption__released_attempt_goes_paused_with_the_same_retry_count(
    received, django_capture_on_commit_callbacks
):
    preempted = received(signals.task_preempted)
    low = background_running()
    urgent_sleep()

    with django_capture_on_commit_callbacks(execute=True):
        finish(low, lifecycle.RELEASE)

    row = Task.objects.get(id=low.id)
    assert (row.status, row.pause_reason, row.retry_count) == ("paused", "preempted", 0)
    assert (row.lease_token, row.worker_id, row.started_at, row.cancel_reason) == (
        None,
        None,
        None,
        "",
    )
    assert [e["task_id"] for e in preempted] == [low.id]


def test_preemption__retryable_failure_while_preempted_spends_no_retry():
    low = background_running()
    urgent_sleep()

    finish(low, lifecycle.RETRY, error="RetryableError: cancelled", retry_delay=5)

    row = Task.objects.get(id=low.id)
    assert (row.status, row.pause_reason, row.retry_count) == ("paused", "preempted", 0)


def test_preemption__task_that_finishes_anyway_completes():
    low = background_running()
    urgent_sleep()

    finish(low, lifecycle.COMPLETED)

    assert TaskHistory.objects.get(id=low.id).status == "completed"


def test_preemption__only_preemptors_are_claimed_while_one_is_active():
    normal = submit_records(2)
    urgent = urgent_sleep()

    policy = control.load_policy()
    got = claimed_ids(claim_now(10, policy=policy))

    assert policy.preemptor_priority == Priority.REALTIME
    assert got == {urgent}
    assert claim_now(10) == []  # still running: still preempting
    assert Task.objects.filter(id__in=normal, status="pending").count() == 2


def test_preemption__paused_tasks_resume_only_when_no_preemptor_remains():
    low = background_running()
    urgent = urgent_sleep()
    finish(low, lifecycle.RELEASE)

    assert control.resume_preempted() == 0  # preemptor pending
    (urgent_task,) = claim_now(10)
    assert urgent_task.id == urgent
    assert control.resume_preempted() == 0  # preemptor running

    finish(urgent_task)

    assert control.resume_preempted() == 1
    row = Task.objects.get(id=low.id)
    assert (row.status, row.pause_reason, row.paused_at, row.retry_count) == (
        "pending",
        "",
        None,
        0,
    )
    assert row.paused_seconds >= 0.0
    assert claimed_ids(claim_now(10)) == {low.id}


def test_preemption__resume_leaves_domain_paused_tasks_alone():
    submit_records(1)
    (task,) = claim_now(1)
    scheduler.domain("tests").pause()
    finish(task, lifecycle.RELEASE)

    assert control.resume_preempted() == 0
    assert Task.objects.get(id=task.id).status == "paused"


def test_preemption__a_delayed_urgent_task_does_not_hold_back_other_work():
    sleep.using(priority=Priority.REALTIME, run_after=timedelta(hours=1)).submit(seconds=1)
    normal = submit_records(1)

    assert claimed_ids(claim_now(10)) == set(normal)


def test_preemption__task_claimed_under_a_stale_policy_is_preempted_too():
    low = sleep.using(priority=Priority.BACKGROUND).submit(seconds=1, n=1).id
    stale = control.load_policy()  # the worker's policy, loaded just before the submission
    urgent_sleep()

    claimed = claim_now(10, policy=stale)
    assert low in claimed_ids(claimed)

    # What every worker does on its next policy reload (within one poll interval).
    fresh = control.load_policy()
    control.preempt_below(fresh.preemptor_priority)

    assert Task.objects.get(id=low).cancel_reason == "preempted"


# --- weighted fair shares --------------------------------------------------------------------


def test_fair_shares__slots_follow_group_weights():
    scheduler.set_max_concurrency(4)
    scheduler.set_group_weight("a", 3)
    scheduler.set_group_weight("b", 1)
    a = submit_records(6, group="a")
    b = submit_records(6, start=10, group="b")

    got = claimed_ids(claim_now(10))

    assert (len(got & set(a)), len(got & set(b))) == (3, 1)


def test_fair_shares__hold_when_claims_reuse_the_policy():
    # After the first claim a worker knows the live slots, and (on PostgreSQL) each group's
    # room is counted by the claim statement itself, in one round trip.
    w = workers.register_worker("w", 1, 4, None)
    scheduler.set_group_weight("a", 3)
    scheduler.set_group_weight("b", 1)
    a = submit_records(6, group="a")
    b = submit_records(6, start=10, group="b")
    policy = control.load_policy()
    first = claimed_ids(claim_now(1, worker_id=w, policy=policy))

    with round_trips() as then:
        got = first | claimed_ids(claim_now(10, worker_id=w, policy=policy))

    assert (len(got & set(a)), len(got & set(b))) == (3, 1)
    assert claim_now(10, worker_id=w, policy=policy) == []
    if connection.vendor == "postgresql":
        assert len(then) == 1


@pytest.mark.postgres_only
def test_fair_shares__the_one_round_trip_claim_is_kept_prepared():
    # Parsing the claim with its group heads cost as much as running it: like the ungated
    # claim's, its statements are prepared once per connection and shape.
    w = workers.register_worker("w", 1, 4, None)
    scheduler.set_group_weight("a", 3)
    submit_records(6, group="a")
    policy = control.load_policy()
    claim_now(1, worker_id=w, policy=policy)  # learns the live slots

    with round_trips() as trips:
        (claimed,) = claim_now(1, worker_id=w, policy=policy)

    assert claimed.group_key == "a" and len(trips) == 1
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [row[0] for row in cursor.fetchall()]
    # The claim with each group's head, and the load read with it.
    assert any("CROSS JOIN LATERAL" in sql and "SKIP LOCKED" in sql for sql in prepared), prepared
    assert any("taskmill_worker" in sql and "COUNT" in sql for sql in prepared), prepared


def test_fair_shares__a_worker_claiming_ahead_holds_its_queue_in_the_same_proportions():
    # Claimed-ahead tasks are running rows: shares of the threads alone would leave a worker
    # no room for the queue that keeps its threads busy through a claim's round trip.
    w = workers.register_worker("w", 1, 4, None)
    scheduler.set_group_weight("a", 3)
    scheduler.set_group_weight("b", 1)
    a = submit_records(12, group="a")
    b = submit_records(12, start=20, group="b")
    policy = control.load_policy()
    state_of(w).held_per_slot = 2.0  # 4 threads, 4 tasks ahead

    got = claimed_ids(claim_now(1, worker_id=w, policy=policy))
    got |= claimed_ids(claim_now(10, worker_id=w, policy=policy))

    assert (len(got & set(a)), len(got & set(b))) == (6, 2)
    assert claim_now(10, worker_id=w, policy=policy) == []


@pytest.mark.postgres_only
def test_fair_shares__a_groups_head_reads_only_that_groups_rows():
    # Four groups submitted interleaved, d drained faster (its weight is higher) so that its
    # rows left sit behind most of the others'. Read from the pending-only dispatch index (the
    # planner takes each group's rows to be spread evenly), d's head would pass thousands of
    # other rows first, on every claim: the usual one and the one-round-trip one.
    w = workers.register_worker("w", 1, 8, None)
    for group in "abcd":
        scheduler.set_group_weight(group, 1)
    payloads = [{"n": i} for i in range(8000)]
    for index, group in enumerate("abcd"):
        record.using(group=group).submit_batch(payloads[index::4])
    Task.objects.filter(group_key="d", id__lt=Task.objects.order_by("-id")[40].id).delete()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE taskmill_task")

    def indexes_read_by_two_claims() -> list[set[str]]:
        """The indexes each claim statement's plan reads (the usual claim, then, the policy
        being the same, the one-round-trip one), as executed."""
        fresh = control.load_policy()  # a new policy: the first claim takes the usual path
        with executed_plans() as plans:
            got = claim_now(4, worker_id=w, policy=fresh) + claim_now(4, worker_id=w, policy=fresh)
        assert sorted(t.group_key for t in got) == list("aabbccdd")
        claims = touching(plans, "Update", "taskmill_task")
        assert len(claims) == 2, plans
        return [{n.get("Index Name") for n in plan_nodes(p["Plan"])} for p in claims]

    with transaction.atomic():
        for indexes in indexes_read_by_two_claims():
            assert "taskmill_task_group_order" in indexes
        transaction.set_rollback(True)
    # Whatever the planner's estimates, the dispatch index must be out of its reach: even
    # with the group index gone, it does not read a group's head from it.
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("DROP INDEX taskmill_task_group_order")
        for indexes in indexes_read_by_two_claims():
            assert "taskmill_task_dispatch" not in indexes
        transaction.set_rollback(True)


def test_fair_shares__minimum_slots():
    scheduler.set_max_concurrency(4)
    scheduler.set_group_weight("a", 9)
    scheduler.set_group_minimum_slots("b", 2)
    a = submit_records(6, group="a")
    b = submit_records(6, start=10, group="b")

    got = claimed_ids(claim_now(10))

    assert (len(got & set(a)), len(got & set(b))) == (2, 2)


def test_fair_shares__ungrouped_tasks_are_a_group_of_their_own():
    scheduler.set_max_concurrency(4)
    scheduler.set_group_weight("a", 1)
    a = submit_records(6, group="a")
    plain = submit_records(6, start=10)

    got = claimed_ids(claim_now(10))

    assert (len(got & set(a)), len(got & set(plain))) == (2, 2)


def test_fair_shares__work_conserving_when_a_group_runs_dry():
    scheduler.set_max_concurrency(4)
    scheduler.set_group_weight("a", 3)
    scheduler.set_group_weight("b", 1)
    a = submit_records(1, group="a")
    b = submit_records(6, start=10, group="b")

    got = claimed_ids(claim_now(10))

    assert (len(got & set(a)), len(got & set(b))) == (1, 3)


def test_fair_shares__share_of_a_group_that_ran_dry_passes_on_before_the_next_policy_load(
    monkeypatch: pytest.MonkeyPatch,
):
    """Demand is counted once per policy load; a group whose work is gone in between must not
    keep its share until the next load."""
    from taskmill_django.store.claim import shares

    monkeypatch.setattr(shares, "RECOUNT_INTERVAL", 0.0)
    worker = workers.register_worker("w", 1, 8, None)  # capacity: 8 live slots
    scheduler.set_group_weight("a", 1)
    scheduler.set_group_weight("b", 1)
    a = submit_records(4, group="a")
    submit_records(10, start=10, group="b")
    policy = control.load_policy()  # kept, as a worker keeps it between loads

    assert claimed_ids(claim_now(2, worker, policy)) == set(a[:2])  # shares 4 / 4
    scheduler.cancel(a[2])
    scheduler.cancel(a[3])  # group a has nothing left to run
    assert len(claim_now(8, worker, policy)) == 4  # b's share; a's room yields nothing

    # b may now have a's share too: 6 of the 8 slots (a still runs 2).
    assert len(claim_now(8, worker, policy)) == 2
    assert running_count(group_key="b") == 6


def test_fair_shares__demand_is_counted_again_when_the_policy_is_reloaded():
    # Demand is counted once per policy load: b's first tasks, submitted after it, get a share
    # from the worker's next load, not before.
    worker = workers.register_worker("w", 1, 8, None)  # capacity: 8 live slots
    scheduler.set_group_weight("a", 1)
    scheduler.set_group_weight("b", 1)
    submit_records(10, group="a")
    policy = control.load_policy()
    assert len(claim_now(2, worker, policy)) == 2  # a's share: all 8 slots
    b = set(submit_records(10, start=100, group="b"))

    assert not claimed_ids(claim_now(2, worker, policy)) & b  # the same load: b has no share
    got = claimed_ids(claim_now(8, worker, control.load_policy()))

    assert got == got & b and len(got) == 4  # the next load: 4 / 4, a already runs 4


def test_fair_shares__long_backlog_of_one_group_does_not_hide_another():
    scheduler.set_max_concurrency(4)
    scheduler.set_group_weight("a", 3)
    scheduler.set_group_weight("b", 1)
    record.using(group="a").submit_batch([{"n": n} for n in range(100)])
    b = submit_records(3, start=1000, group="b")

    got = claimed_ids(claim_now(10))

    assert len(got & set(b)) == 1


def test_fair_shares__capacity_is_the_live_workers_slots_without_a_global_cap():
    workers.register_worker("w1", 1, 2, None)
    workers.register_worker("w2", 2, 2, None)
    scheduler.set_group_weight("a", 1)
    scheduler.set_group_weight("b", 1)
    submit_records(6, group="a")
    submit_records(6, start=10, group="b")

    assert scheduler.snapshot().group_allocations == {"a": 2, "b": 2}
    assert len(claim_now(10)) == 4


def test_fair_shares__paused_group_does_not_keep_slots_idle():
    scheduler.set_max_concurrency(4)
    scheduler.set_group_weight("a", 1)
    scheduler.set_group_weight("b", 1)
    submit_records(6, group="a")
    b = submit_records(6, start=10, group="b")
    scheduler.pause_group("a")

    assert len(claimed_ids(claim_now(10)) & set(b)) == 4


def test_fair_shares__group_held_by_its_cap_leaves_its_share_to_others():
    scheduler.set_max_concurrency(4)
    scheduler.set_group_weight("a", 1)
    scheduler.set_group_weight("b", 1)
    scheduler.set_group_limit("a", 1)
    a = submit_records(6, group="a")
    b = submit_records(6, start=10, group="b")

    got = claimed_ids(claim_now(10))

    assert (len(got & set(a)), len(got & set(b))) == (1, 3)


def test_fair_shares__paused_domain_does_not_keep_slots_idle():
    scheduler.set_max_concurrency(4)
    scheduler.set_group_weight("a", 1)
    scheduler.set_group_weight("b", 1)
    submit_records(6, group="a")  # domain "tests"
    b = [other_wf_step.using(group="b").submit(n=n).id for n in range(6)]
    scheduler.domain("tests").pause()

    assert len(claimed_ids(claim_now(10)) & set(b)) == 4


def test_fair_shares__runtime_weights_can_be_removed_and_reset(
    received, django_capture_on_commit_callbacks
):
    changed = received(signals.group_weight_changed)
    with django_capture_on_commit_callbacks(execute=True):
        scheduler.set_group_weight("a", 2)
        scheduler.set_group_weight("b", 5)
        scheduler.remove_group_weight("a")

    assert control.load_policy().group_weights == {"b": 5.0}
    scheduler.reset_group_weights()
    assert control.load_policy().group_weights == {}
    assert [e["sender"] for e in changed] == ["a", "b", "a"]


# --- priority aging --------------------------------------------------------------------------


def aged(task_id: int, seconds: float, paused_seconds: float = 0.0) -> None:
    Task.objects.filter(id=task_id).update(
        created_at=timezone.now() - timedelta(seconds=seconds), paused_seconds=paused_seconds
    )


AGING = {"grace_period": 10, "interval": 10, "ceiling": 64}


def test_aging__off_keeps_strict_priority_order():
    old = record.using(priority=Priority.BACKGROUND).submit(n=1).id
    fresh = record.submit(n=2).id
    aged(old, 10_000)

    assert [t.id for t in claim_now(1)] == [fresh]
    assert [t.id for t in claim_now(1)] == [old]


@taskmill(PRIORITY_AGING=AGING)
def test_aging__starved_task_is_promoted_past_newer_work():
    old = record.using(priority=Priority.BACKGROUND).submit(n=1).id
    fresh = record.submit(n=2).id
    aged(old, 1000)  # 192 - floor(990 / 10) = 93, ahead of NORMAL (128)

    assert [t.id for t in claim_now(1)] == [old]
    assert [t.id for t in claim_now(1)] == [fresh]


@taskmill(PRIORITY_AGING=AGING)
def test_aging__effective_priority_on_records_and_snapshot_stops_at_the_claim():
    old = record.using(priority=Priority.BACKGROUND).submit(n=1).id
    aged(old, 1000, paused_seconds=100)  # 192 - floor((1000 - 100 - 10) / 10) = 103
    assert Task.objects.get(id=old).effective_priority == 103

    claim_now(1)
    # 1000 s later: claimed 1000 s ago, submitted 2000 s ago; running, it no longer ages
    now = timezone.now()
    Task.objects.filter(id=old).update(
        created_at=now - timedelta(seconds=2000), started_at=now - timedelta(seconds=1000)
    )

    running = scheduler.snapshot().running
    assert [(r.id, r.priority, r.effective_priority) for r in running] == [
        (old, Priority.BACKGROUND, 103)
    ]


def test_aging__off_effective_priority_is_the_priority():
    task_id = record.using(priority=Priority.BACKGROUND).submit(n=1).id
    aged(task_id, 10_000)
    assert Task.objects.get(id=task_id).effective_priority == Priority.BACKGROUND


@taskmill(PRIORITY_AGING=AGING)
def test_aging__within_the_grace_period_nothing_changes():
    old = record.using(priority=Priority.BACKGROUND).submit(n=1).id
    fresh = record.submit(n=2).id
    aged(old, 5)

    assert [t.id for t in claim_now(1)] == [fresh]


@taskmill(PRIORITY_AGING=AGING)
def test_aging__time_spent_paused_does_not_count():
    old = record.using(priority=Priority.BACKGROUND).submit(n=1).id
    fresh = record.submit(n=2).id
    aged(old, 1000, paused_seconds=995)

    assert [t.id for t in claim_now(1)] == [fresh]


@taskmill(PRIORITY_AGING={**AGING, "ceiling": Priority.NORMAL + 1})
def test_aging__never_passes_the_ceiling():
    old = record.using(priority=Priority.BACKGROUND).submit(n=1).id
    fresh = record.submit(n=2).id
    aged(old, 100_000)

    assert [t.id for t in claim_now(1)] == [fresh]
    assert [t.id for t in claim_now(1)] == [old]


@taskmill(PRIORITY_AGING=AGING)
def test_aging__equal_effective_priority_is_fifo():
    first = record.using(priority=Priority.BACKGROUND).submit(n=1).id
    second = record.using(priority=Priority.BACKGROUND).submit(n=2).id

    assert [t.id for t in claim_now(2)] == [first, second]


@taskmill(
    PRIORITY_AGING={**AGING, "urgent_threshold": Priority.HIGH},
    MAX_CONCURRENCY=4,
    GROUP_WEIGHTS={"a": 1, "b": 3},
)
def test_aging__urgent_task_is_admitted_beyond_its_fair_share():
    a = submit_records(3, group="a")  # share: 1 of 4 slots
    b = submit_records(3, start=10, group="b")  # share: 3 of 4 slots
    assert claimed_ids(claim_now(1)) == {a[0]}

    aged(a[1], 1000)  # NORMAL 128 aged to the ceiling 64: at the urgent threshold
    got = claimed_ids(claim_now(10))

    assert a[1] in got
    assert a[2] not in got
    assert len(got & set(b)) == 2  # the global cap still holds


# --- IO budgets ------------------------------------------------------------------------------


def test_io_budget__saturated_direction_holds_back_only_tasks_declaring_it():
    writer = record.using(expected_io=IoBudget.disk(0, 4096)).submit(n=1).id
    net = record.using(expected_io=IoBudget.net(0, 4096)).submit(n=2).id
    reader = record.using(expected_io=IoBudget.disk(4096, 0)).submit(n=3).id
    plain = record.submit(n=4).id
    urgent_writer = (
        record.using(priority=Priority.HIGH, expected_io=IoBudget.disk(0, 1)).submit(n=5).id
    )
    policy = control.load_policy(io_budget=(("disk_write", 0), ("net_tx", 0)))

    assert not policy.is_trivial
    assert claimed_ids(claim_now(10, policy=policy)) == {reader, plain, urgent_writer}
    assert claimed_ids(claim_now(10, policy=control.load_policy())) == {writer, net}


def test_io_budget__a_busy_direction_takes_tasks_that_fit_its_bytes_left():
    small = record.using(expected_io=IoBudget.disk(0, 100_000)).submit(n=1).id
    large = record.using(expected_io=IoBudget.disk(0, 900_000)).submit(n=2).id
    exact = record.using(expected_io=IoBudget.disk(0, 500_000)).submit(n=3).id
    policy = control.load_policy(io_budget=(("disk_write", 500_000),))

    assert claimed_ids(claim_now(10, policy=policy)) == {small, exact}
    assert Task.objects.get(id=large).status == "pending"


# --- backpressure ----------------------------------------------------------------------------


def pressured_policy() -> Policy:
    from taskmill_django.read.snapshot import local_pressure

    return control.load_policy(local_pressure())


@taskmill(PRESSURE_SOURCES=[FIXED_PRESSURE])
def test_pressure__background_work_waits_while_normal_work_runs():
    low = record.using(priority=Priority.BACKGROUND).submit(n=1).id
    normal = record.submit(n=2).id

    policy = pressured_policy()

    assert (policy.pressure, policy.throttle_from) == (0.6, Priority.BACKGROUND)
    assert claimed_ids(claim_now(10, policy=policy)) == {normal}
    assert Task.objects.get(id=low).status == "pending"


@taskmill(PRESSURE_SOURCES=[FIXED_PRESSURE])
def test_pressure__high_pressure_throttles_normal_but_never_high(monkeypatch):
    monkeypatch.setattr(test_pressure.Fixed, "level", 0.9)
    record.using(priority=Priority.BACKGROUND).submit(n=1)
    record.submit(n=2)
    high = record.using(priority=Priority.HIGH).submit(n=3).id

    assert claimed_ids(claim_now(10, policy=pressured_policy())) == {high}


@taskmill(PRESSURE_SOURCES=[FIXED_PRESSURE])
def test_pressure__throttle_lifts_when_pressure_falls(monkeypatch):
    low = record.using(priority=Priority.BACKGROUND).submit(n=1).id
    assert claim_now(10, policy=pressured_policy()) == []

    monkeypatch.setattr(test_pressure.Fixed, "level", 0.1)

    assert claimed_ids(claim_now(10, policy=pressured_policy())) == {low}


@taskmill(
    PRESSURE_SOURCES=[FIXED_PRESSURE],
    THROTTLE_POLICY={Priority.HIGH: 0.5},
)
def test_pressure__throttle_policy_setting():
    high = record.using(priority=Priority.HIGH).submit(n=1).id
    urgent = record.using(priority=Priority.HIGH - 1).submit(n=2).id

    assert claimed_ids(claim_now(10, policy=pressured_policy())) == {urgent}
    assert Task.objects.get(id=high).status == "pending"


@taskmill(
    PRESSURE_SOURCES=["tests.testapp.pressure.Failing", FIXED_PRESSURE],
)
def test_pressure__failing_source_counts_as_zero_in_the_snapshot():
    snap = scheduler.snapshot()

    assert snap.pressure == 0.6
    assert snap.pressure_breakdown == {"failing": 0.0, "fixed": 0.6}


# --- snapshot, metrics, progress -------------------------------------------------------------


def test_snapshot__policy_defaults():
    snap = scheduler.snapshot()

    assert (snap.is_paused, snap.max_concurrency, snap.paused_groups) == (False, None, [])
    assert (snap.rate_limits, snap.group_allocations, snap.aging) == ({}, {}, None)
    assert (snap.pressure, snap.pressure_breakdown) == (0.0, {})


def test_snapshot__paused_flag_and_max_concurrency():
    scheduler.set_max_concurrency(7)
    scheduler.pause_all()

    snap = scheduler.snapshot()

    assert (snap.is_paused, snap.max_concurrency) == (True, 7)


def test_snapshot__domain_paused_shows_in_its_domain_snapshot_only():
    scheduler.domain("tests").pause()

    assert scheduler.domain("tests").snapshot().is_paused is True
    assert scheduler.domain("other").snapshot().is_paused is False
    assert scheduler.snapshot().is_paused is False


def test_snapshot__domain_snapshot_shows_the_domain_cap():
    scheduler.set_max_concurrency(8)
    scheduler.domain("tests").set_max_concurrency(2)

    assert scheduler.domain("tests").snapshot().max_concurrency == 2
    assert scheduler.domain("other").snapshot().max_concurrency is None
    assert scheduler.snapshot().max_concurrency == 8


def test_snapshot__paused_groups_include_timed_ones_until_they_expire():
    scheduler.pause_group("b")
    scheduler.pause_group("a", until=timezone.now() + timedelta(hours=1))
    scheduler.pause_group("c", until=timezone.now() + timedelta(hours=1))
    PausedGroup.objects.filter(group_key="c").update(
        paused_until=timezone.now() - timedelta(seconds=1)
    )

    assert [g.group for g in scheduler.snapshot().paused_groups] == ["a", "b"]


def test_snapshot__rate_limits_with_current_tokens():
    scheduler.set_rate_limit("tests::record", RateLimit.per_second(1).with_burst(4))
    scheduler.set_group_rate_limit("api", RateLimit.per_second(2))
    submit_records(3)
    claim_now(10)

    limits = scheduler.snapshot().rate_limits

    assert set(limits) == {"tests::record", "api"}
    assert (limits["tests::record"]["rate"], limits["tests::record"]["burst"]) == (1.0, 4.0)
    assert limits["tests::record"]["tokens"] == pytest.approx(1.0, abs=0.1)
    assert (limits["api"]["rate"], limits["api"]["burst"]) == (2.0, 2.0)


def test_snapshot__rate_limit_tokens_are_refilled_to_now():
    scheduler.set_rate_limit("tests::record", RateLimit.per_second(1).with_burst(4))
    scheduler.set_rate_limit("tests::echo", RateLimit.per_second(1).with_burst(3))
    submit_records(4)
    claim_now(10)
    RateBucket.objects.update(refreshed_at=timezone.now() - timedelta(seconds=60))

    limits = scheduler.snapshot().rate_limits

    assert limits["tests::record"]["tokens"] == pytest.approx(4.0)
    assert limits["tests::echo"]["tokens"] == pytest.approx(3.0)


def test_snapshot__group_allocations_show_caps_without_weights():
    scheduler.set_group_limit("a", 3)
    scheduler.set_group_limit("b", 1)

    assert scheduler.snapshot().group_allocations == {"a": 3, "b": 1}


def test_snapshot__group_allocations_show_fair_shares_with_weights():
    scheduler.set_max_concurrency(8)
    scheduler.set_group_weight("a", 2)
    submit_records(10, group="a")
    submit_records(10, start=20, group="b")
    submit_records(10, start=40)

    assert scheduler.snapshot().group_allocations == {"a": 4, "b": 2, "": 2}


@taskmill(PRIORITY_AGING=AGING)
def test_snapshot__aging_config():
    assert scheduler.snapshot().aging == {
        "grace_period": 10,
        "interval": 10,
        "step": 1,
        "ceiling": 64,
        "urgent_threshold": None,
    }


@taskmill(PRESSURE_SOURCES=[FIXED_PRESSURE])
def test_snapshot__pressure_and_breakdown():
    snap = scheduler.snapshot()

    assert (snap.pressure, snap.pressure_breakdown) == (0.6, {"fixed": 0.6})


@taskmill(RESOURCE_MONITORING=True)
def test_snapshot__resource_monitoring_adds_memory_cpu_and_disk_sources():
    snap = scheduler.snapshot()

    assert set(snap.pressure_breakdown) == {"memory", "cpu", "disk"}
    assert all(0.0 <= v <= 1.0 for v in snap.pressure_breakdown.values())
    assert snap.pressure == max(snap.pressure_breakdown.values())


def test_snapshot__running_tasks_with_progress():
    task_id = progress.submit(seconds=1).id
    (task,) = claim_now(1)
    Task.objects.filter(id=task_id).update(progress=0.25, progress_message="a quarter")

    (running,) = scheduler.snapshot().running

    assert (running.id, running.worker_id) == (task_id, str(task.worker_id))
    assert (running.progress, running.progress_message) == (0.25, "a quarter")


def test_metrics__counters_and_gauges_for_the_cluster():
    submit_records(6)
    first, second, third = claim_now(3)
    finish(first)
    finish(second)
    finish(third, lifecycle.DEAD_LETTER, error="gave up")
    claim_now(1)
    workers.register_worker("w1", 1, 3, None)
    workers.register_worker("w2", 2, 5, None)

    metrics = scheduler.metrics_snapshot()

    assert metrics.gauges["tasks_pending"] == 2.0
    assert metrics.gauges["tasks_running"] == 1.0
    assert metrics.gauges["tasks_paused"] == 0.0
    assert (metrics.gauges["workers_alive"], metrics.gauges["worker_slots"]) == (2.0, 8.0)
    assert metrics.counters["tasks_completed_total"] == 2
    assert metrics.counters["tasks_dead_letter_total"] == 1
    assert metrics.counters["tasks_cancelled_total"] == 0
    assert metrics.counters["tasks_submitted_total"] == 6


# --- runtime setters: persisted, validated ---------------------------------------------------


def test_setters__every_value_is_stored_for_other_processes():
    scheduler.set_max_concurrency(9)
    scheduler.domain("tests").set_max_concurrency(2)
    scheduler.set_group_limit("g", 3)
    scheduler.set_rate_limit("tests::record", RateLimit.per_second(4))
    scheduler.set_group_rate_limit("g", RateLimit.per_minute(30))
    scheduler.set_group_weight("g", 2.5)
    scheduler.set_group_minimum_slots("g", 1)

    stored = dict(SchedulerSetting.objects.values_list("name", "value"))

    assert stored[config.MAX_CONCURRENCY] == 9
    assert stored[config.DOMAIN_CAP + "tests"] == 2
    assert stored[config.GROUP_CAP + "g"] == 3
    assert stored[config.RATE + "tests::record"] == {"rate": 4.0, "burst": 4.0}
    assert stored[config.GROUP_RATE + "g"] == {"rate": 0.5, "burst": 1.0}
    assert stored[config.GROUP_WEIGHT + "g"] == 2.5
    assert stored[config.GROUP_MIN_SLOTS + "g"] == 1
    policy = control.load_policy()
    assert policy.max_concurrency == 9
    assert policy.domain_caps["tests"] == 2
    assert policy.group_cap("g") == 3
    assert policy.rate_limits["tests::record"] == RateLimit.per_second(4)
    assert policy.group_rate_limits["g"] == RateLimit.per_minute(30)
    assert (policy.group_weights, policy.group_minimum_slots) == ({"g": 2.5}, {"g": 1})


def test_setters__setting_twice_keeps_one_row():
    scheduler.set_group_limit("g", 3)
    scheduler.set_group_limit("g", 4)

    assert SchedulerSetting.objects.filter(name=config.GROUP_CAP + "g").count() == 1
    assert control.load_policy().group_cap("g") == 4


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: scheduler.set_max_concurrency(0), "max_concurrency"),
        (lambda: scheduler.set_max_concurrency(-3), "max_concurrency"),
        (lambda: scheduler.set_max_concurrency(2.5), "max_concurrency"),
        (lambda: scheduler.set_max_concurrency(True), "max_concurrency"),
        (lambda: scheduler.domain("tests").set_max_concurrency(0), "max_concurrency"),
        (lambda: scheduler.set_group_limit("g", 0), "limit"),
        (lambda: scheduler.set_group_limit("g", -1), "limit"),
        (lambda: scheduler.set_group_limit("", 2), "group"),
        (lambda: scheduler.set_group_weight("g", 0), "weight"),
        (lambda: scheduler.set_group_weight("g", -1.5), "weight"),
        (lambda: scheduler.set_group_weight("g", "heavy"), "weight"),
        (lambda: scheduler.set_group_minimum_slots("g", -1), "slots"),
        (lambda: scheduler.set_group_minimum_slots("g", 1.5), "slots"),
        (lambda: scheduler.set_rate_limit("tests::record", 5), "rate_limit"),
        (lambda: scheduler.set_rate_limit("tests::record", RateLimit.per_second(-1)), "rate"),
        (lambda: scheduler.set_rate_limit("tests::nope", RateLimit.per_second(1)), "task_type"),
        (lambda: scheduler.set_group_rate_limit("g", {"rate": 5}), "rate_limit"),
        (lambda: scheduler.pause_group("g", until=timezone.now().replace(tzinfo=None)), "until"),
        (lambda: scheduler.pause_group("g", until="tomorrow"), "until"),
    ],
)
def test_setters__bad_values_raise_validation_error_naming_the_field(call, field):
    with pytest.raises(ValidationError) as info:
        call()
    assert info.value.field == field
    assert not SchedulerSetting.objects.exists()
    assert not PausedGroup.objects.exists()


def test_setters__unknown_task_type_for_a_rate_limit():
    with pytest.raises(UnknownTaskType):
        scheduler.set_rate_limit("tests::nope", RateLimit.per_second(1))


# --- system checks ---------------------------------------------------------------------------


def check_ids(**extra: Any) -> list[str]:
    with taskmill(**extra):
        return [m.id for m in check_settings()]


def test_checks__policy_settings_accepted():
    ids = check_ids(
        MAX_CONCURRENCY=8,
        GROUP_CONCURRENCY={"a": 2},
        DEFAULT_GROUP_CONCURRENCY=4,
        GROUP_WEIGHTS={"a": 3, "b": 0.5},
        DEFAULT_GROUP_WEIGHT=2,
        GROUP_MINIMUM_SLOTS={"a": 0, "b": 1},
        RATE_LIMITS={"tests::record": RateLimit.per_second(5), "tests::echo": 2},
        GROUP_RATE_LIMITS={"api": {"rate": 1, "burst": 4}},
        PRIORITY_AGING={"grace_period": 30, "interval": 10, "ceiling": 64},
        THROTTLE_POLICY={192: 0.4, 128: 0.8},
        PRESSURE_SOURCES=[FIXED_PRESSURE],
        SCHEDULES={"tick": {"task": "tests::noop", "interval": 60}},
    )
    assert ids == []


@pytest.mark.parametrize(
    ("extra", "check_id"),
    [
        ({"GROUP_CONCURRENCY": {"a": 0}}, "taskmill.E010"),
        ({"GROUP_CONCURRENCY": {"a": "2"}}, "taskmill.E010"),
        ({"GROUP_CONCURRENCY": ["a"]}, "taskmill.E010"),
        ({"GROUP_MINIMUM_SLOTS": {"a": -1}}, "taskmill.E010"),
        ({"DEFAULT_GROUP_CONCURRENCY": 0}, "taskmill.E010"),
        ({"DEFAULT_GROUP_CONCURRENCY": True}, "taskmill.E010"),
        ({"GROUP_WEIGHTS": {"a": 0}}, "taskmill.E011"),
        ({"GROUP_WEIGHTS": {"a": "heavy"}}, "taskmill.E011"),
        ({"DEFAULT_GROUP_WEIGHT": -1}, "taskmill.E011"),
        ({"RATE_LIMITS": {"tests::record": "fast"}}, "taskmill.E012"),
        ({"RATE_LIMITS": {"tests::record": 0}}, "taskmill.E012"),
        ({"GROUP_RATE_LIMITS": [1]}, "taskmill.E012"),
        ({"PRIORITY_AGING": {"interval": 0}}, "taskmill.E013"),
        ({"PRIORITY_AGING": {"ceiling": "high"}}, "taskmill.E013"),
        ({"PRIORITY_AGING": {"speed": 1}}, "taskmill.E013"),
        ({"PRIORITY_AGING": 5}, "taskmill.E013"),
        ({"THROTTLE_POLICY": {300: 0.5}}, "taskmill.E014"),
        ({"THROTTLE_POLICY": {192: "high"}}, "taskmill.E014"),
        ({"THROTTLE_POLICY": [0.5]}, "taskmill.E014"),
        ({"PRESSURE_SOURCES": FIXED_PRESSURE}, "taskmill.E015"),
        ({"PRESSURE_SOURCES": [42]}, "taskmill.E015"),
        ({"IO_CAPACITY": {"disk": 1}}, "taskmill.E017"),
        ({"IO_CAPACITY": {"disk_write": 0}}, "taskmill.E017"),
        ({"IO_SAMPLER": "tests.testapp.io.Missing"}, "taskmill.E018"),
        ({"SCHEDULES": ["tick"]}, "taskmill.E016"),
        ({"SCHEDULES": {"tick": {"task": "tests::noop", "cron": "not cron"}}}, "taskmill.E016"),
        ({"SCHEDULES": {"tick": {"task": "tests::nope", "interval": 5}}}, "taskmill.E016"),
    ],
)
def test_checks__bad_policy_setting_is_reported(extra, check_id):
    assert check_ids(**extra) == [check_id]


def test_checks__error_names_the_setting_and_has_a_hint():
    with taskmill(GROUP_WEIGHTS={"a": 0}):
        (message,) = check_settings()
    assert "GROUP_WEIGHTS" in message.msg
    assert message.hint
