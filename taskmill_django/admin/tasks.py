"""The active tasks page: filters, readable detail, and actions that call the core."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.admin.views.main import ChangeList
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from .. import access, scheduler
from ..enums import TaskStatus
from ..exceptions import TaskmillError
from ..models import Task, TaskDependency, TaskHistory, Worker
from ..read import progress
from ..redaction import mask_json, mask_payload, mask_text
from ..store import operator
from . import display, views
from .base import OperatorAdmin, TaskRowsMixin
from .filters import (
    ActiveGroupFilter,
    DomainFilter,
    HasErrorFilter,
    PriorityTierFilter,
    TagFilter,
    TaskTypeFilter,
)
from .forms import ChangePriorityForm, selected_ids

CHUNK = 500


def _ids(queryset: QuerySet[Any]) -> list[int]:
    return list(queryset.order_by().values_list("id", flat=True))


def _chunks(ids: list[int]) -> Any:
    for start in range(0, len(ids), CHUNK):
        yield ids[start : start + CHUNK]


def task_buttons(task: Task | None) -> list[tuple[str, str, str]]:
    """The actions a task's page offers for the state it is in: Pause only while it can be
    paused by hand, Resume only while it is (or is about to be) paused by hand."""
    if task is None:
        return []
    buttons = [("cancel_tasks", "Cancel", "deletelink")]
    pausable = task.status == TaskStatus.PENDING or (
        task.status == TaskStatus.RUNNING and not task.cancel_reason
    )
    if pausable:
        buttons.append(("pause_tasks", "Pause", ""))
    if operator.MANUAL in (task.pause_reason, task.cancel_reason):
        buttons.append(("resume_tasks", "Resume", ""))
    buttons.append(("change_priority", "Change priority…", ""))
    return buttons


class TaskChangeList(ChangeList):
    """Names the workers of the rows on this page only (one query on the small worker table),
    instead of a per-row subquery that PostgreSQL would evaluate before the sort."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        worker_ids = {row.worker_id for row in self.result_list if row.worker_id}
        names = dict(Worker.objects.filter(id__in=worker_ids).values_list("id", "name"))
        for row in self.result_list:
            row.worker_name = names.get(row.worker_id)


