"""URLs: ``path("taskmill/api/", include("taskmill_django.api.urls"))``."""

from __future__ import annotations

from rest_framework.routers import DefaultRouter

from .views import HistoryViewSet, TaskViewSet

app_name = "taskmill_api"

router = DefaultRouter()
router.register("tasks", TaskViewSet, basename="task")
router.register("history", HistoryViewSet, basename="history")

urlpatterns = router.urls
