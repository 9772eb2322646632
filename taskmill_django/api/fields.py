"""Strict JSON fields: a value of the wrong JSON type is an error, never coerced.

DRF's stock fields turn ``"5"`` into 5, ``5`` into ``"5"`` and trim strings, which is friendly
for HTML forms and wrong for an API whose keys and tags must round-trip exactly. Every field
here also carries its OpenAPI schema (``openapi_schema``) so the published schema says exactly
what is accepted.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any, ClassVar

from rest_framework import serializers

# Bounds that keep values inside what every supported database column and Python's datetime
# arithmetic accept: a bad number is a 400, never an overflow deep in a query.
MAX_ID = 2**63 - 1
MAX_INT32 = 2**31 - 1
MAX_SECONDS = 10 * 366 * 24 * 3600.0  # ten years


class Text(serializers.CharField):
    """A JSON string taken as sent: no trimming, no number coercion, no NUL characters."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class Integer(serializers.IntegerField):
    """A JSON integer (not a string, float or boolean); bounds are checked by validators."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return data


class Number(serializers.FloatField):
    """A finite JSON number (integer or float); bounds are checked by validators."""

    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        try:
            value = float(data)
        except OverflowError:
            self.fail("invalid")
        if not math.isfinite(value):
            self.fail("invalid")
        return value


class Boolean(serializers.BooleanField):
    """A JSON ``true`` or ``false``."""

    openapi_schema: ClassVar[dict[str, Any]] = {"type": "boolean"}

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


def text_problem(value: str) -> str | None:
    """Why a string cannot be stored (NUL characters, lone surrogates), else None."""
    if "\x00" in value:
        return "must not contain NUL characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode (no lone surrogates)"
    return None


class JsonObject(serializers.DictField):
    """A JSON object of any JSON values (a task payload).

    Strings anywhere inside are checked for what no database column can hold (NUL characters,
    lone surrogates), so such a payload is a 400 here rather than an error at insert.
    """

    openapi_schema: ClassVar[dict[str, Any]] = {"type": "object", "additionalProperties": {}}

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            self.fail("not_a_dict", input_type=type(data).__name__)
        problem = _json_problem(data)
        if problem is not None:
            raise serializers.ValidationError(problem)
        return data


def _json_problem(value: Any, depth: int = 0) -> str | None:
    if depth > 64:
        return "is nested more than 64 levels deep"
    if isinstance(value, str):
        return text_problem(value)
    if isinstance(value, dict):
        for key, item in value.items():
            problem = _json_problem(key, depth + 1) or _json_problem(item, depth + 1)
            if problem is not None:
                return problem
    elif isinstance(value, list):
        for item in value:
            problem = _json_problem(item, depth + 1)
            if problem is not None:
                return problem
    return None


class StringMap(serializers.DictField):
    """A JSON object of string values with bounded keys (tags)."""

    def __init__(self, *, max_key: int, max_value: int, max_items: int, **kwargs: Any) -> None:
        self.max_key = max_key
        self.max_items = max_items
        kwargs["child"] = Text(allow_blank=True, max_length=max_value)
        super().__init__(**kwargs)
        self.openapi_schema = {
            "type": "object",
            "maxProperties": max_items,
            "additionalProperties": {"type": "string", "maxLength": max_value},
        }

    def to_internal_value(self, data: Any) -> dict[str, str]:
        if not isinstance(data, dict):
            self.fail("not_a_dict", input_type=type(data).__name__)
        if len(data) > self.max_items:
            raise serializers.ValidationError(f"at most {self.max_items} entries")
        for key in data:
            problem = text_problem(key) or (
                f"key {key[:20]!r} is over {self.max_key} characters"
                if len(key) > self.max_key
                else "keys must not be empty"
                if not key
                else None
            )
            if problem is not None:
                raise serializers.ValidationError(problem)
        return super().to_internal_value(data)


class RunAfter(serializers.Field):
    """An ISO 8601 datetime (aware, or in the current time zone) or a delay in seconds."""

    openapi_schema: ClassVar[dict[str, Any]] = {
        "oneOf": [
            {"type": "string", "format": "date-time"},
            {"type": "number", "minimum": 0, "maximum": MAX_SECONDS},
        ],
        "description": "An ISO 8601 datetime, or a delay in seconds from now.",
    }
    default_error_messages = {  # noqa: RUF012 - DRF's convention
        "invalid": "Expected an ISO 8601 datetime or a number of seconds.",
        "range": f"A delay must be between 0 and {MAX_SECONDS:.0f} seconds.",
    }

    def to_internal_value(self, data: Any) -> datetime | timedelta:
        if isinstance(data, str):
            return serializers.DateTimeField().to_internal_value(data)
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        if not (math.isfinite(data) and 0 <= data <= MAX_SECONDS):
            self.fail("range")
        return timedelta(seconds=data)

    def to_representation(self, value: Any) -> Any:
        return value


class AnyJson(serializers.JSONField):
    """Any JSON value, documented as such (DRF documents JSONField as an object)."""

    openapi_schema: ClassVar[dict[str, Any]] = {}


class Tags(serializers.Field):
    """The tags of a row (``tags`` related manager, prefetched) as ``{key: value}``."""

    openapi_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": {"type": "string"},
    }

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("read_only", True)
        super().__init__(**kwargs)

    def to_representation(self, value: Any) -> dict[str, str]:
        return {tag.key: tag.value for tag in value.all()}


def string_map(values: Any = None) -> dict[str, Any]:
    """OpenAPI schema of an object whose values follow ``values``."""
    return {"type": "object", "additionalProperties": values if values is not None else {}}


class Mapping(serializers.DictField):
    """A read-only object whose schema is given (counts by domain, breakdowns, ...)."""

    def __init__(self, openapi_schema: dict[str, Any], **kwargs: Any) -> None:
        self.openapi_schema = openapi_schema
        kwargs.setdefault("read_only", True)
        super().__init__(**kwargs)

    def to_representation(self, value: Any) -> Any:
        return value


class TaskType(Text):
    """A qualified task type; the schema lists the declared types the API may submit
    (``API_SUBMIT_TYPES``)."""

    @property
    def openapi_schema(self) -> dict[str, Any]:
        from .. import access, registry

        allowed = [t.task_type for t in registry.all_tasks() if access.submittable_over_http(t)]
        schema: dict[str, Any] = {"type": "string", "maxLength": 200}
        if allowed:
            schema["enum"] = allowed
        return schema
