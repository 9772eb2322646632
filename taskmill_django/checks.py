"""System checks for ``settings.TASKMILL`` (ids taskmill.E0NN / W0NN are never reused)."""

from __future__ import annotations

from typing import Any

from django.core.checks import CheckMessage, Error, Warning, register

from .conf import DEFAULTS, app_settings

_POSITIVE_NUMBERS = (
    "POLL_INTERVAL",
    "HEARTBEAT_INTERVAL",
    "LEASE_TIMEOUT",
    "EXPIRY_SWEEP_INTERVAL",
    "PROGRESS_INTERVAL",
)
_NON_NEGATIVE_NUMBERS = ("SHUTDOWN_TIMEOUT",)
_POSITIVE_INTS = ("PRUNE_INTERVAL", "CLAIM_BATCH_SIZE", "MAX_RESCUES")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@register("taskmill")
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    s = app_settings
    errors: list[CheckMessage] = []
    for name in sorted(s.user_keys() - set(DEFAULTS)):
        errors.append(
            Warning(
                f"TASKMILL[{name!r}] is not a known setting.",
                hint="Check the spelling against docs/reference/settings.md.",
                id="taskmill.W001",
            )
        )
    for name in _POSITIVE_NUMBERS:
        value = getattr(s, name)
        if not _is_number(value) or value <= 0:
            errors.append(_error(name, value, "a number > 0", "taskmill.E001"))
    for name in _NON_NEGATIVE_NUMBERS:
        value = getattr(s, name)
        if not _is_number(value) or value < 0:
            errors.append(_error(name, value, "a number >= 0", "taskmill.E002"))
    for name in _POSITIVE_INTS:
        value = getattr(s, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            errors.append(_error(name, value, "an integer >= 1", "taskmill.E003"))
    max_c = s.MAX_CONCURRENCY
    if max_c is not None and (not isinstance(max_c, int) or isinstance(max_c, bool) or max_c < 1):
        errors.append(_error("MAX_CONCURRENCY", max_c, "None or an integer >= 1", "taskmill.E004"))
    retries = s.MAX_RETRIES
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        errors.append(_error("MAX_RETRIES", retries, "an integer >= 0", "taskmill.E005"))
    preempt = s.PREEMPT_PRIORITY
    if not isinstance(preempt, int) or isinstance(preempt, bool) or not 0 <= preempt <= 255:
        errors.append(_error("PREEMPT_PRIORITY", preempt, "an integer in 0..255", "taskmill.E006"))
    ttl = s.DEFAULT_TTL
    if ttl is not None and (not _is_number(ttl) or ttl <= 0):
        errors.append(
            _error("DEFAULT_TTL", ttl, "None or a number of seconds > 0", "taskmill.E007")
        )
    errors.extend(_check_retention(s.RETENTION))
    if _is_number(s.HEARTBEAT_INTERVAL) and _is_number(s.LEASE_TIMEOUT):
        if s.LEASE_TIMEOUT < 2 * s.HEARTBEAT_INTERVAL:
            errors.append(
                Error(
                    "TASKMILL['LEASE_TIMEOUT'] must be at least twice HEARTBEAT_INTERVAL.",
                    hint="Otherwise one late heartbeat makes a live worker look dead and its "
                    "tasks run twice.",
                    id="taskmill.E009",
                )
            )
    return errors


def _check_retention(retention: Any) -> list[CheckMessage]:
    if retention is None:
        return []
    ok = isinstance(retention, dict) and set(retention) <= {"max_count", "max_age_days"}
    if ok:
        for value in retention.values():
            if value is not None and (not _is_number(value) or value < 0):
                ok = False
    if ok:
        return []
    return [
        _error(
            "RETENTION",
            retention,
            "None or {'max_count': int, 'max_age_days': float}",
            "taskmill.E008",
        )
    ]


def _error(name: str, value: Any, expected: str, check_id: str) -> Error:
    return Error(
        f"TASKMILL[{name!r}] is {value!r}; expected {expected}.",
        hint=f"Fix {name} in settings.TASKMILL or remove it to use the default.",
        id=check_id,
    )
