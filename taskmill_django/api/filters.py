"""Query filters of the list endpoints (django-filter), and their OpenAPI parameters.

An invalid filter value is a 400 naming the parameter, like every other bad input.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any, ClassVar

import django_filters
from django import forms
from django.db.models import Model, QuerySet
from django_filters.fields import IsoDateTimeField
from django_filters.rest_framework import DjangoFilterBackend

from ..enums import HistoryStatus, TaskStatus
from ..exceptions import ValidationError
from ..models import Task, TaskHistory, TaskHistoryTag, TaskTag
from ..tag_filters import parse_tag_filter, with_tags
from .fields import MAX_ID


class RepeatedWidget(forms.TextInput):
    """Reads every value of a repeated query parameter (``?tag=a:1&tag=b:2``)."""

    def format_value(self, value: Any) -> str | None:
        if isinstance(value, list):
            value = value[0] if value else None
        return super().format_value(value)

    def value_from_datadict(self, data: Any, files: Any, name: str) -> list[str]:
        if hasattr(data, "getlist"):
            return list(data.getlist(name))
        value = data.get(name)
        return [] if value is None else [value]


class TagPairsField(forms.Field):
    """``key:value`` or ``key`` strings → [(key, value or None)] (``tag_filters``: the admin's
    syntax too)."""

    widget = RepeatedWidget

    def to_python(self, value: Any) -> list[tuple[str, str | None]]:
        try:
            return [parse_tag_filter(raw) for raw in value or []]
        except ValidationError as exc:
            raise forms.ValidationError(exc.message) from None


class TagFilter(django_filters.Filter):
    """Rows carrying every given ``key:value`` tag, or ``key`` with any value (repeat the
    parameter to AND them)."""

    field_class = TagPairsField
    openapi_schema: ClassVar[dict[str, Any]] = {
        "type": "array",
        "items": {"type": "string", "pattern": r"^([^:=]+|[^:]+:[\s\S]*)$"},
    }

    def __init__(self, tag_model: type[Model], owner: str, **kwargs: Any) -> None:
        self.tag_model = tag_model
        self.owner = owner
        super().__init__(**kwargs)

    def filter(self, qs: QuerySet[Any], value: Any) -> QuerySet[Any]:
        return with_tags(qs, self.tag_model, self.owner, pairs=value or [])


class TagPrefixFilter(django_filters.CharFilter):
    """Rows carrying a tag whose key starts with the value."""

    def __init__(self, tag_model: type[Model], owner: str, **kwargs: Any) -> None:
        self.tag_model = tag_model
        self.owner = owner
        super().__init__(**kwargs)

    def filter(self, qs: QuerySet[Any], value: Any) -> QuerySet[Any]:
        return with_tags(qs, self.tag_model, self.owner, prefixes=[value] if value else [])


class NotEmptyMixin:
    """A parameter sent with an empty value is an error, not silently ignored."""

    def to_python(self, value: Any) -> Any:
        if value == "":
            raise forms.ValidationError("must not be empty")
        return super().to_python(value)  # type: ignore[misc]


class IntegerField(NotEmptyMixin, forms.IntegerField):
    pass


class IntegerFilter(django_filters.NumberFilter):
    field_class = IntegerField


class ChoiceField(NotEmptyMixin, django_filters.fields.ChoiceField):
    pass


class ChoiceFilter(django_filters.ChoiceFilter):
    """A choice; ``?retried=`` (empty) is an error, as the schema's enum says."""

    field_class = ChoiceField


class CheckedIsoDateTimeField(NotEmptyMixin, IsoDateTimeField):
    """An ISO 8601 datetime, converted to UTC: odd offsets (PostgreSQL refuses more than 16
    hours) and instants beyond year 9999 in UTC are handled here."""

    def to_python(self, value: Any) -> Any:
        parsed = super().to_python(value)
        if parsed is not None:
            try:
                return parsed.astimezone(UTC)
            except OverflowError:
                raise forms.ValidationError("is out of range") from None
        return parsed


class DateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = CheckedIsoDateTimeField


def _text(field_name: str, help_text: str) -> django_filters.CharFilter:
    return django_filters.CharFilter(field_name=field_name, label=help_text, max_length=200)


class TaskFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(
        choices=TaskStatus.choices, label="Status; repeat for several."
    )
    domain = _text("domain", "Domain name.")
    task_type = _text("task_type", "Qualified task type, domain::name.")
    key = django_filters.CharFilter(field_name="key", label="Dedup key.", max_length=64)
    group = _text("group_key", "Group key.")
    parent = IntegerFilter(
        field_name="parent_id", label="Parent task id.", min_value=1, max_value=MAX_ID
    )
    priority_min = IntegerFilter(
        field_name="priority", lookup_expr="gte", label="Priority >= this.", min_value=0,
        max_value=255,
    )  # fmt: skip
    priority_max = IntegerFilter(
        field_name="priority", lookup_expr="lte", label="Priority <= this.", min_value=0,
        max_value=255,
    )  # fmt: skip
    tag = TagFilter(TaskTag, "task_id", label="key:value tag; repeat to require several.")
    tag_prefix = TagPrefixFilter(
        TaskTag, "task_id", label="Has a tag whose key starts with this.", max_length=64
    )
    created_after = DateTimeFilter(
        field_name="created_at", lookup_expr="gte", label="Created at or after (ISO 8601)."
    )
    created_before = DateTimeFilter(
        field_name="created_at", lookup_expr="lt", label="Created before (ISO 8601)."
    )

    class Meta:
        model = Task
        fields = ()


class HistoryFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(
        choices=HistoryStatus.choices, label="Terminal status; repeat for several."
    )
    domain = _text("domain", "Domain name.")
    task_type = _text("task_type", "Qualified task type, domain::name.")
    key = django_filters.CharFilter(field_name="key", label="Dedup key.", max_length=64)
    group = _text("group_key", "Group key.")
    tag = TagFilter(TaskHistoryTag, "history_id", label="key:value tag; repeat for several.")
    finished_after = DateTimeFilter(
        field_name="finished_at", lookup_expr="gte", label="Finished at or after (ISO 8601)."
    )
    finished_before = DateTimeFilter(
        field_name="finished_at", lookup_expr="lt", label="Finished before (ISO 8601)."
    )

    class Meta:
        model = TaskHistory
        fields = ()


class DeadLetterFilter(HistoryFilter):
    """The history filters, without ``status`` (always ``dead_letter``), plus ``retried``."""

    status = None
    retried = ChoiceFilter(
        choices=(("true", "true"), ("false", "false")),
        method="filter_retried",
        label="true: entries submitted again already; false: entries still waiting.",
    )

    def filter_retried(self, queryset: Any, name: str, value: str) -> Any:
        return queryset.filter(retried_at__isnull=value != "true")


class FilterBackend(DjangoFilterBackend):
    """django-filter's backend, publishing each filter as an OpenAPI query parameter."""

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        filterset_class = getattr(view, "filterset_class", None)
        if filterset_class is None:
            return []
        parameters = []
        for name, f in filterset_class.base_filters.items():
            schema = filter_schema(f)
            parameter = {
                "name": name,
                "in": "query",
                "required": False,
                "description": str(f.label or ""),
                "schema": schema,
            }
            if schema.get("type") == "array":
                parameter.update(style="form", explode=True)
            parameters.append(parameter)
        return parameters


def filter_schema(f: django_filters.Filter) -> dict[str, Any]:
    schema = getattr(f, "openapi_schema", None)
    if schema is not None:
        return dict(schema)
    if isinstance(f, django_filters.MultipleChoiceFilter):
        return {
            "type": "array",
            "items": {"type": "string", "enum": [c for c, _ in f.extra["choices"]]},
        }
    if isinstance(f, django_filters.ChoiceFilter):
        return {"type": "string", "enum": [c for c, _ in f.extra["choices"]]}
    if isinstance(f, django_filters.IsoDateTimeFilter):
        return {"type": "string", "format": "date-time"}
    if isinstance(f, IntegerFilter):
        bounds = {"minimum": f.extra.get("min_value"), "maximum": f.extra.get("max_value")}
        return {"type": "integer", **{k: v for k, v in bounds.items() if v is not None}}
    schema = {"type": "string"}
    if f.extra.get("max_length"):
        schema["maxLength"] = f.extra["max_length"]
    return schema
