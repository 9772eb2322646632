"""The API's routes, served by ``taskmill_django.api.urls`` (see there).

The namespace is ``taskmill_api`` (``reverse("taskmill_api:task-list")``).
"""

from __future__ import annotations

from django.urls import path, re_path
from rest_framework.renderers import JSONOpenAPIRenderer

from .base import TaskmillRouter, not_found
from .cluster import (
    DomainViewSet,
    GroupViewSet,
    RecurringViewSet,
    SnapshotView,
    StatsView,
    TagCountsView,
    TagKeysView,
    TagValuesView,
    WorkerViewSet,
)
from .schema import TaskmillSchemaGenerator, TaskmillSchemaView
from .views import DeadLetterViewSet, HistoryViewSet, TaskViewSet

app_name = "taskmill_api"

router = TaskmillRouter()
router.register("tasks", TaskViewSet, basename="task")
router.register("history", HistoryViewSet, basename="history")
router.register("dead-letter", DeadLetterViewSet, basename="dead-letter")
router.register("recurring", RecurringViewSet, basename="recurring")
router.register("groups", GroupViewSet, basename="group")
router.register("workers", WorkerViewSet, basename="worker")
router.register("domains", DomainViewSet, basename="domain")

api_patterns = [
    path("snapshot/", SnapshotView.as_view(), name="snapshot"),
    path("stats/", StatsView.as_view(), name="stats"),
    path("tags/keys/", TagKeysView.as_view(), name="tag-keys"),
    path("tags/values/", TagValuesView.as_view(), name="tag-values"),
    path("tags/counts/", TagCountsView.as_view(), name="tag-counts"),
    *router.urls,
]


schema_view = TaskmillSchemaView.as_view(
    renderer_classes=[JSONOpenAPIRenderer],
    schema_generator=TaskmillSchemaGenerator(
        title="taskmill API",
        description="Operate the taskmill_django scheduler over HTTP: tasks, history, dead "
        "letters, schedules, groups, workers.",
        version="1",
        patterns=api_patterns,
    ),
    public=True,
)

urlpatterns = [
    *api_patterns,
    path("schema/", schema_view, name="schema"),
    re_path(r"^(?P<path>.*)$", not_found),
]
