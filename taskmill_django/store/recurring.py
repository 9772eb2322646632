"""Recurring schedules: creation, exactly-once firing, pause/resume/cancel, declarative sync.

Exactly once per occurrence (RELIABILITY G5): a worker fires a due schedule while holding its row
lock (``SKIP LOCKED``, so workers never queue behind each other), and each occurrence inserts a
``ScheduleTick`` row under a unique (schedule, tick_at) constraint in the same transaction as the
task it submits. A second worker that somehow reached the same occurrence fails on the
constraint and submits nothing.
"""

from __future__ import annotations

import logging
import random
import time
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, OperationalError, connection, transaction
from django.db.models.functions import Now

from .. import clock, registry, signals
from ..cron import RecurringSchedule, next_occurrence
from ..enums import TaskStatus
from ..exceptions import TaskNotFound, ValidationError
from ..models import Schedule, ScheduleTick, Task
from .db import send_on_commit

logger = logging.getLogger(__name__)

# Submission options a schedule may carry for its occurrences.
SCHEDULE_OPTIONS = ("priority", "tags", "group", "ttl", "ttl_from", "label", "max_retries")


def create_schedule(
    task_type: str,
    payload: dict[str, Any],
    options: dict[str, Any],
    recurring: RecurringSchedule,
    *,
    name: str | None = None,
) -> tuple[Schedule, int | None, bool]:
    """Create a schedule (or find the one named ``name``); fire it at once when due.

    Returns (schedule, id of the task fired now or None, created?).
    """
    now = clock.now()
    with transaction.atomic():
        if name is not None:
            # A plain read: locking a row that may not exist takes gap locks on InnoDB and
            # deadlocks concurrent creators. The unique name decides below.
            existing = Schedule.objects.filter(name=name).first()
            if existing is not None:
                return existing, None, False
        schedule = Schedule(
            name=name,
            task_type=task_type,
            domain=task_type.split("::", 1)[0],
            payload=payload,
            options=options,
            next_run_at=recurring.first_run(now),
            **_timing(recurring),
        )
        try:
            with transaction.atomic():  # savepoint: a concurrent creator of this name may win
                schedule.save()
        except IntegrityError:
            if name is None:
                raise
            return Schedule.objects.get(name=name), None, False
        due = schedule.next_run_at is not None and schedule.next_run_at <= now
        fired = _fire(schedule, now) if due else None
    return schedule, fired, True


def _timing(recurring: RecurringSchedule) -> dict[str, Any]:
    return {
        "interval_seconds": recurring.interval_seconds,
        "cron": recurring.cron,
        "timezone": recurring.zone,
        "max_occurrences": recurring.max_occurrences,
        "catch_up": recurring.catch_up,
    }


def fire_due_schedules(limit: int = 50) -> int:
    """Fire every due, unpaused schedule once; return how many tasks were submitted."""
    fired = 0
    due_now = Schedule.objects.filter(is_paused=False, next_run_at__lte=Now())
    if not due_now.exists():  # a plain read first: most passes find nothing to fire
        return 0
    with transaction.atomic():
        due = list(due_now.select_for_update(skip_locked=True).order_by("next_run_at")[:limit])
        if not due:
            return 0
        # The ticks are compared with the database clock: the next one is computed from it too.
        now = clock.db_now()
        for schedule in due:
            if _fire(schedule, now) is not None:
                fired += 1
    return fired


def _fire(schedule: Schedule, now: datetime) -> int | None:
    """Fire the occurrence at ``schedule.next_run_at`` (row locked by the caller)."""
    tick = schedule.next_run_at
    assert tick is not None  # noqa: S101 - callers only pass due schedules
    task_id = None
    if _previous_still_pending(schedule):
        schedule.skipped_count += 1
        send_on_commit(signals.recurring_skipped, schedule.task_type, schedule_id=schedule.id)
    else:
        task_id = _submit_occurrence(schedule, tick)
    _advance(schedule, tick, now)
    return task_id


def _previous_still_pending(schedule: Schedule) -> bool:
    """Pile-up prevention: the last occurrence has not even started yet."""
    if schedule.last_task_id is None:
        return False
    return Task.objects.filter(id=schedule.last_task_id, status=TaskStatus.PENDING).exists()


