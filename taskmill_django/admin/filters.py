"""List filters for the task and history pages.

Choices come from the registry or from indexed columns of the small active table, never from a
``SELECT DISTINCT`` over history, so the filter sidebar stays cheap with millions of rows.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.db.models import QuerySet
from django.http import HttpRequest

from .. import registry
from ..enums import MAX_PRIORITY, Priority
from ..exceptions import ValidationError
from ..models import Task, TaskHistoryTag, TaskTag
from ..tag_filters import parse_tag_filter, with_tags


class DomainFilter(admin.SimpleListFilter):
    title = "domain"
    parameter_name = "domain"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(d.name, d.name) for d in registry.all_domains()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.filter(domain=self.value()) if self.value() else queryset


class TaskTypeFilter(admin.SimpleListFilter):
    title = "task type"
    parameter_name = "task_type"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        domain = request.GET.get("domain")
        return [
            (t.task_type, t.task_type)
            for t in registry.all_tasks()
            if not domain or t.task_type.startswith(f"{domain}::")
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.filter(task_type=self.value()) if self.value() else queryset


def tier_bounds(tier: Priority) -> tuple[int, int]:
    """The priorities that fall in a named tier: from its value up to the next tier's.

    >>> tier_bounds(Priority.HIGH), tier_bounds(Priority.IDLE)
    ((64, 127), (255, 255))
    """
    members = sorted(p.value for p in Priority)
    index = members.index(tier.value)
    upper = members[index + 1] - 1 if index + 1 < len(members) else MAX_PRIORITY
    return tier.value, upper


class PriorityTierFilter(admin.SimpleListFilter):
    title = "priority tier"
    parameter_name = "tier"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            (p.label, f"{p.label} ({lo}-{hi})" if lo != hi else f"{p.label} ({lo})")
            for p in Priority
            for lo, hi in [tier_bounds(p)]
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        for p in Priority:
            if p.label == self.value():
                lo, hi = tier_bounds(p)
                return queryset.filter(priority__gte=lo, priority__lte=hi)
        return queryset


class HasErrorFilter(admin.SimpleListFilter):
    title = "error"
    parameter_name = "has_error"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "has an error"), ("no", "no error")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "yes":
            return queryset.exclude(last_error="")
        if self.value() == "no":
            return queryset.filter(last_error="")
        return queryset


class RetriedFilter(admin.SimpleListFilter):
    """Dead-letter entries already submitted again, or still waiting for a decision."""

    title = "retried"
    parameter_name = "retried"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("no", "not yet"), ("yes", "retried")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() in ("yes", "no"):
            return queryset.filter(retried_at__isnull=self.value() == "no")
        return queryset


class ActiveGroupFilter(admin.SimpleListFilter):
    """Groups of active tasks (an index-only read of ``taskmill_task_group``)."""

    title = "group"
    parameter_name = "group"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        groups = (
            Task.objects.exclude(group_key=None)
            .order_by("group_key")
            .values_list("group_key", flat=True)
            .distinct()[:100]
        )
        return [("-", "(no group)"), *((g, g) for g in groups if g is not None)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "-":
            return queryset.filter(group_key=None)
        return queryset.filter(group_key=self.value()) if self.value() else queryset


class TextInputFilter(admin.ListFilter):
    """A filter typed into a small box (for values too many to list)."""

    parameter_name = ""
    template = "admin/taskmill_django/filters/text_input.html"
    placeholder = ""

    def __init__(
        self, request: HttpRequest, params: dict[str, Any], model: Any, model_admin: Any
    ) -> None:
        super().__init__(request, params, model, model_admin)
        values = params.pop(self.parameter_name, None) or []
        self.values = [v for v in (values if isinstance(values, list) else [values]) if v]
        if self.values:
            self.used_parameters[self.parameter_name] = self.values

    def has_output(self) -> bool:
        return True  # also keeps the filter applied: the changelist only applies shown filters

    def expected_parameters(self) -> list[str | None]:
        return [self.parameter_name]

    def choices(self, changelist: Any) -> Any:
        yield {
            "parameter": self.parameter_name,
            "values": self.values,
            "placeholder": self.placeholder,
            "hidden": _hidden_params(changelist, {self.parameter_name}),
            "clear_url": _query_without(changelist, {self.parameter_name}),
        }


class HistoryGroupFilter(TextInputFilter):
    title = "group"
    parameter_name = "group"
    placeholder = "group key"

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if not self.values:
            return queryset
        return queryset.filter(group_key=self.values[-1])


class TagFilter(admin.ListFilter):
    """``?tag=key:value`` (repeatable) and ``?tag_prefix=``: the REST API's syntax
    (``taskmill_django.tag_filters``). A malformed tag is the admin's "invalid filter"."""

    title = "tags"
    template = "admin/taskmill_django/filters/tags.html"
    owner = "task_id"
    tag_model: Any = TaskTag

    def __init__(
        self, request: HttpRequest, params: dict[str, Any], model: Any, model_admin: Any
    ) -> None:
        super().__init__(request, params, model, model_admin)
        self.tags = [t for t in params.pop("tag", []) if t]
        self.prefixes = [p for p in params.pop("tag_prefix", []) if p]
        if self.tags:
            self.used_parameters["tag"] = self.tags
        if self.prefixes:
            self.used_parameters["tag_prefix"] = self.prefixes

    def has_output(self) -> bool:
        return True

    def expected_parameters(self) -> list[str | None]:
        return ["tag", "tag_prefix"]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        try:
            pairs = [parse_tag_filter(tag) for tag in self.tags]
        except ValidationError as exc:
            raise IncorrectLookupParameters(str(exc)) from exc
        return with_tags(queryset, self.tag_model, self.owner, pairs, self.prefixes)

    def choices(self, changelist: Any) -> Any:
        active = [
            {"label": tag, "remove_url": _query_without(changelist, set(), ("tag", tag))}
            for tag in self.tags
        ] + [
            {
                "label": f"{prefix}*",
                "remove_url": _query_without(changelist, set(), ("tag_prefix", prefix)),
            }
            for prefix in self.prefixes
        ]
        yield {
            "active": active,
            "hidden": _hidden_params(changelist, set()),
        }


class HistoryTagFilter(TagFilter):
    owner = "history_id"
    tag_model = TaskHistoryTag


def _hidden_params(changelist: Any, drop: set[str]) -> list[tuple[str, str]]:
    """The current query as (name, value) pairs for hidden inputs, minus ``drop`` and the page."""
    return [
        (name, value)
        for name, values in changelist.filter_params.items()
        if name not in drop and name != "p"
        for value in values
    ]


def _query_without(changelist: Any, names: set[str], pair: tuple[str, str] | None = None) -> str:
    """The current query string without the parameters ``names`` (or one name=value pair)."""
    from urllib.parse import urlencode

    kept = [
        (name, value)
        for name, values in changelist.filter_params.items()
        if name not in names and name != "p"
        for value in values
        if (name, value) != pair
    ]
    return "?" + urlencode(kept)
