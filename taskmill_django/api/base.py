"""What every taskmill API view shares: JSON in and out, permissions from settings, strict
query parameters, one error body, strict pagination, the OpenAPI description."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import apps
from django.http import Http404, HttpRequest, JsonResponse
from rest_framework import routers, status, viewsets
from rest_framework.exceptions import APIException, PermissionDenied, ValidationError
from rest_framework.pagination import BasePagination
from rest_framework.parsers import BaseParser, JSONParser
from rest_framework.permissions import BasePermission
from rest_framework.renderers import BaseRenderer, BrowsableAPIRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from .. import access
from .errors import exception_handler
from .fields import MAX_ID
from .pagination import TaskmillPagination
from .permissions import permission_classes
from .schema import TaskmillAutoSchema, operation_of


class Conflict(APIException):
    """409: the object is not in a state that allows the action (``{"status": [why]}``)."""

    status_code = status.HTTP_409_CONFLICT
    default_detail = "conflict with the current state"
    default_code = "conflict"


def renderers() -> list[type[BaseRenderer]]:
    """JSON, plus DRF's browsable pages when the project can render them: their templates come
    from ``rest_framework`` and ``django_filters`` in INSTALLED_APPS. Without them the API
    answers JSON only rather than a 500 for every browser."""
    if apps.is_installed("rest_framework") and apps.is_installed("django_filters"):
        return [JSONRenderer, BrowsableAPIRenderer]
    return [JSONRenderer]


class TaskmillAPIMixin:
    """``needs`` maps each action (or HTTP method, for plain views) to the
    ``taskmill_django.access`` need that ``TaskmillPermission`` checks; an action missing
    from it is refused."""

    parser_classes: Sequence[type[BaseParser]] = (JSONParser,)
    pagination_class: type[BasePagination] | None = TaskmillPagination
    filter_backends: Sequence[Any] = ()
    needs: dict[str, access.Need] = {}  # noqa: RUF012 - read-only, replaced per view

    def get_renderers(self) -> list[BaseRenderer]:
        return [renderer() for renderer in renderers()]

    def get_permissions(self) -> list[BasePermission]:
        return [permission() for permission in permission_classes()]

    def get_exception_handler(self) -> Any:
        return exception_handler

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)  # type: ignore[misc]
        self.check_query_parameters(request)

    def check_query_parameters(self, request: Request) -> None:
        """A query parameter the operation does not take is a 400 naming it: a typo such as
        ``?stauts=failed`` must not silently answer everything."""
        operation = operation_of(self, request.method or "")
        if operation is None:
            return
        allowed = {"format"}  # DRF's renderer override (?format=json)
        if operation.paginated and self.pagination_class is not None:
            paginator: Any = self.pagination_class()
            allowed |= {paginator.limit_query_param, paginator.offset_query_param}
        if operation.filters:
            filterset_class = getattr(self, "filterset_class", None)
            allowed |= set(filterset_class.base_filters if filterset_class else ())
        if operation.query is not None:
            allowed |= set(operation.query().fields)
        unknown = sorted(set(request.query_params) - allowed)
        if unknown:
            takes = ", ".join(sorted(allowed - {"format"})) or "none"
            raise ValidationError(
                {
                    name[:100]: [f"unknown query parameter; this endpoint takes: {takes}"]
                    for name in unknown
                }
            )

    def may_use_urgent(self) -> bool:
        """Whether the configured policy lets this request submit or move a task to a
        preempting priority (see ``TaskmillPermission.allows_urgent``)."""
        return all(
            permission.allows_urgent(self.request)  # type: ignore[attr-defined]
            for permission in self.get_permissions()
            if hasattr(permission, "allows_urgent")
        )

    def check_urgency(self, priority: int, field: str = "priority") -> None:
        """403 naming ``field`` when ``priority`` preempts and the user may not use it."""
        if access.is_urgent(priority) and not self.may_use_urgent():
            raise PermissionDenied({field: [access.urgent_refusal(priority)]})


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


class TaskmillAPIRoot(TaskmillAPIMixin, routers.APIRootView):
    """``GET /``: the endpoint list, for users with any permission of the app."""

    needs = {"get": access.ANY}  # noqa: RUF012


class TaskmillRouter(routers.DefaultRouter):
    APIRootView = TaskmillAPIRoot


def not_found(request: HttpRequest, path: str = "") -> JsonResponse:
    """Any other path under the API's prefix: a JSON 404 like every other error."""
    hint = "" if request.path.endswith("/") else " (paths end with a slash)"
    body = {"errors": {"detail": [f"no endpoint at {request.path}{hint}; see schema/"]}}
    return JsonResponse(body, status=404)
