"""Limit/offset pagination with strict parameters: a bad ``limit`` or ``offset`` is a 400.

``count`` is exact up to ``read.counting.EXACT_UP_TO`` rows and, on PostgreSQL, the planner's
estimate past it (``count_is_estimate`` says which): a list page must not read all of a
ten-million-row history to count it. ``next`` never depends on the count: the page is read
with one row more, which says whether another page follows."""

from __future__ import annotations

import re
from typing import Any

from django.db.models import QuerySet
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param

from ..read.counting import bounded_count

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
# Far beyond any real table, and far inside the 64-bit OFFSET every database accepts.
MAX_OFFSET = 2**53
_INTEGER = re.compile(r"-?[0-9]+")


class TaskmillPagination(LimitOffsetPagination):
    """``?limit=`` (1..500, default 50) and ``?offset=`` (>= 0). The body is
    ``{"count", "count_is_estimate", "next", "previous", "results"}``."""

    default_limit = DEFAULT_LIMIT
    max_limit = MAX_LIMIT
    template = None  # no browsable-API page controls, which would need an exact count

    def paginate_queryset(self, queryset: Any, request: Any, view: Any = None) -> list[Any]:
        self.request = request
        self.limit = self.get_limit(request)
        self.offset = self.get_offset(request)
        page = list(queryset[self.offset : self.offset + self.limit + 1])
        self.has_next = len(page) > self.limit
        del page[self.limit :]
        if isinstance(queryset, QuerySet):
            self.count, self.count_is_estimate = bounded_count(queryset)
        else:
            self.count, self.count_is_estimate = len(queryset), False
        # Rows seen on this page are there, whatever an estimate says.
        self.count = max(self.count, self.offset + len(page))
        return page

    def get_next_link(self) -> str | None:
        request, limit, offset = self.request, self.limit, self.offset
        if not self.has_next or request is None or limit is None or offset is None:
            return None
        url = replace_query_param(request.build_absolute_uri(), self.limit_query_param, limit)
        return str(replace_query_param(url, self.offset_query_param, offset + limit))

    def get_paginated_response(self, data: Any) -> Response:
        return Response(
            {
                "count": self.count,
                "count_is_estimate": self.count_is_estimate,
                "next": self.get_next_link(),
                "previous": self.get_previous_link(),
                "results": data,
            }
        )

    def get_paginated_response_schema(self, schema: Any) -> dict[str, Any]:
        body: dict[str, Any] = super().get_paginated_response_schema(schema)
        body["properties"]["count_is_estimate"] = {"type": "boolean", "example": False}
        body["required"] = ["count", "count_is_estimate", "results"]
        return body

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
