"""OpenAPI 3 schema: DRF's generator, told exactly what each operation takes and returns.

Every view method carries a ``@documented(...)`` description (operation id, request and response
serializers, success and error statuses, query parameters), so the schema lists every status an
endpoint can answer with: a schema-driven fuzzer finds no undocumented response. Works with
``manage.py generateschema --format openapi-json`` and with ``schema/``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.urls import NoReverseMatch, reverse
from rest_framework import serializers
from rest_framework.permissions import BasePermission
from rest_framework.schemas.openapi import AutoSchema, SchemaGenerator
from rest_framework.schemas.views import SchemaView

from .. import access
from .fields import MAX_ID

ERRORS = "Errors"
_ERROR_SCHEMA = {
    "type": "object",
    "required": ["errors"],
    "properties": {
        "errors": {
            "type": "object",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
            "description": "Messages by field (dotted for nested fields); 'detail' for the "
            "request as a whole.",
        },
        "existing_id": {"type": "integer", "nullable": True},
    },
}
_STATUS_TEXT = {
    200: "OK",
    201: "Created",
    204: "No content",
    400: "Invalid input; the errors name the fields.",
    401: "Not authenticated.",
    403: "Not authenticated, or lacking the permission this needs (API_PERMISSION_CLASSES).",
    404: "No such object.",
    405: "Method not allowed.",
    406: "Not acceptable.",
    409: "Conflict with the object's current state.",
    415: "Unsupported media type.",
    429: "Throttled (API_SUBMIT_THROTTLE_RATE).",
}
# Statuses every operation can answer with (authentication, content negotiation).
_ALWAYS = (401, 403, 405, 406)


@dataclass(frozen=True)
class Operation:
    operation_id: str
    response: type[serializers.Serializer] | None = None
    request: type[serializers.Serializer] | None = None
    query: type[serializers.Serializer] | None = None
    statuses: Sequence[int] = (200,)
    errors: Sequence[int] = ()
    many: bool = False
    paginated: bool = False
    filters: bool = False
    body_required: bool | None = None  # None: when the request serializer has a required field
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def documented(operation_id: str, **kwargs: Any) -> Callable[[Any], Any]:
    """Attach the OpenAPI description of a view method (see ``Operation``)."""

    def attach(func: Any) -> Any:
        func.openapi = Operation(operation_id, **kwargs)
        return func

    return attach


def operation_of(view: Any, method: str) -> Operation | None:
    """The ``@documented`` description of the view method serving this action, if any."""
    action = getattr(view, "action", None) or method.lower()
    handler = getattr(view, action, None)
    return getattr(handler, "openapi", None)


class TaskmillAutoSchema(AutoSchema):
    """Reads ``@documented`` operations; falls back to DRF's inference otherwise."""

    def _operation(self, method: str) -> Operation | None:
        return operation_of(self.view, method)

    def get_operation_id(self, path: str, method: str) -> str:
        op = self._operation(method)
        return op.operation_id if op else super().get_operation_id(path, method)

    def get_description(self, path: str, method: str) -> str:
        op = self._operation(method)
        if op and op.description:
            return op.description
        return super().get_description(path, method)

    def get_request_serializer(self, path: str, method: str) -> Any:
        op = self._operation(method)
        if op is not None:
            return op.request() if op.request else None
        return super().get_request_serializer(path, method)

    def get_response_serializer(self, path: str, method: str) -> Any:
        op = self._operation(method)
        if op is not None:
            return op.response() if op.response else None
        return super().get_response_serializer(path, method)

    def get_request_body(self, path: str, method: str) -> dict[str, Any]:
        op = self._operation(method)
        if op is not None and op.request is None:
            return {}
        body = super().get_request_body(path, method)
        if body and op is not None and op.request is not None:
            required = op.body_required
            if required is None:
                required = any(f.required for f in op.request().fields.values())
            body["required"] = required
        return body

    def get_path_parameters(self, path: str, method: str) -> list[dict[str, Any]]:
        parameters = super().get_path_parameters(path, method)
        for parameter in parameters:
            if parameter["name"] in ("id", "pk"):
                parameter["schema"] = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
            elif parameter["name"] == "name":
                parameter["schema"] = {"type": "string", "minLength": 1, "maxLength": 128}
                parameter["description"] = "Any characters but '/'."
        return parameters

    def get_pagination_parameters(self, path: str, method: str) -> list[dict[str, Any]]:
        op = self._operation(method)
        if op is not None:
            paginator = _paginator(self)
            if not (op.paginated and paginator):
                return []
            return paginator.get_schema_operation_parameters(self.view)
        return super().get_pagination_parameters(path, method)

    def get_filter_parameters(self, path: str, method: str) -> list[dict[str, Any]]:
        op = self._operation(method)
        if op is None:
            return super().get_filter_parameters(path, method)
        parameters = []
        if op.filters:
            for backend in getattr(self.view, "filter_backends", ()):
                parameters += backend().get_schema_operation_parameters(self.view)
        if op.query is not None:
            parameters += self._query_parameters(op.query())
        return parameters

    def _query_parameters(self, serializer: serializers.Serializer) -> list[dict[str, Any]]:
        parameters = []
        for name, f in serializer.fields.items():
            schema = self.map_field(f)
            self.map_field_validators(f, schema)
            parameters.append(
                {
                    "name": name,
                    "in": "query",
                    "required": bool(f.required),
                    "description": str(f.help_text or ""),
                    "schema": schema,
                }
            )
        return parameters

    def map_field(self, field: Any) -> dict[str, Any]:
        schema = getattr(field, "openapi_schema", None)
        if schema is not None:
            return dict(schema)
        return super().map_field(field)

    def map_serializer(self, serializer: Any) -> dict[str, Any]:
        result = super().map_serializer(serializer)
        from .serializers import StrictSerializer  # serializers import this module's bounds

        if isinstance(serializer, StrictSerializer):
            result["additionalProperties"] = False
        return result

    def get_components(self, path: str, method: str) -> dict[str, Any]:
        components = super().get_components(path, method)
        components[ERRORS] = _ERROR_SCHEMA
        return components

    def get_responses(self, path: str, method: str) -> dict[str, Any]:
        op = self._operation(method)
        if op is None:
            return super().get_responses(path, method)
        self.response_media_types = self.map_renderers(path, method)
        serializer = self.get_response_serializer(path, method)
        schema: dict[str, Any] = self.get_reference(serializer) if serializer else {}
        if op.many:
            schema = {"type": "array", "items": schema}
            paginator = _paginator(self)
            if op.paginated and paginator:
                schema = paginator.get_paginated_response_schema(schema)
        responses: dict[str, Any] = {}
        for code in op.statuses:
            responses[str(code)] = {
                "description": _STATUS_TEXT.get(code, ""),
                "content": {ct: {"schema": schema} for ct in self.response_media_types},
            }
        errors = set(op.errors) | set(_ALWAYS)
        if op.request or op.query or op.filters or op.paginated:
            errors.add(400)
        if op.request:
            errors.add(415)
        if "{" in path:
            errors.add(404)
        for code in sorted(errors):
            responses[str(code)] = {
                "description": _STATUS_TEXT.get(code, ""),
                "content": {
                    ct: {"schema": {"$ref": f"#/components/schemas/{ERRORS}"}}
                    for ct in self.response_media_types
                },
            }
        return responses


def _paginator(schema: AutoSchema) -> Any:
    """The view's paginator instance (DRF returns one; its type stubs say a class)."""
    return schema.get_paginator()


class TaskmillSchemaGenerator(SchemaGenerator):
    """Paths of the taskmill API only, under the prefix it is mounted at."""

    def get_schema(self, request: Any = None, public: bool = False) -> Any:
        if self.patterns is None:  # e.g. ``generateschema --generator_class``: our API only
            from .routes import api_patterns

            self.patterns = api_patterns
        if not self.url:
            try:
                self.url = reverse("taskmill_api:api-root")
            except NoReverseMatch:  # mounted without its namespace
                self.url = "/"
        schema = super().get_schema(request, public)
        schema["openapi"] = "3.0.3"
        return schema


class TaskmillSchemaView(SchemaView):
    """DRF's schema view (what ``get_schema_view`` builds), with the API's permissions, read
    per request, and its error body."""

    needs = {"get": access.ANY}  # noqa: RUF012

    def get_permissions(self) -> list[BasePermission]:
        from .permissions import permission_classes

        return [permission() for permission in permission_classes()]

    def get_exception_handler(self) -> Any:
        from .errors import exception_handler

        return exception_handler
