"""The dashboard's entry in the admin index and sidebar: a row that leads to the dashboard."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import reverse

from ..models import Dashboard, Task


@admin.register(Dashboard)
class DashboardLinkAdmin(admin.ModelAdmin):
    """Listed like a model; opening it opens the dashboard. Who may see it is whoever may
    see the dashboard, as the tasks' admin decides."""

    def _tasks(self) -> Any:
        return self.admin_site._registry.get(Task)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        tasks = self._tasks()
        return bool(tasks and tasks.has_view_or_change_permission(request))

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponseRedirect:
        return HttpResponseRedirect(reverse(f"{self.admin_site.name}:taskmill_django_dashboard"))
