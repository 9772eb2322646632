"""Read-only viewsets over active tasks and history."""

from __future__ import annotations

from django.utils.module_loading import import_string
from rest_framework import serializers, viewsets

from ..conf import app_settings
from ..models import Task, TaskHistory


def _permissions() -> list:  # type: ignore[type-arg]
    return [import_string(path) for path in app_settings.API_PERMISSION_CLASSES]


class TaskSerializer(serializers.ModelSerializer):
    class Meta:
        model = Task
        exclude = ("lease_token",)


class HistorySerializer(serializers.ModelSerializer):
    class Meta:
        model = TaskHistory
        fields = "__all__"


class TaskViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = TaskSerializer
    queryset = Task.objects.order_by("priority", "id")

    def get_permissions(self):  # type: ignore[no-untyped-def]
        return [p() for p in _permissions()]


class HistoryViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = HistorySerializer
    queryset = TaskHistory.objects.order_by("-finished_at", "-id")

    def get_permissions(self):  # type: ignore[no-untyped-def]
        return [p() for p in _permissions()]
