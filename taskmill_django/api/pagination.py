"""Limit/offset pagination with strict parameters: a bad ``limit`` or ``offset`` is a 400."""

from __future__ import annotations

import re
from typing import Any

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
# Far beyond any real table, and far inside the 64-bit OFFSET every database accepts.
MAX_OFFSET = 2**53
_INTEGER = re.compile(r"-?[0-9]+")


class TaskmillPagination(LimitOffsetPagination):
    """``?limit=`` (1..500, default 50) and ``?offset=`` (>= 0). The body is
    ``{"count", "next", "previous", "results"}``."""

    default_limit = DEFAULT_LIMIT
    max_limit = MAX_LIMIT

    def get_limit(self, request: Any) -> int:
        return _integer(request, self.limit_query_param, self.default_limit, 1, self.max_limit)

    def get_offset(self, request: Any) -> int:
        return _integer(request, self.offset_query_param, 0, 0, MAX_OFFSET)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        limit, offset = super().get_schema_operation_parameters(view)
        limit["schema"].update(minimum=1, maximum=self.max_limit, default=self.default_limit)
        offset["schema"].update(minimum=0, maximum=MAX_OFFSET, default=0)
        return [limit, offset]


def _integer(request: Any, name: str, default: int, minimum: int, maximum: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not _INTEGER.fullmatch(raw) or len(raw) > 20:
        raise ValidationError({name: [f"must be an integer, got {raw[:40]!r}"]})
    value = int(raw)
    if not minimum <= value <= maximum:
        raise ValidationError({name: [f"must be between {minimum} and {maximum}, got {value}"]})
    return value
