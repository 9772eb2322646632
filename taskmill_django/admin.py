"""Read-mostly admin pages for active tasks, history and workers."""

from __future__ import annotations

from django.contrib import admin

from .models import Task, TaskHistory, Worker


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ("id", "task_type", "label", "status", "priority", "retry_count", "created_at")
    list_filter = ("status", "domain", "task_type")
    search_fields = ("key", "label")
    readonly_fields = tuple(f.name for f in Task._meta.fields)

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False


@admin.register(TaskHistory)
class TaskHistoryAdmin(admin.ModelAdmin):
    list_display = ("id", "task_type", "label", "status", "duration_ms", "finished_at")
    list_filter = ("status", "domain", "task_type")
    search_fields = ("key", "label")
    readonly_fields = tuple(f.name for f in TaskHistory._meta.fields)

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False


@admin.register(Worker)
class WorkerAdmin(admin.ModelAdmin):
    list_display = ("name", "hostname", "pid", "concurrency", "running_count", "heartbeat_at")
    readonly_fields = tuple(f.name for f in Worker._meta.fields)
