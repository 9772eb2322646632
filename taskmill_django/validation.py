"""Input rules shared by every entry point (Python API, admin, REST, commands). Pure functions.

>>> a = dedup_key("media::thumb", {"b": 1, "a": [1, 2]})
>>> a == dedup_key("media::thumb", {"a": [1, 2], "b": 1})
True
>>> validate_priority(300)
Traceback (most recent call last):
...
taskmill_django.exceptions.ValidationError: priority: must be an integer in 0..255, got 300
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from .conf import app_settings
from .enums import MAX_PRIORITY, MIN_PRIORITY
from .exceptions import ValidationError

JSONValue = None | bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"]

MAX_TAGS = 32
MAX_TAG_KEY = 64
MAX_TAG_VALUE = 256
MAX_LABEL = 255
MAX_GROUP = 128
MAX_SECONDS = 100 * 365.25 * 86400


# One encoder for every call: json.dumps() with options builds a new one each time, which
# costs as much as encoding a small payload (batch submission encodes one per task).
_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)

_JSON_TYPES = (str, int, float, bool, type(None), list, tuple, dict)


def how_to_convert(value: Any) -> str:
    """What to pass instead of a value JSON cannot hold, and how the task gets it back.

    Payloads are plain JSON on purpose: what a task receives is exactly what was stored and
    shown in the admin and the API, on every database, whoever submitted it (Python, HTTP,
    a schedule). So values that ``DjangoJSONEncoder`` would turn into strings are refused
    with the conversion to write, rather than converted silently into a different type.

    >>> from decimal import Decimal
    >>> how_to_convert(Decimal("1.50"))
    'pass str(value) and Decimal(text) in the task (exact)'
    """
    from datetime import date, time
    from decimal import Decimal
    from pathlib import PurePath
    from uuid import UUID

    if isinstance(value, datetime | date | time):
        kind = type(value).__name__
        return f"pass value.isoformat() and {kind}.fromisoformat(text) in the task"
    if isinstance(value, timedelta):
        return "pass value.total_seconds() and timedelta(seconds=n) in the task"
    if isinstance(value, Decimal):
        return "pass str(value) and Decimal(text) in the task (exact)"
    if isinstance(value, UUID):
        return "pass str(value) and UUID(text) in the task"
    if isinstance(value, PurePath):
        return "pass str(value) and Path(text) in the task"
    if isinstance(value, set | frozenset):
        return "pass sorted(value) (a list)"
    if isinstance(value, bytes | bytearray):
        return "pass base64 text (base64.b64encode(value).decode())"
    if hasattr(value, "_meta") and hasattr(value, "pk"):
        return "pass its primary key (value.pk) and load the row in the task"
    return "pass only dicts, lists, strings, numbers, booleans and None"


def _first_non_json(value: Any, where: str) -> tuple[str, Any] | None:
    """The path and value of the first thing JSON cannot hold (only on the error path)."""
    if isinstance(value, dict):
        for key, item in value.items():
            found = _first_non_json(item, f"{where}[{key!r}]")
            if found:
                return found
        return None
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = _first_non_json(item, f"{where}[{index}]")
            if found:
                return found
        return None
    return None if isinstance(value, _JSON_TYPES) else (where, value)


def canonical_json(payload: Any) -> str:
    """Stable JSON text (sorted keys, no spaces) used for dedup keys and size checks."""
    try:
        return _CANONICAL.encode(payload)
    except (TypeError, ValueError) as exc:
        found = _first_non_json(payload, "payload")
        if found is None:
            raise ValidationError("payload", f"must be JSON-serializable: {exc}") from exc
        where, value = found
        raise ValidationError(
            "payload",
            f"{where} is of type {type(value).__name__}, which is not JSON-serializable: "
            f"{how_to_convert(value)}",
        ) from exc


def validate_payload(payload: Any) -> str:
    """Check the payload is a JSON object of at most ``MAX_PAYLOAD_BYTES`` (1 MiB by default);
    return its canonical text."""
    if not isinstance(payload, Mapping):
        raise ValidationError("payload", f"must be a JSON object, got {type(payload).__name__}")
    for name in payload:
        if not isinstance(name, str):
            raise ValidationError("payload", f"keys must be strings, got {name!r}")
    text = canonical_json(payload if type(payload) is dict else dict(payload))
    if "\x00" in text:
        raise ValidationError("payload", "must not contain NUL characters (\\u0000)")
    try:
        size = len(text.encode())
    except UnicodeEncodeError as exc:
        raise ValidationError("payload", f"is not valid Unicode text: {exc.reason}") from None
    limit = app_settings.MAX_PAYLOAD_BYTES
    if size > limit:
        raise ValidationError(
            "payload", f"is {size} bytes; the limit is {limit} (TASKMILL['MAX_PAYLOAD_BYTES'])"
        )
    return text


def dedup_key(
    task_type: str, canonical_payload_or_payload: Any, explicit: str | None = None
) -> str:
    """SHA-256 hex of the qualified type plus the explicit key, or else the canonical payload."""
    if explicit is not None:
        material = f"{task_type}\x00key\x00{explicit}"
    else:
        text = canonical_payload_or_payload
        if not isinstance(text, str):
            text = canonical_json(text)
        material = f"{task_type}\x00payload\x00{text}"
    return hashlib.sha256(material.encode()).hexdigest()


def validate_key(key: Any) -> str:
    if not isinstance(key, str) or not key:
        raise ValidationError("key", f"must be a non-empty string, got {key!r}")
    if len(key) > 1024:
        raise ValidationError("key", f"is {len(key)} characters; the limit is 1024")
    return key


def validate_priority(priority: Any) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ValidationError("priority", f"must be an integer in 0..255, got {priority!r}")
    if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise ValidationError("priority", f"must be an integer in 0..255, got {priority!r}")
    return int(priority)


def validate_tags(tags: Any) -> dict[str, str]:
    if tags is None:
        return {}
    if not isinstance(tags, Mapping):
        raise ValidationError("tags", f"must be a mapping of str to str, got {tags!r}")
    if len(tags) > MAX_TAGS:
        raise ValidationError("tags", f"has {len(tags)} entries; the limit is {MAX_TAGS}")
    clean: dict[str, str] = {}
    for key, value in tags.items():
        if not isinstance(key, str) or not key:
            raise ValidationError("tags", f"keys must be non-empty strings, got {key!r}")
        if "\x00" in key or (isinstance(value, str) and "\x00" in value):
            raise ValidationError("tags", f"tag {key[:20]!r} must not contain NUL characters")
        if not isinstance(value, str):
            raise ValidationError("tags", f"value of {key!r} must be a string, got {value!r}")
        if len(key) > MAX_TAG_KEY:
            raise ValidationError("tags", f"key {key[:20]!r}... is over {MAX_TAG_KEY} characters")
        if len(value) > MAX_TAG_VALUE:
            raise ValidationError("tags", f"value of {key!r} is over {MAX_TAG_VALUE} characters")
        clean[key] = value
    return clean


def validate_sensitive(paths: Any) -> tuple[str, ...]:
    """``sensitive=`` of a task: dotted paths into the payload (``"card.number"``)."""
    if isinstance(paths, str) or not isinstance(paths, list | tuple | set | frozenset):
        raise ValidationError(
            "sensitive", f"must be a list or tuple of dotted payload paths, got {paths!r}"
        )
    clean = []
    for path in paths:
        if not isinstance(path, str) or not all(path.split(".")):
            raise ValidationError(
                "sensitive", f"each path is a non-empty dotted name like 'card.number': {path!r}"
            )
        clean.append(path)
    return tuple(clean)


def validate_label(label: Any) -> str:
    if not isinstance(label, str) or len(label) > MAX_LABEL:
        raise ValidationError("label", f"must be a string of at most {MAX_LABEL} characters")
    return label


def validate_group(group: Any) -> str | None:
    if group is None:
        return None
    if not isinstance(group, str) or not group or len(group) > MAX_GROUP:
        raise ValidationError("group", f"must be a non-empty string of at most {MAX_GROUP} chars")
    return group


def validate_seconds(field: str, value: Any, *, allow_none: bool = True) -> float | None:
    """Seconds given as a number or timedelta; negative values are rejected."""
    if value is None and allow_none:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(field, f"expected seconds or a timedelta, got {value!r}")
    if value < 0:
        raise ValidationError(field, f"must not be negative, got {value!r}")
    if value > MAX_SECONDS:
        raise ValidationError(field, f"must be at most {MAX_SECONDS:.0f} s (100 years)")
    return float(value)


def validate_timeout(value: Any, field: str = "timeout") -> float | None:
    """A time limit: seconds > 0 or a timedelta, or None for no limit."""
    seconds = validate_seconds(field, value)
    if seconds == 0:
        raise ValidationError(field, "must be more than 0 seconds (None means no limit)")
    return seconds


def validate_run_after(run_after: Any) -> datetime | timedelta | None:
    if run_after is None:
        return None
    if isinstance(run_after, timedelta):
        if run_after < timedelta(0):
            raise ValidationError("run_after", "a delay must not be negative")
        return run_after
    if isinstance(run_after, datetime):
        if run_after.tzinfo is None:
            raise ValidationError("run_after", "datetimes must be timezone-aware")
        return run_after
    raise ValidationError("run_after", f"expected a timedelta or an aware datetime: {run_after!r}")


def validate_choice(field: str, value: Any, choices: Any) -> str:
    allowed = [c.value for c in choices]
    if value not in allowed:
        raise ValidationError(field, f"must be one of {', '.join(allowed)}; got {value!r}")
    return str(value)


def validate_count(field: str, value: Any) -> int:
    """A limit or an offset: an integer >= 0 (Django's slicing would say only "Negative
    indexing is not supported", without naming the argument)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(field, f"must be an integer >= 0, got {value!r}")
    return value


def validate_ids(field: str, ids: Any) -> list[int]:
    if ids is None:
        return []
    if isinstance(ids, int | str) or not hasattr(ids, "__iter__"):
        raise ValidationError(field, f"must be a list of task ids, got {ids!r}")
    clean = []
    for value in ids:
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValidationError(field, f"task ids are positive integers, got {value!r}")
        clean.append(value)
    return clean