def _submit_occurrence(schedule: Schedule, tick: datetime) -> int | None:
    from .submit import submit_tasks  # submit sits beside us; imported late to keep it light

    definition = registry.find_task(schedule.task_type)
    if definition is None:
        logger.warning("schedule_id=%s names unknown task type %s", schedule.id, schedule.task_type)
        return None
    try:
        with transaction.atomic():  # savepoint: a lost race rolls back only this occurrence
            tick_row = ScheduleTick.objects.create(schedule=schedule, tick_at=tick)
            options = {k: v for k, v in schedule.options.items() if k in SCHEDULE_OPTIONS}
            call = definition.using(**options, key=f"schedule:{schedule.id}:{tick.isoformat()}")
            new = call.definition.build(schedule.payload, call.options)
            outcome = submit_tasks([new])[0]
            tick_row.task_id = outcome.id
            tick_row.save(update_fields=["task_id"])
    except IntegrityError:
        logger.info("schedule_id=%s tick=%s already fired elsewhere", schedule.id, tick)
        return None
    except ValidationError as exc:
        logger.warning("schedule_id=%s cannot submit: %s", schedule.id, exc)
        return None
    schedule.occurrence_count += 1
    schedule.last_task_id = outcome.id
    schedule.last_run_at = tick
    if schedule.occurrence_count % TICKS_KEPT == 0:
        _prune_ticks(schedule)
    return outcome.id


# Occurrences a schedule keeps a tick row for (between TICKS_KEPT and twice that many).
TICKS_KEPT = 100


def _prune_ticks(schedule: Schedule) -> None:
    """Drop all but the newest ``TICKS_KEPT`` ticks of ``schedule``, so a schedule firing every
    second does not grow its table without end. Safe: occurrences fire in order under the
    schedule's row lock and ``next_run_at`` only moves forward, so an old tick can never be
    raced for again; the admin shows the most recent twenty."""
    ticks = ScheduleTick.objects.filter(schedule=schedule)
    oldest_kept = ticks.order_by("-tick_at").values_list("tick_at", flat=True)[TICKS_KEPT - 1 :]
    cutoff = oldest_kept.first()
    if cutoff is not None:
        ticks.filter(tick_at__lt=cutoff).delete()


def _advance(schedule: Schedule, tick: datetime, now: datetime) -> None:
    """Move ``next_run_at`` on. Without catch_up, missed slots collapse into the one just run."""
    if schedule.remaining == 0:
        schedule.next_run_at = None
        send_on_commit(signals.recurring_completed, schedule.task_type, schedule_id=schedule.id)
    else:
        schedule.next_run_at = _next_after(schedule, tick, now)
    schedule.save(
        update_fields=[
            "next_run_at",
            "occurrence_count",
            "skipped_count",
            "last_task_id",
            "last_run_at",
        ]
    )