@admin.register(Task)
class TaskAdmin(TaskRowsMixin, OperatorAdmin):
    list_title = "Active tasks"
    read_need = access.READ_TASKS
    change_need = access.CHANGE_TASKS
    list_display = (
        "id",
        "task_type",
        "label_or_key",
        "status_badge",
        "priority_display",
        "group_key",
        "state_display",
        "age_display",
    )
    list_display_links = ("id", "task_type")
    list_filter = (
        "status",
        DomainFilter,
        TaskTypeFilter,
        PriorityTierFilter,
        ActiveGroupFilter,
        HasErrorFilter,
        TagFilter,
    )
    search_fields = ("=key", "label")
    search_help_text = "Exact key, a task id, or part of the label."
    show_full_result_count = False
    ordering = ("priority", "id")
    actions = ("cancel_tasks", "pause_tasks", "resume_tasks", "change_priority")
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "id",
                    "task_type",
                    "label_display",
                    "status_badge",
                    "priority_display",
                    "group_key",
                    "key",
                )
            },
        ),
        ("Scheduler's explanation", {"fields": ("explanation",)}),
        (
            "Progress",
            {"fields": ("progress_detail", "worker_display", "started_at", "io_display")},
        ),
        ("Payload and tags", {"fields": ("payload_display", "tags_display")}),
        (
            "Related tasks",
            {
                "fields": (
                    "parent_display",
                    "children_display",
                    "dependencies_display",
                    "dependents_display",
                    "history_display",
                )
            },
        ),
        (
            "Timing and retries",
            {
                "fields": (
                    "created_at",
                    "run_after",
                    "first_started_at",
                    "expires_at",
                    "retry_display",
                    "rescue_count",
                    "last_error_display",
                )
            },
        ),
        (
            "Internals",
            {
                "classes": ("collapse",),
                "fields": (
                    "domain",
                    "fail_fast",
                    "on_dependency_failure",
                    "ttl_seconds",
                    "ttl_from",
                    "cancel_reason",
                    "pause_reason",
                    "paused_at",
                    "paused_seconds",
                    "has_requeue",
                    "has_children",
                    "is_finalizing",
                    "released_key",
                    "lease_token",
                    "memo_display",
                ),
            },
        ),
    )
    readonly_fields = (
        "label_display",
        "status_badge",
        "priority_display",
        "explanation",
        "progress_display",
        "progress_detail",
        "worker_display",
        "io_display",
        "payload_display",
        "tags_display",
        "parent_display",
        "children_display",
        "dependencies_display",
        "dependents_display",
        "history_display",
        "retry_display",
        "last_error_display",
        "memo_display",
    )

    # --- lists -------------------------------------------------------------------------------

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return TaskChangeList

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: Task) -> Any:
        text = display.badge(obj.status)
        reason = obj.cancel_reason or obj.pause_reason
        return format_html("{} <small>{}</small>", text, reason) if reason else text

    @admin.display(description="progress / due")
    def state_display(self, obj: Task) -> Any:
        """Running: progress and worker. Waiting for its time: when it is due."""
        if obj.status == "running":
            worker = self.worker_display(obj)
            return format_html("{} <small>on {}</small>", self.progress_display(obj), worker)
        if obj.run_after is not None and obj.run_after > timezone.now():
            return format_html("due {}", display.relative(obj.run_after))
        return display.EMPTY

    @admin.display(description="progress")
    def progress_display(self, obj: Task) -> Any:
        if obj.progress is not None:
            message = mask_text(obj.progress_message, obj.task_type, obj.payload)
            return display.progress_bar(obj.progress, message)
        if obj.status != "running":
            return display.EMPTY
        return format_html('<span class="tm-quiet">{}</span>', "no report yet")

    @admin.display(description="progress")
    def progress_detail(self, obj: Task) -> Any:
        """Reported progress, else the estimate every surface shows (``read.progress``)."""
        if obj.progress is not None or obj.status != "running":
            return self.progress_display(obj)
        estimates = progress.estimate(progress.running_with_clock(Q(id=obj.id)))
        estimate = estimates[0] if estimates else None
        if estimate is None or estimate.extrapolated_percent is None:
            return self.progress_display(obj)
        return display.progress_bar(
            estimate.percent, obj.progress_message, estimated=True, overdue=estimate.is_overdue
        )

    @admin.display(description="worker")
    def worker_display(self, obj: Task) -> Any:
        if obj.worker_id is None:
            return display.EMPTY
        if hasattr(obj, "worker_name"):  # set for a whole list page by TaskChangeList
            name = obj.worker_name
        else:
            name = Worker.objects.filter(id=obj.worker_id).values_list("name", flat=True).first()
        name = name or str(obj.worker_id)[:8]
        url = display.admin_url(self.admin_site.name, Worker, "change", obj.worker_id)
        return format_html('<a href="{}">{}</a>', url, name) if url else name

    @admin.display(description="submitted", ordering="created_at")
    def age_display(self, obj: Task) -> Any:
        return display.relative(obj.created_at)

    @admin.display(description="retries")
    def retry_display(self, obj: Task) -> str:
        return f"{obj.retry_count} / {obj.max_retries}"

    # --- the detail page ---------------------------------------------------------------------

    @admin.display(description="reasons")
    def explanation(self, obj: Task) -> Any:
        try:
            reasons = scheduler.explain(obj.id)
        except TaskmillError:
            return display.EMPTY
        texts = (mask_text(r.message, obj.task_type, obj.payload) for r in reasons)
        items = format_html_join("", "<li>{}</li>", ((text,) for text in texts))
        return format_html('<ul class="tm-reasons">{}</ul>', items)

    @admin.display(description="IO (done / expected)")
    def io_display(self, obj: Task) -> str:
        done = obj.read_bytes + obj.write_bytes + obj.net_rx_bytes + obj.net_tx_bytes
        expected = (
            obj.expected_read_bytes
            + obj.expected_write_bytes
            + obj.expected_net_rx_bytes
            + obj.expected_net_tx_bytes
        )
        return f"{display.file_size(done)} / {display.file_size(expected)}"

    @admin.display(description="payload")
    def payload_display(self, obj: Task) -> Any:
        return display.pretty_json(mask_payload(obj.payload, obj.task_type))

    @admin.display(description="tags")
    def tags_display(self, obj: Task) -> Any:
        url = display.admin_url(self.admin_site.name, Task, "changelist")
        return display.tag_table(obj.tags.values_list("key", "value"), url)

    @admin.display(description="parent")
    def parent_display(self, obj: Task) -> Any:
        if obj.parent_id is None:
            return display.EMPTY
        return display.task_links(self.admin_site.name, [obj.parent_id])

    @admin.display(description="children")
    def children_display(self, obj: Task) -> Any:
        if not obj.has_children:
            return display.EMPTY
        return display.children(self.admin_site.name, obj.id)

    @admin.display(description="depends on")
    def dependencies_display(self, obj: Task) -> Any:
        ids = TaskDependency.objects.filter(task_id=obj.id).values_list("depends_on_id", flat=True)
        return display.task_links(self.admin_site.name, sorted(ids))

    @admin.display(description="needed by")
    def dependents_display(self, obj: Task) -> Any:
        ids = TaskDependency.objects.filter(depends_on_id=obj.id).values_list("task_id", flat=True)
        return display.task_links(self.admin_site.name, sorted(ids)[:50])

    @admin.display(description="earlier runs (same key)")
    def history_display(self, obj: Task) -> Any:
        ids = TaskHistory.objects.filter(key=obj.key).newest_first().values_list("id", flat=True)
        return display.task_links(self.admin_site.name, list(ids[:20]))

    @admin.display(description="last error")
    def last_error_display(self, obj: Task) -> Any:
        return display.preformatted(mask_text(obj.last_error, obj.task_type, obj.payload))

    @admin.display(description="memo")
    def memo_display(self, obj: Task) -> Any:
        return display.pretty_json(mask_json(obj.memo, obj.task_type, obj.payload))

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> Any:
        """A task that has finished since the link was made: show its history row instead."""
        raw = unquote(object_id)
        if raw.isdigit() and not Task.objects.filter(id=int(raw)).exists():
            url = display.admin_url(self.admin_site.name, TaskHistory, "change", int(raw))
            if url and TaskHistory.objects.filter(id=int(raw)).exists():
                return HttpResponseRedirect(url)
        task = Task.objects.filter(id=int(raw)).first() if raw.isdigit() else None
        context = {"object_actions": task_buttons(task), **(extra_context or {})}
        return super().change_view(request, object_id, form_url, extra_context=context)

    # --- actions -----------------------------------------------------------------------------

    @admin.action(description="Cancel selected tasks", permissions=["change"])
    def cancel_tasks(self, request: HttpRequest, queryset: QuerySet[Task]) -> None:
        ids = _ids(queryset)
        self.log_queryset(request, Task.objects.filter(id__in=ids[:10_000]), "Cancelled.")
        count = sum(len(scheduler.cancel_where(Q(id__in=chunk))) for chunk in _chunks(ids))
        self.message_user(
            request,
            f"Cancelled {count} task(s) (children included). Running ones stop at their "
            "worker's next heartbeat.",
            messages.SUCCESS,
        )

    @admin.action(description="Pause selected tasks", permissions=["change"])
    def pause_tasks(self, request: HttpRequest, queryset: QuerySet[Task]) -> None:
        ids = _ids(queryset)
        count = operator.pause_tasks(ids)
        selected = Task.objects.filter(id__in=ids[:10_000])
        paused = selected.filter(status="paused", pause_reason=operator.MANUAL)
        asked = selected.filter(status="running", cancel_reason=operator.MANUAL)
        self.log_queryset(request, paused, "Paused.")
        self.log_queryset(request, asked, "Pause requested (running).")
        self._report(
            request, "Paused", count, len(ids), "only pending and running tasks can be paused"
        )
        if asked.exists():
            self.message_user(
                request,
                "Running tasks among them stop and wait paused at their worker's next "
                "heartbeat (no retry spent); one that finishes first simply finishes.",
                messages.INFO,
            )

    @admin.action(description="Resume selected tasks", permissions=["change"])
    def resume_tasks(self, request: HttpRequest, queryset: QuerySet[Task]) -> None:
        ids = _ids(queryset)
        count = operator.resume_tasks(ids)
        self.log_queryset(request, Task.objects.filter(id__in=ids[:10_000]), "Resumed.")
        self._report(
            request,
            "Resumed",
            count,
            len(ids),
            "only tasks paused by hand resume here; preempted tasks, and tasks paused with "
            "the cluster, their domain or their group, resume when that is over",
        )

    @admin.action(description="Change priority of selected tasks…", permissions=["change"])
    def change_priority(
        self, request: HttpRequest, queryset: QuerySet[Task]
    ) -> HttpResponse | None:
        if "apply" in request.POST:
            form = ChangePriorityForm(request.POST)
            if form.is_valid():
                value = form.cleaned_data["value"]
                if access.is_urgent(value) and not self.has_urgent_permission(request):
                    self.message_user(
                        request, f"Nothing changed: {access.urgent_refusal(value)}.", messages.ERROR
                    )
                    return None
                ids = _ids(queryset)
                try:
                    count = operator.set_priority(ids, value)
                except TaskmillError as exc:
                    self.message_user(request, str(exc), messages.ERROR)
                    return None
                self.log_queryset(
                    request,
                    Task.objects.filter(id__in=ids[:10_000]),
                    f"Priority set to {value}.",
                )
                self.message_user(
                    request,
                    f"Priority of {count} task(s) set to {display.priority_label(value)}.",
                    messages.SUCCESS,
                )
                return None
        else:
            form = ChangePriorityForm(initial={"_selected_action": selected_ids(request)})
        context = {
            **self.admin_site.each_context(request),
            "title": "Change priority",
            "opts": self.opts,
            "form": form,
            "sample": display.sample_rows(queryset[:20]),
            "count": queryset.count(),
            "select_across": request.POST.get("select_across", "0"),
            "action": "change_priority",
            "next_url": request.POST.get("_next", ""),
            "media": self.media + form.media,
        }
        return TemplateResponse(request, "admin/taskmill_django/change_priority.html", context)

    def _report(self, request: HttpRequest, verb: str, done: int, asked: int, why: str) -> None:
        skipped = asked - done
        text = f"{verb} {done} task(s)."
        if skipped:
            text += f" {skipped} left as they were: {why}."
        self.message_user(request, text, messages.SUCCESS if done else messages.WARNING)

    def response_action(
        self, request: HttpRequest, queryset: QuerySet[Any], *args: Any, **kwargs: Any
    ) -> Any:
        """Actions started from a task's own page go back to that page."""
        return self.back_to_next(
            request, super().response_action(request, queryset, *args, **kwargs)
        )

    # --- pages that are not about one model --------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path(
                "dashboard/",
                wrap(self._view(views.dashboard)),
                name="taskmill_django_dashboard",
            ),
            path(
                "dashboard/data/",
                wrap(self._view(views.dashboard_data)),
                name="taskmill_django_dashboard_data",
            ),
            path("tags/", wrap(self._view(views.tag_browser)), name="taskmill_django_tags"),
            path("controls/", wrap(self._view(views.controls)), name="taskmill_django_controls"),
            *super().get_urls(),
        ]

    def _view(self, func: Any) -> Any:
        def view(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            return func(self, request, *args, **kwargs)

        view.__name__ = func.__name__
        return view
