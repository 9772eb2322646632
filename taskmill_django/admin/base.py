"""The base of every taskmill admin page: read-only rows, actions that call the core, logging.

Rows are never edited through a form and never deleted from the admin: every change goes
through a core function (``scheduler``, ``store``) from an action or a small form, and is
recorded as an admin ``LogEntry``. So the object pages are always read-only ("view") pages,
while the permissions of ``taskmill_django.access`` decide who may read and who may act.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.contrib import admin
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import DateTimeField, Model, QuerySet
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import NoReverseMatch, reverse
from django.utils.functional import cached_property
from django.utils.http import url_has_allowed_host_and_scheme

from .. import access
from ..models import DeadLetter, Schedule, Task, TaskHistory, Worker
from ..read.counting import bounded_count
from ..redaction import mask_text
from . import display

LOG_CHUNK = 500


class BoundedCountPaginator(Paginator):
    """Counts exactly up to ``read.counting.EXACT_UP_TO`` rows and, on PostgreSQL, takes the
    planner's estimate past it: a list of ten million history rows must not be read whole
    to say how many pages it has. ``is_estimate`` says which."""

    is_estimate = False

    @cached_property
    def count(self) -> int:
        rows = self.object_list
        if not isinstance(rows, QuerySet):
            return len(rows)
        count, self.is_estimate = bounded_count(rows)
        return count


class EstimatedCount(int):
    """A list's row count that is PostgreSQL's estimate: compares and pages as the number,
    and reads "about N" wherever the admin's templates print it (the paginator's line, the
    search bar's result count)."""

    def __str__(self) -> str:
        return f"about {int(self)}"


class TaskRowsMixin:
    """List helpers shared by the active-task and history pages (both rows carry id, key,
    label and priority)."""

    paginator: type[Paginator] = BoundedCountPaginator

    def get_changelist_instance(self, request: HttpRequest) -> Any:
        changelist = super().get_changelist_instance(request)  # type: ignore[misc]
        if getattr(changelist.paginator, "is_estimate", False):
            changelist.result_count = EstimatedCount(changelist.result_count)
        return changelist

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        term = search_term.strip().lstrip("#")
        if term.isdigit():
            return queryset.filter(id=int(term)), False
        return super().get_search_results(request, queryset, search_term)  # type: ignore[misc]

    @admin.display(description="label / key")
    def label_or_key(self, obj: Any) -> str:
        if obj.label:
            return self.label_display(obj)
        return obj.key if len(obj.key) <= 16 else f"{obj.key[:16]}…"

    @admin.display(description="label")
    def label_display(self, obj: Any) -> str:
        return mask_text(obj.label, obj.task_type, obj.payload)

    @admin.display(description="priority", ordering="priority")
    def priority_display(self, obj: Any) -> str:
        label = display.priority_label(obj.priority)
        effective = getattr(obj, "effective_priority", obj.priority)  # active rows only
        return label if effective == obj.priority else f"{label}, aged to {effective}"


class Timestamp:
    """A date-time column on an object page, to the second and with its time zone, then how
    long ago (the admin's DATETIME_FORMAT stops at the minute). Used in place of the column
    name; one instance per column, since the admin finds it again by identity."""

    def __init__(self, name: str, description: str) -> None:
        self.name = self.__name__ = name
        self.short_description = description

    def __call__(self, obj: Model) -> Any:
        return display.timestamp(getattr(obj, self.name))


