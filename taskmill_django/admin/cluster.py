"""Workers (read-only) and recurring schedules (pause, resume, cancel)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.models import DELETION, LogEntry
from django.db.models import QuerySet
from django.db.models.functions import Now
from django.http import HttpRequest
from django.utils.html import format_html

from .. import access, scheduler
from ..conf import app_settings
from ..exceptions import TaskmillError
from ..models import Schedule, ScheduleTick, Task, Worker
from ..redaction import mask_payload
from . import display
from .base import OperatorAdmin, user_pk


@admin.register(Worker)
class WorkerAdmin(OperatorAdmin):
    list_title = "Workers"
    read_need = access.READ_WORKERS
    list_display = (
        "name",
        "alive_display",
        "host_display",
        "domains_display",
        "load_display",
        "heartbeat_display",
        "started_at",
    )
    search_fields = ("name", "hostname")
    actions = None
    fields = (
        "name",
        "alive_display",
        "host_display",
        "id",
        "domains_display",
        "load_display",
        "status",
        "started_at",
        "heartbeat_display",
        "running_display",
    )
    readonly_fields = (
        "alive_display",
        "host_display",
        "domains_display",
        "load_display",
        "heartbeat_display",
        "running_display",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Worker]:
        return super().get_queryset(request).annotate(db_now=Now())

    def _age(self, obj: Worker) -> float:
        now = getattr(obj, "db_now", None)
        return max((now - obj.heartbeat_at).total_seconds(), 0.0) if now else 0.0

    @admin.display(description="alive")
    def alive_display(self, obj: Worker) -> Any:
        if self._age(obj) < float(app_settings.LEASE_TIMEOUT):
            return format_html('<span class="tm-badge tm-badge-ok">{}</span>', "alive")
        return format_html('<span class="tm-badge tm-badge-error">{}</span>', "silent")

    @admin.display(description="host:pid")
    def host_display(self, obj: Worker) -> str:
        return f"{obj.hostname}:{obj.pid}"

    @admin.display(description="domains")
    def domains_display(self, obj: Worker) -> str:
        return ", ".join(obj.domains) if obj.domains else "all"

    @admin.display(description="running / slots")
    def load_display(self, obj: Worker) -> str:
        ahead = f" (+{obj.claim_ahead} ahead)" if obj.claim_ahead else ""
        return f"{obj.running_count} / {obj.concurrency}{ahead}"

    @admin.display(description="last heartbeat", ordering="heartbeat_at")
    def heartbeat_display(self, obj: Worker) -> str:
        return f"{display.age(self._age(obj))} ago"

    @admin.display(description="running tasks")
    def running_display(self, obj: Worker) -> Any:
        ids = Task.objects.filter(worker_id=obj.id).order_by("id").values_list("id", flat=True)
        return display.task_links(self.admin_site.name, list(ids[:100]))


@admin.register(Schedule)
class ScheduleAdmin(OperatorAdmin):
    list_title = "Recurring schedules"
    read_need = access.READ_SCHEDULES
    change_need = access.CHANGE_SCHEDULES
    list_display = (
        "id",
        "name_display",
        "task_type",
        "timing_display",
        "next_display",
        "occurrences_display",
        "paused_display",
    )
    list_display_links = ("id", "name_display")
    list_filter = ("is_paused", "is_declarative", "domain")
    search_fields = ("name", "task_type")
    actions = ("pause_schedules", "resume_schedules", "cancel_schedules")
    fields = (
        "id",
        "name",
        "task_type",
        "timing_display",
        "timezone",
        "next_display",
        "last_run_at",
        "occurrences_display",
        "skipped_count",
        "catch_up",
        "paused_display",
        "is_declarative",
        "payload_display",
        "options_display",
        "ticks_display",
        "created_at",
    )
    readonly_fields = (
        "name_display",
        "timing_display",
        "next_display",
        "occurrences_display",
        "paused_display",
        "payload_display",
        "options_display",
        "ticks_display",
    )

    @admin.display(description="name", ordering="name")
    def name_display(self, obj: Schedule) -> str:
        return obj.name or f"{obj.task_type} #{obj.id}"

    @admin.display(description="when")
    def timing_display(self, obj: Schedule) -> str:
        if obj.cron:
            return f"cron {obj.cron} ({obj.timezone})"
        return (
            f"every {display.age(obj.interval_seconds)}" if obj.interval_seconds else display.DASH
        )

    @admin.display(description="next run", ordering="next_run_at")
    def next_display(self, obj: Schedule) -> Any:
        if obj.is_paused:
            return format_html('<span class="tm-quiet">{}</span>', "paused")
        return display.relative(obj.next_run_at) if obj.next_run_at else "finished"

    @admin.display(description="occurrences")
    def occurrences_display(self, obj: Schedule) -> str:
        if obj.max_occurrences is None:
            return str(obj.occurrence_count)
        return f"{obj.occurrence_count} of {obj.max_occurrences}"

    @admin.display(description="paused", boolean=True)
    def paused_display(self, obj: Schedule) -> bool:
        return obj.is_paused

    @admin.display(description="payload")
    def payload_display(self, obj: Schedule) -> Any:
        return display.pretty_json(mask_payload(obj.payload, obj.task_type))

    @admin.display(description="submission options")
    def options_display(self, obj: Schedule) -> Any:
        return display.pretty_json(obj.options)

    @admin.display(description="recent occurrences")
    def ticks_display(self, obj: Schedule) -> Any:
        ids = [
            t
            for t in ScheduleTick.objects.filter(schedule=obj)
            .order_by("-tick_at")
            .values_list("task_id", flat=True)[:20]
            if t is not None
        ]
        return display.task_links(self.admin_site.name, ids)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> Any:
        context = {
            "object_actions": [
                ("pause_schedules", "Pause", ""),
                ("resume_schedules", "Resume", ""),
                ("cancel_schedules", "Cancel schedule", "deletelink"),
            ],
            **(extra_context or {}),
        }
        return super().change_view(request, object_id, form_url, extra_context=context)

    def response_action(
        self, request: HttpRequest, queryset: QuerySet[Any], *args: Any, **kwargs: Any
    ) -> Any:
        """Back to the schedule's page, unless it was just cancelled (deleted)."""
        response = super().response_action(request, queryset, *args, **kwargs)
        if request.POST.get("action") == "cancel_schedules":
            return response
        return self.back_to_next(request, response)

    def _each(self, request: HttpRequest, queryset: QuerySet[Schedule], op: Any, verb: str) -> int:
        done = 0
        for schedule in list(queryset):
            try:
                op(schedule.id)
            except TaskmillError as exc:
                self.message_user(request, f"{schedule}: {exc}", messages.ERROR)
                continue
            done += 1
            if verb != "Cancelled":
                self.log_change(request, schedule, f"{verb}.")
        return done

    @admin.action(description="Pause selected schedules", permissions=["change"])
    def pause_schedules(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        done = self._each(request, queryset, scheduler.pause_recurring, "Paused")
        self.message_user(request, f"Paused {done} schedule(s).", messages.SUCCESS)

    @admin.action(description="Resume selected schedules", permissions=["change"])
    def resume_schedules(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        done = self._each(request, queryset, scheduler.resume_recurring, "Resumed")
        self.message_user(request, f"Resumed {done} schedule(s).", messages.SUCCESS)

    @admin.action(
        description="Cancel selected schedules (tasks already submitted stay)",
        permissions=["change"],
    )
    def cancel_schedules(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        rows = list(queryset)
        LogEntry.objects.log_actions(user_pk(request), rows, DELETION, "Cancelled schedule.")
        done = self._each(request, queryset, scheduler.cancel_recurring, "Cancelled")
        self.message_user(request, f"Cancelled {done} schedule(s).", messages.SUCCESS)
