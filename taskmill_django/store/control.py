"""Runtime control: every setter persists to the database, so all workers, the admin and the
API see the same policy. Workers read it back through ``load_policy`` once per poll interval.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.db.models.functions import Now

from .. import registry, signals
from ..enums import InterruptReason, TaskStatus
from ..exceptions import ValidationError
from ..models import PausedGroup, SchedulerSetting, Task
from ..policy import config
from ..policy.config import Policy, build_policy
from ..policy.ratelimit import RateLimit
from ..validation import validate_group
from .parking import unpark

PREEMPTED = InterruptReason.PREEMPTED
DOMAIN_PAUSED = InterruptReason.DOMAIN_PAUSED
GROUP_PAUSED = InterruptReason.GROUP_PAUSED
ALL_PAUSED = InterruptReason.ALL_PAUSED


def _put(name: str, value: Any) -> None:
    """Upsert a runtime setting (race-free: the row is locked or created under a savepoint)."""
    with transaction.atomic():
        updated = SchedulerSetting.objects.filter(name=name).update(value=value, updated_at=Now())
        if not updated:
            SchedulerSetting.objects.create(name=name, value=value)


def _delete(name: str) -> None:
    SchedulerSetting.objects.filter(name=name).delete()


def _limit(field: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError(field, f"must be an integer >= 1 or None, got {value!r}")
    return value


def set_max_concurrency(n: int | None) -> None:
    """Cluster-wide cap on running tasks (None = unlimited, overriding settings)."""
    _put(config.MAX_CONCURRENCY, _limit("max_concurrency", n) or config.NO_LIMIT)


def set_domain_max_concurrency(domain: str, n: int | None) -> None:
    _put(config.DOMAIN_CAP + domain, _limit("max_concurrency", n) or config.NO_LIMIT)


def set_group_limit(group: str, n: int) -> None:
    _put(config.GROUP_CAP + _group(group), _limit("limit", n))


def remove_group_limit(group: str) -> None:
    _put(config.GROUP_CAP + _group(group), config.NO_LIMIT)


def set_group_weight(group: str, weight: float) -> None:
    if isinstance(weight, bool) or not isinstance(weight, int | float) or weight <= 0:
        raise ValidationError("weight", f"must be a number > 0, got {weight!r}")
    _put(config.GROUP_WEIGHT + _group(group), float(weight))
    _weight_changed(group)


def remove_group_weight(group: str) -> None:
    _put(config.GROUP_WEIGHT + _group(group), config.NO_LIMIT)
    _weight_changed(group)


def reset_group_weights() -> None:
    """Forget every runtime weight: the GROUP_WEIGHTS setting applies again."""
    SchedulerSetting.objects.filter(name__startswith=config.GROUP_WEIGHT).delete()


def _weight_changed(group: str) -> None:
    _after_commit(signals.group_weight_changed, sender=group)


def _after_commit(signal: Any, **kwargs: Any) -> None:
    """Send a control signal once the change is committed (at once outside a transaction),
    so a receiver never sees a state a rollback takes back."""
    if signal.receivers:
        transaction.on_commit(lambda: signal.send_robust(**kwargs))


def set_group_minimum_slots(group: str, slots: int | None) -> None:
    if slots is not None and (isinstance(slots, bool) or not isinstance(slots, int) or slots < 0):
        raise ValidationError("slots", f"must be an integer >= 0 or None, got {slots!r}")
    _put(config.GROUP_MIN_SLOTS + _group(group), config.NO_LIMIT if slots is None else slots)


def set_rate_limit(task_type: str, limit: RateLimit | None) -> None:
    registry.get_task(task_type)
    _put(config.RATE + task_type, _rate(limit))


def set_group_rate_limit(group: str, limit: RateLimit | None) -> None:
    _put(config.GROUP_RATE + _group(group), _rate(limit))


def _rate(limit: RateLimit | None) -> Any:
    if limit is None:
        return config.NO_LIMIT
    if not isinstance(limit, RateLimit):
        raise ValidationError("rate_limit", "must be a RateLimit (RateLimit.per_second(n))")
    return limit.as_json()


def _group(group: str) -> str:
    clean = validate_group(group)
    assert clean is not None  # noqa: S101 - validate_group rejects None only when given None
    return clean


def pause_all() -> int:
    """Stop every worker from starting tasks and pause the running ones: each is asked to
    stop (its worker cancels it at the next heartbeat) and waits ``paused``, no retry spent,
    until ``resume_all()``. Returns how many running tasks were asked to pause."""
    with transaction.atomic():
        _put(config.PAUSED, True)
        asked = _ask_to_pause(Q(), ALL_PAUSED)
    _signal_all(signals.task_paused)
    return asked


def resume_all() -> int:
    """Start tasks again; the tasks ``pause_all()`` paused become pending (a pause not yet
    carried out is withdrawn, and the task keeps running). Returns how many became pending."""
    with transaction.atomic():
        _put(config.PAUSED, False)
        resumed = _lift(Q(), ALL_PAUSED)
    _signal_all(signals.task_resumed)
    return resumed


def _ask_to_pause(condition: Q, reason: str) -> int:
    """Ask the running tasks matching ``condition`` to stop and park for ``reason``. A task
    already asked to stop (cancelled, preempted, paused for another reason) keeps that
    request: it is never parked for two reasons at once."""
    return Task.objects.filter(condition, status=TaskStatus.RUNNING, cancel_reason="").update(
        cancel_reason=reason
    )


def _lift(condition: Q, reason: str) -> int:
    """Undo ``_ask_to_pause``: withdraw requests not yet carried out, unpark the tasks
    parked for ``reason``. Tasks paused for any other reason stay paused."""
    Task.objects.filter(condition, status=TaskStatus.RUNNING, cancel_reason=reason).update(
        cancel_reason=""
    )
    return unpark(condition, reason)


def _signal_all(signal: Any) -> None:
    _after_commit(signal, sender=None, task_id=None, task_type=None)


def pause_domain(domain: str) -> int:
    """Stop starting tasks of ``domain`` and pause its running ones (they resume later with
    the same retry count). Returns how many running tasks were asked to pause."""
    with transaction.atomic():
        _put(config.DOMAIN_PAUSED + domain, True)
        return _ask_to_pause(Q(domain=domain), DOMAIN_PAUSED)


def resume_domain(domain: str) -> int:
    """Resume ``domain``: its paused tasks become pending again."""
    with transaction.atomic():
        _delete(config.DOMAIN_PAUSED + domain)
        return _lift(Q(domain=domain), DOMAIN_PAUSED)


def pause_group(group: str, until: datetime | None = None) -> int:
    """Stop starting tasks of ``group`` (until ``until``, when given) and pause its running
    ones, as a domain pause does. Its pending tasks stay pending (claims skip the group).
    Returns how many running tasks were asked to pause."""
    group = _group(group)
    if until is not None and (not isinstance(until, datetime) or until.tzinfo is None):
        raise ValidationError("until", "must be a timezone-aware datetime")
    with transaction.atomic():
        if not PausedGroup.objects.filter(group_key=group).update(paused_until=until):
            PausedGroup.objects.create(group_key=group, paused_until=until)
        asked = _ask_to_pause(Q(group_key=group), GROUP_PAUSED)
    _after_commit(signals.group_paused, sender=group, until=until)
    return asked


def resume_group(group: str) -> bool:
    """Lift a group's pause: its tasks paused by it become pending. Returns whether it was
    paused."""
    group = _group(group)
    with transaction.atomic():
        deleted = PausedGroup.objects.filter(group_key=group).delete()[0]
        _lift(Q(group_key=group), GROUP_PAUSED)
    if deleted:
        _after_commit(signals.group_resumed, sender=group)
    return bool(deleted)


def resume_expired_group_pauses() -> list[str]:
    """Timed group pauses whose ``paused_until`` passed (database clock) are lifted, and
    the tasks they paused become pending."""
    expired = list(
        PausedGroup.objects.filter(paused_until__lte=Now()).values_list("group_key", flat=True)
    )
    if expired:
        with transaction.atomic():
            PausedGroup.objects.filter(group_key__in=expired, paused_until__lte=Now()).delete()
            _lift(Q(group_key__in=expired), GROUP_PAUSED)
        for group in expired:
            _after_commit(signals.group_resumed, sender=group)
    return expired


def load_policy(
    pressure: tuple[float, dict[str, float]] = (0.0, {}),
    io_budget: tuple[tuple[str, int], ...] = (),
) -> Policy:
    """Settings + domain declarations + runtime overrides + who is preempting right now
    (+ the caller's measured pressure and saturated IO directions)."""

    overrides = dict(SchedulerSetting.objects.values_list("name", "value"))
    paused = set(
        PausedGroup.objects.filter(
            Q(paused_until__isnull=True) | Q(paused_until__gt=Now())
        ).values_list("group_key", flat=True)
    )
    domains = {d.name: d.max_concurrency for d in registry.all_domains()}
    return build_policy(overrides, paused, domains, preemptor_priority(), pressure, io_budget)


def preemptor_priority() -> int | None:
    """The most urgent priority among preemptors pending (and due) or running, if any."""
    from ..conf import app_settings

    return (
        _active_preemptors(int(app_settings.PREEMPT_PRIORITY))
        .order_by("priority")
        .values_list("priority", flat=True)
        .first()
    )


def _active_preemptors(threshold: int) -> Any:
    """Urgent tasks running, or pending and due: one waiting for its run_after (or a retry
    backoff) holds nothing back."""
    due = Q(status=TaskStatus.PENDING) & (Q(run_after__isnull=True) | Q(run_after__lte=Now()))
    return Task.objects.filter(due | Q(status=TaskStatus.RUNNING), priority__lte=threshold)


def preempt_below(priority: int) -> int:
    """Ask running tasks less urgent than ``priority`` to pause (fenced, via their worker)."""
    return Task.objects.filter(
        status=TaskStatus.RUNNING, priority__gt=priority, cancel_reason=""
    ).update(cancel_reason=PREEMPTED)


def resume_preempted() -> int:
    """When no preemptor is pending or running any more, preempted tasks become pending."""
    from ..conf import app_settings

    active = _active_preemptors(int(app_settings.PREEMPT_PRIORITY)).exists()
    if active:
        return 0
    return unpark(Q(), PREEMPTED)
