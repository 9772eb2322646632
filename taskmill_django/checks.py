"""System checks for ``settings.TASKMILL`` (ids taskmill.E0NN / W0NN are never reused)."""

from __future__ import annotations

import fnmatch
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
_NON_NEGATIVE_NUMBERS = (
    "SHUTDOWN_TIMEOUT",
    "TIMEOUT_GRACE",
    "COALESCE_WINDOW",
    "COUNTER_FLUSH_INTERVAL",
)
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
    errors.extend(_check_api())
    errors.extend(_check_security(s))
    errors.extend(_check_policy_settings(s))
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
        elif s.LEASE_TIMEOUT < 3 * s.HEARTBEAT_INTERVAL:
            errors.append(
                Error(
                    "TASKMILL['LEASE_TIMEOUT'] must be at least three times HEARTBEAT_INTERVAL.",
                    hint="A worker that cannot renew its lease stops its tasks after "
                    "LEASE_TIMEOUT - HEARTBEAT_INTERVAL, so that they are stopped before "
                    "another worker may rescue them; that must leave room for two heartbeats.",
                    id="taskmill.E060",
                )
            )
    errors.extend(_check_worker_connections(s))
    return errors


def _check_worker_connections(s: Any) -> list[CheckMessage]:
    """Timeouts of worker connections, the pooler flag, the LISTEN alias, claiming ahead
    (E061-E064)."""
    from django.conf import settings

    errors: list[CheckMessage] = []
    for name in ("STATEMENT_TIMEOUT", "LOCK_TIMEOUT"):
        value = getattr(s, name)
        if value is not None and (not _is_number(value) or value <= 0):
            errors.append(_error(name, value, "None or a number of seconds > 0", "taskmill.E061"))
    if not isinstance(s.TRANSACTION_POOLING, bool):
        errors.append(
            _error("TRANSACTION_POOLING", s.TRANSACTION_POOLING, "True or False", "taskmill.E062")
        )
    ahead = s.CLAIM_AHEAD
    if ahead is not None and (not isinstance(ahead, int) or isinstance(ahead, bool) or ahead < 0):
        errors.append(_error("CLAIM_AHEAD", ahead, "None or an integer >= 0", "taskmill.E064"))
    alias = s.LISTEN_DATABASE
    if alias is not None and alias not in settings.DATABASES:
        errors.append(
            _error("LISTEN_DATABASE", alias, "None or an alias in DATABASES", "taskmill.E063")
        )
    if s.TRANSACTION_POOLING is True:
        errors.extend(_check_pooled_database(settings.DATABASES.get("default") or {}))
    return errors


def _check_pooled_database(database: dict[str, Any]) -> list[CheckMessage]:
    """Under a transaction-mode pooler, session state the default database would keep
    breaks as soon as the next transaction lands on another server connection (W065, W066)."""
    if "postgresql" not in str(database.get("ENGINE", "")):
        return []
    warnings: list[CheckMessage] = []
    if not database.get("DISABLE_SERVER_SIDE_CURSORS"):
        warnings.append(
            Warning(
                "TASKMILL['TRANSACTION_POOLING'] is on but DATABASES['default'] keeps "
                "server-side cursors: QuerySet.iterator() outside a transaction (admin bulk "
                "actions) opens a cursor the pooler cannot keep.",
                hint="Set DATABASES['default']['DISABLE_SERVER_SIDE_CURSORS'] = True.",
                id="taskmill.W065",
            )
        )
    options = database.get("OPTIONS") or {}
    if options.get("server_side_binding") is True or options.get("prepare_threshold") is not None:
        warnings.append(
            Warning(
                "TASKMILL['TRANSACTION_POOLING'] is on but DATABASES['default'] uses "
                "server-side prepared statements (OPTIONS 'prepare_threshold' or "
                "'server_side_binding'): a statement prepared on one server connection is "
                "missing on the next.",
                hint="Remove both options unless the pooler tracks prepared statements "
                "(PgBouncer >= 1.21 with max_prepared_statements > 0).",
                id="taskmill.W066",
            )
        )
    return warnings


def _check_api() -> list[CheckMessage]:
    """The REST API's settings, found wrong at startup rather than as a 500 on a request.

    The API is an extra (``taskmill-django[api]``): without DRF there is nothing to check."""
    from importlib.util import find_spec

    from django.core.exceptions import ImproperlyConfigured

    if find_spec("rest_framework") is None:
        return []

    from .api.permissions import permission_classes
    from .api.throttling import parse_submit_rate

    errors: list[CheckMessage] = []
    for check, check_id in (
        (permission_classes, "taskmill.E019"),
        (lambda: parse_submit_rate(app_settings.API_SUBMIT_THROTTLE_RATE), "taskmill.E020"),
    ):
        try:
            check()
        except ImproperlyConfigured as exc:
            errors.append(Error(str(exc), id=check_id))
    return errors


