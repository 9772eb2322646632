"""Scheduling policy enforced across real ``runtaskmill`` processes sharing one database:
caps, preemption, pauses, rate limits, fair shares and runtime changes made from here.

Workers are subprocesses with tests/settings.py, so ``override_settings`` never reaches them:
limits are set through the runtime setters, which store them in the database. Aging and
pressure sources are settings-only, so those two run a ``Dispatcher`` in a thread of this
process instead, where ``override_settings`` applies.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.db.models import Count
from django.test import override_settings
from django.utils import timezone

from taskmill_django import Priority, RateLimit, scheduler, signals
from taskmill_django.dispatcher import Dispatcher, DispatcherOptions
from taskmill_django.models import Task, TaskHistory
from tests.acceptance.support import STAMP_SLACK, finished
from tests.conftest import wait_until
from tests.testapp import pressure as test_pressure
from tests.testapp.tasks import echo, other_wf_step, record, sleep

pytestmark = pytest.mark.django_db(transaction=True)


def sample_until(
    measure: Callable[[], Any], done: Callable[[], Any], timeout: float = 60.0
) -> list[Any]:
    """Call ``measure`` every 20 ms until ``done()``; fail the test on timeout."""
    samples = []
    deadline = time.monotonic() + timeout
    while True:
        samples.append(measure())
        if done():
            return samples
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s: {done}")
        time.sleep(0.02)


def by_group_and_status() -> dict[tuple[str | None, str], int]:
    rows = Task.objects.values_list("group_key", "status").annotate(n=Count("id")).order_by()
    return {(group, status): n for group, status, n in rows}


def running_in(**filters: Any) -> int:
    return Task.objects.filter(status="running", **filters).count()


def max_overlap(rows: list[TaskHistory]) -> int:
    """Most attempts that ran at the same moment, from history start/finish stamps."""
    events = []
    for row in rows:
        events.append((row.started_at, 1))
        events.append((row.finished_at - STAMP_SLACK, -1))
    level = peak = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):  # ends before starts
        level += step
        peak = max(peak, level)
    return peak


def log_index(task_log: Any, event: str, n: int, last: bool = False) -> int:
    rows = [i for i, e in enumerate(task_log.events()) if e["event"] == event and e["n"] == n]
    assert rows, f"no {event} event for n={n}: {task_log.events()}"
    return rows[-1] if last else rows[0]


# --- concurrency caps ------------------------------------------------------------------------


def test_group_cap__two_never_exceeded_by_two_workers_of_four_slots(worker_factory):
    scheduler.set_group_limit("bucket", 2)
    ids = [sleep.using(group="bucket").submit(seconds=0.5, n=n).id for n in range(8)]
    workers = [worker_factory("--concurrency", "4") for _ in range(2)]

    samples = sample_until(lambda: running_in(group_key="bucket"), lambda: finished(ids))

    assert max(samples) == 2, [w.output() for w in workers]
    assert max_overlap(list(TaskHistory.objects.filter(id__in=ids))) == 2
    assert set(TaskHistory.objects.filter(id__in=ids).values_list("status", flat=True)) == {
        "completed"
    }


def test_global_cap__holds_when_a_second_worker_joins_a_worker_it_could_not_bind(
    worker_factory,
):
    # One worker of 4 slots cannot reach a cap of 5, so it claims without counting; the cap
    # must hold from the moment a second one joins.
    scheduler.set_max_concurrency(5)
    # Enough work (about 4 s) for the second worker to start while the first is busy, even
    # on a loaded machine.
    ids = [sleep.submit(seconds=0.4, n=n).id for n in range(40)]
    first = worker_factory("--concurrency", "4")
    wait_until(lambda: running_in() == 4, timeout=30)
    second = worker_factory("--concurrency", "4")

    samples = sample_until(lambda: running_in(), lambda: finished(ids))

    assert max(samples) == 5, [first.output(), second.output()]
    assert max_overlap(list(TaskHistory.objects.filter(id__in=ids))) == 5
    assert len(set(TaskHistory.objects.filter(id__in=ids).values_list("worker_id", flat=True))) == 2


def test_domain_cap__one_held_across_two_workers_without_blocking_other_domains(
    worker_factory,
):
    scheduler.domain("tests").set_max_concurrency(1)
    capped = [sleep.submit(seconds=0.4, n=n).id for n in range(4)]
    # Behind the capped tasks in dispatch order, yet not held up by them.
    free = [other_wf_step.using(priority=Priority.BACKGROUND).submit(n=n).id for n in range(3)]
    for _ in range(2):
        worker_factory("--concurrency", "2")

    samples = sample_until(lambda: running_in(domain="tests"), lambda: finished(capped))

    assert max(samples) == 1
    assert max_overlap(list(TaskHistory.objects.filter(id__in=capped))) == 1
    assert finished(free)
    free_done = TaskHistory.objects.filter(id__in=free).values_list("finished_at", flat=True)
    capped_starts = TaskHistory.objects.filter(id__in=capped).values_list("started_at", flat=True)
    assert max(free_done) < max(capped_starts)


# --- preemption ------------------------------------------------------------------------------


def test_preemption__realtime_submission_pauses_background_work_on_a_worker(
    worker_factory, task_log
):
    worker = worker_factory("--concurrency", "2")
    low = sleep.using(priority=Priority.BACKGROUND).submit(seconds=2.5, n=1).id
    wait_until(lambda: task_log.events("start"), timeout=60)

    urgent = sleep.using(priority=Priority.REALTIME).submit(seconds=1.5, n=2).id

    paused = wait_until(
        lambda: Task.objects.filter(id=low, status="paused", pause_reason="preempted").first(),
        timeout=30,
    )
    assert paused.retry_count == 0
    row = wait_until(lambda: TaskHistory.objects.filter(id=low).first(), timeout=60)
    assert (row.status, row.retry_count) == ("completed", 0), worker.output()
    assert TaskHistory.objects.get(id=urgent).status == "completed"
    noticed = [e for e in task_log.events("noticed_cancel") if e["n"] == 1]
    assert [e["reason"] for e in noticed] == ["preempted"]
    # Resumed only once the preemptor had finished.
    assert log_index(task_log, "start", 1, last=True) > log_index(task_log, "done", 2)


# --- rate limits -----------------------------------------------------------------------------


def test_rate_limit__five_per_second_spreads_fifteen_starts_over_two_seconds(worker_factory):
    scheduler.set_rate_limit("tests::record", RateLimit.per_second(5))  # burst 5
    limited = [record.submit(n=n).id for n in range(15)]
    free = [echo.submit(value=n).id for n in range(15)]
    workers = [worker_factory("--concurrency", "4") for _ in range(2)]

    wait_until(lambda: finished(limited + free), timeout=60)

    starts = sorted(TaskHistory.objects.filter(id__in=limited).values_list("started_at", flat=True))
    spread = (starts[-1] - starts[0]).total_seconds()
    # 5 tokens at once, then one every 0.2 s: the 15th token is taken 2 s after the first.
    # started_at is stamped by the claim's UPDATE, a moment after that claim read the bucket
    # in the same transaction; on a loaded machine the first claim's moment reached 40 ms,
    # which shortens the measured spread by as much. Scheduling delays only lengthen it.
    offsets = [round((t - starts[0]).total_seconds(), 3) for t in starts]
    assert 1.9 <= spread < 8.0, (offsets, [w.output() for w in workers])
    free_starts = TaskHistory.objects.filter(id__in=free).values_list("started_at", flat=True)
    free_offsets = sorted(round((t - starts[0]).total_seconds(), 3) for t in free_starts)
    assert free_offsets[-1] < 1.2, (free_offsets, offsets)  # the other type is not delayed


# --- fair shares -----------------------------------------------------------------------------


def test_fair_shares__running_slots_match_group_weights(worker_factory):
    scheduler.set_max_concurrency(4)
    scheduler.set_group_weight("a", 3)
    scheduler.set_group_weight("b", 1)
    ids = []
    for n in range(9):
        ids.append(sleep.using(group="a").submit(seconds=0.6, n=n).id)
        ids.append(sleep.using(group="b").submit(seconds=0.6, n=100 + n).id)
    for _ in range(2):
        worker_factory("--concurrency", "4")

    samples = sample_until(by_group_and_status, lambda: finished(ids))

    running = [(s.get(("a", "running"), 0), s.get(("b", "running"), 0)) for s in samples]
    assert max(a + b for a, b in running) == 4  # the global cap, reached
    contended = [
        (a, b)
        for (a, b), s in zip(running, samples, strict=True)
        if s.get(("a", "pending")) and s.get(("b", "pending")) and a + b == 4
    ]
    assert len(contended) >= 3, running
    assert all(abs(a - 3) <= 1 and abs(b - 1) <= 1 for a, b in contended), contended
    # Work-conserving: once group a has run dry, b gets every slot.
    assert max(b for a, b in running) >= 3


# --- runtime control from another process ----------------------------------------------------


def test_runtime_change__group_limit_set_here_is_obeyed_by_a_running_worker(worker_factory):
    scheduler.set_group_limit("g", 3)
    ids = [sleep.using(group="g").submit(seconds=0.6, n=n).id for n in range(12)]
    worker = worker_factory("--concurrency", "4")
    wait_until(lambda: running_in(group_key="g") == 3, timeout=60)

    scheduler.set_group_limit("g", 1)

    wait_until(lambda: running_in(group_key="g") <= 1, timeout=30)
    done_before = TaskHistory.objects.filter(id__in=ids).count()
    samples = sample_until(
        lambda: running_in(group_key="g"),
        lambda: TaskHistory.objects.filter(id__in=ids).count() >= done_before + 2,
    )
    assert max(samples) == 1, worker.output()
    assert Task.objects.filter(id__in=ids, status="pending").count() >= 3

    scheduler.remove_group_limit("g")

    wait_until(lambda: running_in(group_key="g") >= 3, timeout=30)
    wait_until(lambda: finished(ids), timeout=60)


# --- settings-only policy: a Dispatcher in this process --------------------------------------


def run_dispatcher(concurrency: int = 2) -> None:
    """Run a burst ``Dispatcher`` in a thread until nothing is runnable, as runtaskmill would."""
    failures: list[BaseException] = []

    def run() -> None:
        try:
            Dispatcher(
                DispatcherOptions(
                    concurrency=concurrency, burst=True, install_signal_handlers=False
                )
            ).run()
        except BaseException as exc:  # reported to the test thread
            failures.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run, name="test-dispatcher")
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "dispatcher did not finish its burst run"
    for other in threading.enumerate():
        if other.name == "taskmill-listen":
            other.join(5)  # its database connection must close before the test database goes
    assert not failures, failures


def taskmill(**extra: Any) -> override_settings:
    return override_settings(TASKMILL={**settings.TASKMILL, **extra})


@taskmill(PRESSURE_SOURCES=["tests.testapp.pressure.Fixed"])
def test_pressure__custom_source_throttles_background_work(monkeypatch, task_log):
    monkeypatch.setattr(test_pressure.Fixed, "level", 0.6)  # above 0.5: BACKGROUND waits
    low = [record.using(priority=Priority.BACKGROUND).submit(n=n).id for n in range(3)]
    normal = [record.submit(n=n).id for n in range(10, 13)]

    run_dispatcher()

    assert finished(normal)
    assert Task.objects.filter(id__in=low, status="pending").count() == 3
    assert sorted(e["n"] for e in task_log.events("run")) == [10, 11, 12]

    monkeypatch.setattr(test_pressure.Fixed, "level", 0.1)
    run_dispatcher()

    assert finished(low)


@taskmill(PRIORITY_AGING={"grace_period": 10, "interval": 10, "ceiling": 64})
def test_aging__starved_task_is_promoted_in_a_dispatcher(task_log):
    starved = record.using(priority=Priority.BACKGROUND).submit(n=0).id
    for n in range(1, 5):
        record.submit(n=n)
    Task.objects.filter(id=starved).update(created_at=timezone.now() - timedelta(seconds=1000))
    dispatched: list[tuple[int, int, int]] = []

    def on_dispatched(sender: Any, task_id: int, **kwargs: Any) -> None:
        dispatched.append((task_id, kwargs["priority"], kwargs["effective_priority"]))

    signals.task_dispatched.connect(on_dispatched, weak=False)
    try:
        run_dispatcher(concurrency=1)
    finally:
        signals.task_dispatched.disconnect(on_dispatched)

    assert [e["n"] for e in task_log.events("run")] == [0, 1, 2, 3, 4]
    # 192 - floor((1000 - 10) / 10) = 93; the fresh NORMAL tasks have not aged
    assert dispatched[0] == (starved, Priority.BACKGROUND, 93)
    assert {(p, e) for _id, p, e in dispatched[1:]} == {(Priority.NORMAL, Priority.NORMAL)}