def _next_after(schedule: Schedule, tick: datetime, now: datetime) -> datetime:
    nxt = next_occurrence(schedule.cron, schedule.interval_seconds, schedule.timezone, tick)
    if schedule.catch_up or nxt > now:
        return nxt
    if schedule.interval_seconds:
        # Keep the phase: the first slot after now on the original grid.
        step = schedule.interval_seconds
        missed = int((now - tick).total_seconds() // step) + 1
        return tick + timedelta(seconds=step * missed)
    return next_occurrence(schedule.cron, None, schedule.timezone, now)


def set_paused(schedule_id: int, paused: bool, domain: str | None = None) -> Schedule:
    with transaction.atomic():
        schedule = _locked(schedule_id, domain)
        schedule.is_paused = paused
        if not paused and schedule.next_run_at is not None:
            # Resuming does not replay what was missed while paused.
            now = clock.now()
            if schedule.next_run_at < now and not schedule.catch_up:
                schedule.next_run_at = now
        schedule.save(update_fields=["is_paused", "next_run_at"])
    return schedule


def cancel_schedule(schedule_id: int, domain: str | None = None) -> None:
    """Delete the schedule; tasks it already submitted are left alone."""
    with transaction.atomic():
        _locked(schedule_id, domain).delete()


def _locked(schedule_id: int, domain: str | None) -> Schedule:
    qs = Schedule.objects.select_for_update().filter(id=schedule_id)
    if domain is not None:
        qs = qs.filter(domain=domain)
    schedule = qs.first()
    if schedule is None:
        raise TaskNotFound(f"no recurring schedule with id {schedule_id}")
    return schedule


def declared_schedules() -> dict[
    str, tuple[str, dict[str, Any], dict[str, Any], RecurringSchedule]
]:
    """Schedules declared in ``TASKMILL["SCHEDULES"]`` and by ``@domain.task(schedule=...)``,
    by name: (task_type, payload, options, recurrence). Raises ValidationError on a bad entry."""
    from ..conf import app_settings

    found: dict[str, tuple[str, dict[str, Any], dict[str, Any], RecurringSchedule]] = {}
    for definition in registry.all_tasks():
        if definition.schedule is not None:
            found[definition.task_type] = (definition.task_type, {}, {}, definition.schedule)
    for name, spec in (app_settings.SCHEDULES or {}).items():
        found[str(name)] = parse_schedule_setting(str(name), spec)
    return found


def parse_schedule_setting(
    name: str, spec: Any
) -> tuple[str, dict[str, Any], dict[str, Any], RecurringSchedule]:
    """Validate one ``SCHEDULES`` entry: {"task", "cron" | "interval", "timezone", "payload",
    "max_occurrences", "catch_up", "initial_delay", and submission options}."""
    field = f"SCHEDULES[{name!r}]"
    if not isinstance(spec, dict):
        raise ValidationError(field, "must be a dict")
    allowed = {
        "task", "cron", "interval", "timezone", "payload", "max_occurrences", "catch_up",
        "initial_delay", *SCHEDULE_OPTIONS,
    }  # fmt: skip
    unknown = set(spec) - allowed
    if unknown:
        raise ValidationError(field, f"unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
    task_type = spec.get("task")
    if not isinstance(task_type, str):
        raise ValidationError(f"{field}.task", "must name a task type like 'domain::name'")
    definition = registry.get_task(task_type)
    payload = spec.get("payload") or {}
    options = {k: _jsonable(spec[k]) for k in SCHEDULE_OPTIONS if k in spec}
    recurring = RecurringSchedule(
        interval=spec.get("interval"),
        cron=spec.get("cron"),
        timezone=spec.get("timezone"),
        initial_delay=spec.get("initial_delay"),
        max_occurrences=spec.get("max_occurrences"),
        catch_up=spec.get("catch_up", False),
    )
    call = definition.using(**options)  # validates the options
    call.definition.build(payload, call.options)  # validates the payload
    return task_type, payload, options, recurring


def _jsonable(value: Any) -> Any:
    """Schedule options are stored as JSON: durations become seconds."""
    return value.total_seconds() if isinstance(value, timedelta) else value


def sync_declared_schedules(attempts: int = 5) -> tuple[int, int, int]:
    """Sync declarative schedules, retrying when the database picks this run as a deadlock
    victim (InnoDB, when several workers start at once): the sync is idempotent."""
    for attempt in range(attempts):
        try:
            return _sync_declared_schedules()
        except OperationalError:
            if attempt == attempts - 1 or connection.in_atomic_block:
                raise
            time.sleep(0.05 * (attempt + 1) + random.random() * 0.05)  # noqa: S311
    raise AssertionError("unreachable")  # pragma: no cover


def _sync_declared_schedules() -> tuple[int, int, int]:
    """Create, update and remove declarative schedules to match the code and settings.

    Safe when many workers start at once: rows are matched by unique name, created under a
    savepoint (a concurrent creator wins and we update its row), never duplicated.
    Returns (created, updated, removed).
    """
    declared = declared_schedules()
    created = updated = 0
    now = clock.now()
    with transaction.atomic():
        existing = {
            s.name: s for s in Schedule.objects.select_for_update().filter(is_declarative=True)
        }
        for name, (task_type, payload, options, recurring) in declared.items():
            row = existing.get(name)
            if row is None:
                try:
                    with transaction.atomic():
                        Schedule.objects.create(
                            name=name,
                            task_type=task_type,
                            domain=task_type.split("::", 1)[0],
                            payload=payload,
                            options=options,
                            is_declarative=True,
                            next_run_at=recurring.first_run(now),
                            **_timing(recurring),
                        )
                    created += 1
                    continue
                except IntegrityError:
                    row = Schedule.objects.select_for_update().get(name=name)
            if _update_declared(row, task_type, payload, options, recurring, now):
                updated += 1
        gone = [name for name in existing if name not in declared]
        removed = Schedule.objects.filter(is_declarative=True, name__in=gone).delete()[0]
    if created or updated or gone:
        logger.info(
            "schedules synced created=%s updated=%s removed=%s", created, updated, len(gone)
        )
    return created, updated, len(gone) if removed else 0


def _update_declared(
    row: Schedule,
    task_type: str,
    payload: dict[str, Any],
    options: dict[str, Any],
    recurring: RecurringSchedule,
    now: datetime,
) -> bool:
    timing = _timing(recurring)
    wanted = {"task_type": task_type, "payload": payload, "options": options, **timing}
    changed = {k: v for k, v in wanted.items() if getattr(row, k) != v}
    if not changed and row.is_declarative:
        return False
    timing_changed = any(k in changed for k in ("interval_seconds", "cron", "timezone"))
    for key, value in changed.items():
        setattr(row, key, value)
    row.is_declarative = True
    row.domain = task_type.split("::", 1)[0]
    if timing_changed:
        row.next_run_at = recurring.first_run(now)
    row.save()
    return True


def schedule_rows(domain: str | None = None) -> list[Schedule]:
    qs = Schedule.objects.order_by("id")
    return list(qs.filter(domain=domain) if domain else qs)