def _check_security(s: Any) -> list[CheckMessage]:
    """Submission over HTTP, redaction and the payload size limit (E030-E032, W030)."""
    from . import registry

    errors: list[CheckMessage] = []
    patterns = s.API_SUBMIT_TYPES
    if not _is_string_list(patterns):
        errors.append(
            _error(
                "API_SUBMIT_TYPES",
                patterns,
                "a list of qualified task types or shell patterns such as 'media::*'",
                "taskmill.E030",
            )
        )
    else:
        declared = [t.task_type for t in registry.all_tasks()]
        for pattern in patterns:
            if not fnmatch.filter(declared, pattern):
                errors.append(
                    Warning(
                        f"TASKMILL['API_SUBMIT_TYPES'] entry {pattern!r} matches no declared "
                        "task type.",
                        hint="Spell it as 'domain::name' or a pattern such as 'domain::*'.",
                        id="taskmill.W030",
                    )
                )
    keys = s.SENSITIVE_KEYS
    if not _is_string_list(keys) or not all(keys):
        errors.append(
            _error("SENSITIVE_KEYS", keys, "a list of non-empty key names", "taskmill.E031")
        )
    size = s.MAX_PAYLOAD_BYTES
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        errors.append(_error("MAX_PAYLOAD_BYTES", size, "an integer >= 1", "taskmill.E032"))
    return errors


def _is_string_list(value: Any) -> bool:
    return isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)


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


def _check_policy_settings(s: Any) -> list[CheckMessage]:
    """Limits, weights, rate limits, aging, throttling and schedules (E010-E016)."""
    from .exceptions import ValidationError
    from .policy.aging import Aging
    from .policy.ratelimit import RateLimit

    errors: list[CheckMessage] = []
    for name in ("GROUP_CONCURRENCY", "GROUP_MINIMUM_SLOTS"):
        value = getattr(s, name)
        ok = isinstance(value, dict) and all(
            isinstance(v, int)
            and not isinstance(v, bool)
            and v >= (1 if name == "GROUP_CONCURRENCY" else 0)
            for v in value.values()
        )
        if not ok:
            errors.append(_error(name, value, "a dict of group -> integer limit", "taskmill.E010"))
    dgc = s.DEFAULT_GROUP_CONCURRENCY
    if dgc is not None and (not isinstance(dgc, int) or isinstance(dgc, bool) or dgc < 1):
        errors.append(
            _error("DEFAULT_GROUP_CONCURRENCY", dgc, "None or an integer >= 1", "taskmill.E010")
        )
    weights = s.GROUP_WEIGHTS
    if not isinstance(weights, dict) or not all(_is_number(v) and v > 0 for v in weights.values()):
        errors.append(
            _error("GROUP_WEIGHTS", weights, "a dict of group -> weight > 0", "taskmill.E011")
        )
    if not _is_number(s.DEFAULT_GROUP_WEIGHT) or s.DEFAULT_GROUP_WEIGHT <= 0:
        errors.append(
            _error("DEFAULT_GROUP_WEIGHT", s.DEFAULT_GROUP_WEIGHT, "a number > 0", "taskmill.E011")
        )
    for name in ("RATE_LIMITS", "GROUP_RATE_LIMITS"):
        value = getattr(s, name)
        try:
            if not isinstance(value, dict):
                raise ValidationError(name, "not a dict")
            for limit in value.values():
                RateLimit.from_json(limit)
        except ValidationError:
            errors.append(_error(name, value, "a dict of name -> RateLimit", "taskmill.E012"))
    try:
        Aging.from_setting(s.PRIORITY_AGING)
    except (ValidationError, TypeError) as exc:
        errors.append(
            _error(
                "PRIORITY_AGING", s.PRIORITY_AGING, f"a valid aging dict ({exc})", "taskmill.E013"
            )
        )
    throttle = s.THROTTLE_POLICY
    if throttle is not None and not (
        isinstance(throttle, dict)
        and all(isinstance(k, int) and 0 <= k <= 255 and _is_number(v) for k, v in throttle.items())
    ):
        errors.append(
            _error("THROTTLE_POLICY", throttle, "None or {priority: pressure}", "taskmill.E014")
        )
    if not isinstance(s.PRESSURE_SOURCES, list | tuple) or not all(
        isinstance(p, str) for p in s.PRESSURE_SOURCES
    ):
        errors.append(
            _error(
                "PRESSURE_SOURCES", s.PRESSURE_SOURCES, "a list of dotted paths", "taskmill.E015"
            )
        )
    errors.extend(_check_io(s.IO_CAPACITY, s.IO_SAMPLER))
    errors.extend(_check_schedules(s.SCHEDULES))
    return errors


def _check_io(capacity: Any, sampler: Any) -> list[CheckMessage]:
    from django.utils.module_loading import import_string

    from .exceptions import ValidationError
    from .policy.io import parse_capacity

    errors: list[CheckMessage] = []
    try:
        parse_capacity(capacity)
    except ValidationError as exc:
        errors.append(
            _error(
                "IO_CAPACITY", capacity, f"bytes per second per direction ({exc})", "taskmill.E017"
            )
        )
    if sampler is not None:
        try:
            import_string(sampler)
        except (ImportError, TypeError, ValueError):
            errors.append(
                _error("IO_SAMPLER", sampler, "an importable dotted path", "taskmill.E018")
            )
    return errors


def _check_schedules(schedules: Any) -> list[CheckMessage]:
    from .exceptions import TaskmillError
    from .store.recurring import parse_schedule_setting

    if not isinstance(schedules, dict):
        return [_error("SCHEDULES", schedules, "a dict of name -> schedule", "taskmill.E016")]
    errors: list[CheckMessage] = []
    for name, spec in schedules.items():
        try:
            parse_schedule_setting(str(name), spec)
        except TaskmillError as exc:
            errors.append(
                Error(
                    f"TASKMILL['SCHEDULES'][{name!r}] is invalid: {exc}",
                    hint="See docs/howto/schedules.md for the keys a schedule takes.",
                    id="taskmill.E016",
                )
            )
    return errors
