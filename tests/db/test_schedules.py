"""Recurring schedules from the user's side: interval and cron (time-zone aware), pause, resume
and cancel, pile-up prevention, max occurrences, declarative schedules, missed occurrences, and
exactly-once firing when several connections fire at the same moment."""

from __future__ import annotations

import threading
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.conf import settings
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from taskmill_django import (
    Domain,
    RecurringSchedule,
    TaskNotFound,
    ValidationError,
    scheduler,
    signals,
)
from taskmill_django.models import Schedule, ScheduleTick, Task, TaskTag
from taskmill_django.store import recurring
from taskmill_django.store.recurring import fire_due_schedules, sync_declared_schedules
from taskmill_django.testing import run_pending
from tests.conftest import wait_until
from tests.db.conftest import claim_one
from tests.testapp.tasks import record

db = pytest.mark.django_db
commits = pytest.mark.django_db(transaction=True)

PARIS = ZoneInfo("Europe/Paris")
HOUR = timedelta(hours=1)


@pytest.fixture
def on_commit(django_capture_on_commit_callbacks):
    """Run on-commit callbacks (the signals) when the block ends, as a real commit would."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


def _schedule(schedule_id: int) -> Schedule:
    return Schedule.objects.get(id=schedule_id)


def _info(schedule_id: int):
    (info,) = [s for s in scheduler.store().recurring_schedules() if s.id == schedule_id]
    return info


def _later(**recurring) -> int:
    """A schedule whose first occurrence lies an hour ahead (nothing fires at creation)."""
    recurring.setdefault("interval", 60)
    schedule = RecurringSchedule(initial_delay=HOUR, **recurring)
    outcome = record.using(recurring=schedule).submit(n=1)
    assert outcome.id is None
    return outcome.schedule_id


def _make_due(schedule_id: int, ago: timedelta = timedelta(minutes=1)) -> datetime:
    when = timezone.now() - ago
    Schedule.objects.filter(id=schedule_id).update(next_run_at=when)
    return when


def _next_paris(hour: int, minute: int, after: datetime) -> datetime:
    """The first ``hour:minute`` wall-clock time in Paris strictly after ``after``."""
    day = after.astimezone(PARIS).date()
    while True:
        candidate = datetime.combine(day, time(hour, minute), tzinfo=PARIS)
        if candidate > after:
            return candidate
        day += timedelta(days=1)


def _declared(**entries):
    return override_settings(TASKMILL={**settings.TASKMILL, "SCHEDULES": entries})


NIGHTLY = {
    "task": "tests::record",
    "cron": "0 3 * * *",
    "timezone": "Europe/Paris",
    "payload": {"n": 7},
}


# --- creating schedules ----------------------------------------------------------------------


@db
def test_recurring__interval_schedule_fires_its_first_occurrence_at_once():
    outcome = record.using(recurring=RecurringSchedule(interval=timedelta(minutes=5))).submit(n=1)
    assert outcome.kind == "inserted"
    task = Task.objects.get(id=outcome.id)
    assert (task.task_type, task.payload, task.status) == ("tests::record", {"n": 1}, "pending")
    schedule = _schedule(outcome.schedule_id)
    assert schedule.occurrence_count == 1
    assert schedule.next_run_at == schedule.last_run_at + timedelta(minutes=5)


@db
def test_recurring__initial_delay_defers_the_first_occurrence():
    before = timezone.now()
    outcome = record.using(
        recurring=RecurringSchedule(interval=60, initial_delay=timedelta(minutes=10))
    ).submit(n=1)
    assert outcome.id is None
    assert not Task.objects.exists()
    next_run = _schedule(outcome.schedule_id).next_run_at
    assert before + timedelta(minutes=10) <= next_run <= timezone.now() + timedelta(minutes=10)


@db
def test_recurring__occurrences_carry_the_submission_options():
    outcome = record.using(
        recurring=RecurringSchedule(interval=60), priority=10, tags={"source": "cron"}
    ).submit(n=1)
    task = Task.objects.get(id=outcome.id)
    assert task.priority == 10
    assert dict(TaskTag.objects.filter(task=task).values_list("key", "value")) == {"source": "cron"}


@db
def test_recurring__same_key_twice_keeps_one_schedule():
    schedule = RecurringSchedule(interval=60, initial_delay=HOUR)
    first = record.using(recurring=schedule, key="hourly-report").submit(n=1)
    second = record.using(recurring=schedule, key="hourly-report").submit(n=1)
    assert (first.kind, second.kind) == ("inserted", "duplicate")
    assert second.schedule_id == first.schedule_id
    assert Schedule.objects.count() == 1


@commits
def test_recurring__same_key_from_concurrent_submitters_keeps_one_schedule():
    errors: list[BaseException] = []
    kinds: list[str] = []
    schedule = RecurringSchedule(interval=60, initial_delay=HOUR)
    for round_ in range(10):
        barrier = threading.Barrier(4)

        def submit(key: str = f"report-{round_}", barrier=barrier) -> None:
            try:
                barrier.wait(timeout=30)
                kinds.append(record.using(recurring=schedule, key=key).submit(n=1).kind)
            except BaseException as exc:
                errors.append(exc)
            finally:
                connection.close()

        threads = [threading.Thread(target=submit) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert errors == []
    assert sorted(kinds) == sorted(["inserted"] * 10 + ["duplicate"] * 30)
    assert Schedule.objects.count() == 10


@db
@pytest.mark.parametrize(
    "option", [{"depends_on": [1]}, {"parent": 1}], ids=["depends_on", "parent"]
)
def test_recurring__cannot_be_combined_with_dependencies_or_a_parent(option):
    with pytest.raises(ValidationError) as info:
        record.using(recurring=RecurringSchedule(interval=60), **option).submit(n=1)
    assert info.value.field == "recurring"
    assert not Schedule.objects.exists()
    assert not Task.objects.exists()


@db
def test_recurring_schedules__describe_each_schedule():
    outcome = record.using(
        recurring=RecurringSchedule(cron="*/5 * * * *", timezone="Europe/Paris", max_occurrences=4)
    ).submit(n=1)
    info = _info(outcome.schedule_id)
    schedule = _schedule(outcome.schedule_id)
    assert (info.task_type, info.cron, info.interval_seconds, info.timezone) == (
        "tests::record",
        "*/5 * * * *",
        None,
        "Europe/Paris",
    )
    assert info.next_run_at == schedule.next_run_at
    assert (info.occurrences, info.remaining, info.skipped, info.is_paused) == (0, 4, 0, False)


# --- cron in a time zone ---------------------------------------------------------------------


@db
def test_cron_schedule__first_run_is_the_next_0300_in_paris():
    before = timezone.now()
    outcome = record.using(
        recurring=RecurringSchedule(cron="0 3 * * *", timezone="Europe/Paris")
    ).submit(n=1)
    assert outcome.id is None
    assert _schedule(outcome.schedule_id).next_run_at == _next_paris(3, 0, before)


@db
def test_cron_schedule__firing_moves_on_to_the_next_0300_in_paris():
    schedule_id = _later(interval=None, cron="0 3 * * *", timezone="Europe/Paris")
    now = timezone.now()
    last_slot = _next_paris(3, 0, now - timedelta(days=1))
    assert last_slot <= now
    Schedule.objects.filter(id=schedule_id).update(next_run_at=last_slot)
    assert fire_due_schedules() == 1
    schedule = _schedule(schedule_id)
    assert schedule.last_run_at == last_slot
    assert schedule.next_run_at == _next_paris(3, 0, now)


# --- pause, resume, cancel -------------------------------------------------------------------


@db
def test_pause_recurring__paused_schedule_does_not_fire_when_due():
    schedule_id = _later()
    scheduler.domain("tests").pause_recurring(schedule_id)
    _make_due(schedule_id)
    assert fire_due_schedules() == 0
    assert not Task.objects.exists()
    assert _info(schedule_id).is_paused is True


@commits
def test_resume_recurring__schedule_fires_again_when_due():
    schedule_id = _later()
    handle = scheduler.domain("tests")
    handle.pause_recurring(schedule_id)
    _make_due(schedule_id, ago=HOUR)
    handle.resume_recurring(schedule_id)
    assert _info(schedule_id).is_paused is False
    assert _schedule(schedule_id).next_run_at <= timezone.now()
    assert wait_until(fire_due_schedules, timeout=10) == 1
    assert Task.objects.count() == 1


@db
def test_cancel_recurring__deletes_the_schedule_and_keeps_submitted_tasks():
    outcome = record.using(recurring=RecurringSchedule(interval=60)).submit(n=1)
    scheduler.domain("tests").cancel_recurring(outcome.schedule_id)
    assert not Schedule.objects.filter(id=outcome.schedule_id).exists()
    assert [s.id for s in scheduler.store().recurring_schedules()] == []
    assert Task.objects.get(id=outcome.id).status == "pending"


@db
def test_cancel_recurring__another_domain_cannot_touch_it():
    schedule_id = _later()
    with pytest.raises(TaskNotFound):
        scheduler.domain("other").cancel_recurring(schedule_id)
    assert Schedule.objects.filter(id=schedule_id).exists()


# --- pile-up prevention and the last occurrence ----------------------------------------------


@db
def test_pile_up__occurrence_skipped_while_previous_is_still_pending(received, on_commit):
    events = received(signals.recurring_skipped)
    outcome = record.using(recurring=RecurringSchedule(interval=60)).submit(n=1)
    _make_due(outcome.schedule_id)
    with on_commit():
        assert fire_due_schedules() == 0
    assert list(Task.objects.values_list("id", flat=True)) == [outcome.id]
    info = _info(outcome.schedule_id)
    assert (info.occurrences, info.skipped) == (1, 1)
    assert info.next_run_at > timezone.now()
    assert [(e["sender"], e["schedule_id"]) for e in events] == [(record, outcome.schedule_id)]


@db
def test_pile_up__running_previous_occurrence_does_not_block_the_next():
    outcome = record.using(recurring=RecurringSchedule(interval=60)).submit(n=1)
    assert claim_one().id == outcome.id
    _make_due(outcome.schedule_id)
    assert fire_due_schedules() == 1
    assert Task.objects.count() == 2
    assert _info(outcome.schedule_id).skipped == 0


@db
def test_max_occurrences__recurring_completed_after_the_last_occurrence(received, on_commit):
    events = received(signals.recurring_completed)
    with on_commit():
        outcome = record.using(recurring=RecurringSchedule(interval=60, max_occurrences=2)).submit(
            n=1
        )
    assert events == []
    run_pending()
    _make_due(outcome.schedule_id)
    with on_commit():
        assert fire_due_schedules() == 1
    assert [(e["sender"], e["schedule_id"]) for e in events] == [(record, outcome.schedule_id)]
    info = _info(outcome.schedule_id)
    assert (info.occurrences, info.remaining, info.next_run_at) == (2, 0, None)
    run_pending()
    assert fire_due_schedules() == 0
    assert ScheduleTick.objects.filter(schedule_id=outcome.schedule_id).count() == 2


# --- declarative schedules -------------------------------------------------------------------


@db
def test_declarative__synced_twice_without_duplicates():
    with _declared(nightly=NIGHTLY):
        sync_declared_schedules()
        assert sync_declared_schedules() == (0, 0, 0)
    (row,) = Schedule.objects.filter(name="nightly")
    assert (row.task_type, row.cron, row.timezone, row.payload, row.is_declarative) == (
        "tests::record",
        "0 3 * * *",
        "Europe/Paris",
        {"n": 7},
        True,
    )


@db
def test_declarative__updated_in_place_when_changed():
    with _declared(nightly=NIGHTLY):
        sync_declared_schedules()
    original = Schedule.objects.get(name="nightly")
    before = timezone.now()
    with _declared(nightly={**NIGHTLY, "cron": "30 4 * * *"}):
        assert sync_declared_schedules() == (0, 1, 0)
    (row,) = Schedule.objects.filter(name="nightly")
    assert row.id == original.id
    assert row.cron == "30 4 * * *"
    assert row.next_run_at == _next_paris(4, 30, before)


@db
def test_declarative__removed_when_gone_from_settings():
    kept = record.using(recurring=RecurringSchedule(interval=60)).submit(n=1)
    with _declared(nightly=NIGHTLY):
        sync_declared_schedules()
    with _declared():
        assert sync_declared_schedules()[2] == 1
    assert not Schedule.objects.filter(name="nightly").exists()
    assert Schedule.objects.filter(id=kept.schedule_id).exists()


@commits
def test_declarative__concurrent_syncs_create_each_schedule_once():
    entries = {f"nightly-{i}": NIGHTLY for i in range(3)}
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def sync() -> None:
        try:
            barrier.wait(timeout=30)
            sync_declared_schedules()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    with _declared(**entries):
        threads = [threading.Thread(target=sync) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert errors == []
    assert sorted(Schedule.objects.values_list("name", flat=True)) == sorted(entries)


@db
@pytest.mark.usefixtures("isolated_registry")
def test_declarative__task_schedule_argument_is_synced_once():
    declared = Domain("wf_declared")

    @declared.task("tick", schedule=RecurringSchedule(interval=300))
    def tick(ctx) -> None:
        return None

    sync_declared_schedules()
    sync_declared_schedules()
    (row,) = Schedule.objects.filter(name="wf_declared::tick")
    assert (row.task_type, row.interval_seconds, row.is_declarative) == (
        "wf_declared::tick",
        300.0,
        True,
    )


@db
@pytest.mark.parametrize(
    ("bad", "field"),
    [
        pytest.param({"cron": "61 * * * *"}, "cron", id="bad_cron"),
        pytest.param({"cron": "every day"}, "cron", id="not_cron"),
        pytest.param({"timezone": "Europe/Atlantis"}, "timezone", id="bad_timezone"),
        pytest.param({"interval": 60}, "recurring", id="interval_and_cron"),
    ],
)
def test_declarative__bad_entry_is_rejected_and_nothing_synced(bad, field):
    with _declared(good=NIGHTLY, bad={**NIGHTLY, **bad}):
        with pytest.raises(ValidationError) as info:
            sync_declared_schedules()
    assert info.value.field == field
    assert not Schedule.objects.exists()


# --- missed occurrences ----------------------------------------------------------------------


@db
def test_missed_occurrences__collapse_into_one_run_without_catch_up():
    schedule_id = _later(interval=60)
    _make_due(schedule_id, ago=HOUR)
    assert fire_due_schedules() == 1
    now = timezone.now()
    next_run = _schedule(schedule_id).next_run_at
    assert now < next_run <= now + timedelta(seconds=60)
    run_pending()
    assert fire_due_schedules() == 0
    assert ScheduleTick.objects.filter(schedule_id=schedule_id).count() == 1


def _fire_until_caught_up(rounds: int = 20) -> int:
    """Fire due schedules round after round, running each occurrence in between (so no
    pile-up skip), until nothing is due; how many occurrences fired."""
    fired = 0
    for _ in range(rounds):
        n = fire_due_schedules()
        if not n:
            break
        fired += n
        run_pending()
    return fired


def _tick_times(schedule_id: int) -> list:
    ticks = ScheduleTick.objects.filter(schedule_id=schedule_id).order_by("tick_at")
    return list(ticks.values_list("tick_at", flat=True))


@db
def test_missed_occurrences__catch_up_fires_each_missed_slot():
    schedule_id = _later(interval=60, catch_up=True)
    first = _make_due(schedule_id, ago=timedelta(seconds=210))  # slots at -210, -150, -90, -30 s
    assert _fire_until_caught_up() == 4
    assert _tick_times(schedule_id) == [first + timedelta(seconds=60 * i) for i in range(4)]
    assert _schedule(schedule_id).next_run_at == first + timedelta(seconds=240)


@db
def test_ticks__a_schedule_keeps_only_its_recent_ticks(monkeypatch):
    monkeypatch.setattr(recurring, "TICKS_KEPT", 5)
    schedule_id = _later(interval=60, catch_up=True)
    first = _make_due(schedule_id, ago=timedelta(seconds=60 * 11 + 30))  # twelve missed slots
    assert _fire_until_caught_up() == 12
    # Pruned to the newest five at the tenth occurrence; two more since.
    assert _tick_times(schedule_id) == [first + timedelta(seconds=60 * i) for i in range(5, 12)]
    assert _schedule(schedule_id).occurrence_count == 12


# --- exactly once ----------------------------------------------------------------------------


@commits
def test_fire_due_schedules__concurrent_threads_fire_each_tick_once():
    schedule_ids = [_later(interval=3600) for _ in range(8)]
    Schedule.objects.update(next_run_at=timezone.now() - timedelta(minutes=1))
    barrier = threading.Barrier(4)
    fired: list[int] = []
    errors: list[BaseException] = []

    def fire() -> None:
        try:
            barrier.wait(timeout=30)
            for _ in range(5):
                fired.append(fire_due_schedules(limit=3))
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=fire) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert sum(fired) == 8
    assert ScheduleTick.objects.count() == 8
    assert Task.objects.count() == 8
    assert sorted(Schedule.objects.values_list("id", "occurrence_count")) == [
        (i, 1) for i in sorted(schedule_ids)
    ]
