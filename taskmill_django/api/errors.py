"""One error body for every failure: ``{"errors": {field: [message, ...]}}``.

DRF's own errors (validation, parsing, authentication, throttling) are reshaped into it, and
taskmill's domain errors are mapped to status codes here, so the views never translate
exceptions themselves:

- ``ValidationError`` (and ``UnknownTaskType``) → 400, keyed by the field it names;
- ``DuplicateTaskError`` → 409, keyed ``key``, with the id of the active twin;
- ``AlreadyRetried`` → 409, keyed ``status``, with the id the entry was retried as;
- ``TaskNotFound`` / ``DomainNotRegistered`` → 404, keyed ``detail``.

Nested field errors are flattened to dotted paths (``recurring.cron``, ``depends_on.0``), so a
client can always read ``errors[field]`` as a list of strings.
"""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from ..exceptions import (
    AlreadyRetried,
    DomainNotRegistered,
    DuplicateTaskError,
    TaskNotFound,
    ValidationError,
)

DETAIL = "detail"


def error_body(errors: dict[str, list[str]], **extra: Any) -> dict[str, Any]:
    return {"errors": errors, **extra}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """The ``get_exception_handler()`` of every taskmill API view."""
    if isinstance(exc, DuplicateTaskError):
        body = error_body({"key": [str(exc)]}, existing_id=exc.existing_id)
        return Response(body, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, AlreadyRetried):
        body = error_body({"status": [str(exc)]}, retried_as_id=exc.retried_as_id)
        return Response(body, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, ValidationError):
        return Response(error_body({exc.field: [exc.message]}), status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, TaskNotFound | DomainNotRegistered):
        return Response(error_body({DETAIL: [str(exc)]}), status=status.HTTP_404_NOT_FOUND)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        response.data = error_body(flatten(exc.detail))
    else:
        response.data = error_body(flatten(response.data))
    return response


def flatten(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    """DRF error details (dicts, lists, strings, nested) → {dotted field: [messages]}."""
    found: dict[str, list[str]] = {}
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            for field, messages in flatten(value, name).items():
                found.setdefault(field, []).extend(messages)
    elif isinstance(detail, list):
        for index, value in enumerate(detail):
            if isinstance(value, dict | list):
                name = f"{prefix}.{index}" if prefix else str(index)
                for field, messages in flatten(value, name).items():
                    found.setdefault(field, []).extend(messages)
            else:
                found.setdefault(prefix or "non_field_errors", []).append(str(value))
    else:
        found.setdefault(prefix or DETAIL, []).append(str(detail))
    return found