class OperatorAdmin(admin.ModelAdmin):
    """Read-only object pages; who may read and who may act is ``taskmill_django.access``'s
    policy, the REST API's too: ``read_need`` to see the pages, ``change_need`` to run the
    actions (None: this page has none)."""

    show_facets = admin.ShowFacets.NEVER  # facet counts over big tables cost a query per choice
    list_per_page = 50
    change_form_template = "admin/taskmill_django/change_form.html"
    change_list_template = "admin/taskmill_django/change_list.html"
    list_title = ""
    read_need: access.Need = access.READ_TASKS
    change_need: access.Need | None = None

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        """The fieldsets, date-time columns shown to the second (see ``Timestamp``)."""
        stamps = self._timestamps()
        found = []
        for title, options in super().get_fieldsets(request, obj):
            fields = []
            for name in options.get("fields", ()):
                field = stamps.get(name, name) if isinstance(name, str) else name
                if field not in fields:
                    fields.append(field)
            found.append((title, {**options, "fields": fields}))
        return found

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return [*super().get_readonly_fields(request, obj), *self._timestamps().values()]

    def _timestamps(self) -> dict[str, Timestamp]:
        if not hasattr(self, "_stamps"):
            self._stamps = {
                f.name: Timestamp(f.name, str(f.verbose_name))
                for f in self.model._meta.concrete_fields
                if isinstance(f, DateTimeField)
            }
        return self._stamps

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return access.allowed(request.user, self.read_need)

    def has_view_or_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Django lets a change permission show the pages too; here reading needs read_need,
        # exactly as over the API.
        return self.has_view_permission(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None or self.change_need is None:
            return False  # object pages are views; changes go through actions
        return access.allowed(request.user, self.change_need)

    def has_urgent_permission(self, request: HttpRequest) -> bool:
        """May this user put a task at a preempting priority (``submit_urgent``)?"""
        return access.allowed(request.user, access.URGENT)

    def can_operate(self, request: HttpRequest) -> bool:
        """May this user run actions and tool forms on this model?"""
        return self.has_change_permission(request)

    def require(self, request: HttpRequest, need: access.Need) -> None:
        if not access.allowed(request.user, need):
            raise PermissionDenied

    def require_operate(self, request: HttpRequest) -> None:
        if not self.can_operate(request):
            raise PermissionDenied

    def require_view(self, request: HttpRequest) -> None:
        if not self.has_view_permission(request):
            raise PermissionDenied

    def get_changelist_instance(self, request: HttpRequest) -> Any:
        """A filter or search with a NUL character is an invalid filter (the admin's "?e=1"
        page), not a query that PostgreSQL refuses with a server error."""
        for name, values in request.GET.lists():
            if "\x00" in name or any("\x00" in value for value in values):
                raise IncorrectLookupParameters("NUL characters in the query")
        return super().get_changelist_instance(request)

    def back_to_next(self, request: HttpRequest, response: Any) -> Any:
        """After an action started from an object's page (``_next``), return to that page."""
        back = request.POST.get("_next", "")
        safe = url_has_allowed_host_and_scheme(
            back, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        )
        if isinstance(response, HttpResponseRedirect) and back and safe:
            return HttpResponseRedirect(back)
        return response

    def log_rows(self, request: HttpRequest, rows: Iterable[Model], message: str) -> None:
        """One CHANGE LogEntry per row, written in bulk."""
        batch: list[Model] = []
        for row in rows:
            batch.append(row)
            if len(batch) == LOG_CHUNK:
                LogEntry.objects.log_actions(user_pk(request), batch, CHANGE, message)
                batch = []
        if batch:
            LogEntry.objects.log_actions(user_pk(request), batch, CHANGE, message)

    def log_queryset(self, request: HttpRequest, queryset: QuerySet[Any], message: str) -> None:
        """Log every row of ``queryset`` without loading more than the columns ``__str__`` uses."""
        self.log_rows(request, queryset.only("id", "task_type", "status").iterator(), message)

    def nav_context(self, request: HttpRequest, current: str) -> dict[str, Any]:
        return {"taskmill_nav": navigation(self.admin_site, request, current)}

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> Any:
        context = {
            **self.nav_context(request, self.model._meta.model_name or ""),
            **({"title": self.list_title} if self.list_title else {}),
            **(extra_context or {}),
        }
        return super().changelist_view(request, extra_context=context)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> Any:
        context = {
            **self.nav_context(request, self.model._meta.model_name or ""),
            "can_operate": self.can_operate(request),
            **(extra_context or {}),
        }
        return super().change_view(request, object_id, form_url, extra_context=context)


def log_operation(
    request: HttpRequest, model: type[Model], object_id: str, object_repr: str, message: str
) -> None:
    """A LogEntry for a change that has no single row behind it (a group, a limit)."""
    LogEntry.objects.create(
        user_id=user_pk(request),
        content_type=ContentType.objects.get_for_model(model, for_concrete_model=False),
        object_id=object_id,
        object_repr=object_repr[:200],
        action_flag=CHANGE,
        change_message=message,
    )


_NAV = (
    ("dashboard", "Dashboard", "taskmill_django_dashboard", Task),
    ("task", "Active tasks", "taskmill_django_task_changelist", Task),
    ("taskhistory", "History", "taskmill_django_taskhistory_changelist", TaskHistory),
    ("deadletter", "Dead letters", "taskmill_django_deadletter_changelist", DeadLetter),
    ("schedule", "Schedules", "taskmill_django_schedule_changelist", Schedule),
    ("worker", "Workers", "taskmill_django_worker_changelist", Worker),
    ("tags", "Tags", "taskmill_django_tags", Task),
    ("controls", "Controls", "taskmill_django_controls", Task),
)


def navigation(site: admin.AdminSite, request: HttpRequest, current: str) -> list[dict[str, Any]]:
    """Links between the taskmill pages this user may see, on this admin site."""
    links = []
    for key, label, url_name, model in _NAV:
        model_admin = site._registry.get(model)
        if model_admin is None or not model_admin.has_view_or_change_permission(request):
            continue
        try:
            url = reverse(f"{site.name}:{url_name}")
        except NoReverseMatch:
            continue
        links.append({"label": label, "url": url, "current": key == current})
    return links


def user_pk(request: HttpRequest) -> Any:
    """The signed-in user's primary key, for LogEntry rows (the admin requires a user)."""
    return request.user.pk
