"""What every taskmill API view shares: JSON in and out, permissions from settings, one error
body, strict pagination, the OpenAPI description."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.http import Http404, HttpRequest, JsonResponse
from rest_framework import status, viewsets
from rest_framework.exceptions import APIException
from rest_framework.pagination import BasePagination
from rest_framework.parsers import BaseParser, JSONParser
from rest_framework.permissions import BasePermission
from rest_framework.renderers import BaseRenderer, BrowsableAPIRenderer, JSONRenderer
from rest_framework.views import APIView

from .errors import exception_handler
from .fields import MAX_ID
from .pagination import TaskmillPagination
from .permissions import permission_classes
from .schema import TaskmillAutoSchema


class Conflict(APIException):
    """409: the object is not in a state that allows the action (``{"status": [why]}``)."""

    status_code = status.HTTP_409_CONFLICT
    default_detail = "conflict with the current state"
    default_code = "conflict"


class TaskmillAPIMixin:
    parser_classes: Sequence[type[BaseParser]] = (JSONParser,)
    renderer_classes: Sequence[type[BaseRenderer]] = (JSONRenderer, BrowsableAPIRenderer)
    pagination_class: type[BasePagination] | None = TaskmillPagination
    filter_backends: Sequence[Any] = ()

    def get_permissions(self) -> list[BasePermission]:
        return [permission() for permission in permission_classes()]

    def get_exception_handler(self) -> Any:
        return exception_handler


class TaskmillAPIView(TaskmillAPIMixin, APIView):
    schema = TaskmillAutoSchema()


class TaskmillViewSet(TaskmillAPIMixin, viewsets.GenericViewSet):
    schema = TaskmillAutoSchema()
    # Anything but a slash reaches the view, which answers a malformed id with a JSON 404.
    lookup_value_regex = "[^/]+"

    def get_queryset(self) -> Any:
        if getattr(self, "queryset", None) is None:
            return []  # a list built from the core's records: nothing to filter in SQL
        return super().get_queryset()

    def object_id(self) -> int:
        """The ``{id}`` of the URL as an int; anything else is a 404 (JSON, like all errors)."""
        raw = str(self.kwargs.get(self.lookup_url_kwarg or self.lookup_field, ""))
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 19 and 0 < int(raw) <= MAX_ID):
            raise Http404(f"no object with id {raw[:40]!r}")
        return int(raw)

    def paginated(self, items: Any, serializer_class: Any) -> Any:
        """Paginate a queryset or list and serialize the page."""
        page = self.paginate_queryset(items)
        return self.get_paginated_response(serializer_class(page, many=True).data)


def not_found(request: HttpRequest, path: str = "") -> JsonResponse:
    """Any other path under the API's prefix: a JSON 404 like every other error."""
    hint = "" if request.path.endswith("/") else " (paths end with a slash)"
    body = {"errors": {"detail": [f"no endpoint at {request.path}{hint}; see schema/"]}}
    return JsonResponse(body, status=404)
