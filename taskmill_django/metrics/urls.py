"""URLs of the metrics endpoint; any prefix (the docs use ``taskmill/metrics``)."""

from __future__ import annotations

from django.urls import path

from .views import metrics_view

app_name = "taskmill_metrics"

urlpatterns = [
    path("", metrics_view, name="metrics"),
]
