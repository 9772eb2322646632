"""History and the dead-letter list: filters, readable detail, retry and prune."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import unquote
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from .. import access, scheduler
from ..exceptions import TaskmillError
from ..models import DeadLetter, Task, TaskDependency, TaskHistory, Worker
from ..redaction import mask_json, mask_payload, mask_text
from . import charts, display
from .base import OperatorAdmin, TaskRowsMixin, log_operation
from .filters import (
    DomainFilter,
    HasErrorFilter,
    HistoryGroupFilter,
    HistoryTagFilter,
    PriorityTierFilter,
    RetriedFilter,
    TaskTypeFilter,
)
from .forms import PruneForm

RETRY_REPORT_LIMIT = 5
# Entries one retry request submits at most (each is its own transaction), read RETRY_CHUNK
# ids at a time: a request never loads or works through an unbounded list.
RETRY_LIMIT = 1000
RETRY_CHUNK = 100


def _excerpt(text: str, length: int = 80) -> str:
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first if len(first) <= length else first[: length - 1] + "…"


@admin.register(TaskHistory)
class TaskHistoryAdmin(TaskRowsMixin, OperatorAdmin):
    list_title = "Task history"
    read_need = access.READ_HISTORY
    list_display = (
        "id",
        "task_type",
        "label_or_key",
        "status_badge",
        "priority_display",
        "duration_display",
        "finished_display",
        "error_excerpt",
    )
    list_display_links = ("id", "task_type")
    list_filter: ClassVar[tuple[Any, ...]] = (
        "status",
        DomainFilter,
        TaskTypeFilter,
        PriorityTierFilter,
        HistoryGroupFilter,
        HasErrorFilter,
        HistoryTagFilter,
    )
    search_fields = ("=key", "label")
    search_help_text = "Exact key, a task id, or part of the label."
    show_full_result_count = False  # no COUNT(*) over all of history next to a filtered count
    actions: Sequence[Any] | None = None
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
        (
            "Outcome",
            {
                "fields": (
                    "duration_display",
                    "error_display",
                    "traceback_display",
                    "result_display",
                    "io_display",
                )
            },
        ),
        ("Payload and tags", {"fields": ("payload_display", "tags_display")}),
        (
            "Related tasks",
            {
                "fields": (
                    "parent_display",
                    "children_display",
                    "dependents_display",
                    "same_key_display",
                )
            },
        ),
        (
            "Timing and retries",
            {
                "fields": (
                    "created_at",
                    "started_at",
                    "finished_at",
                    "retry_display",
                    "rescue_count",
                    "worker_display",
                )
            },
        ),
    )
    readonly_fields = (
        "label_display",
        "status_badge",
        "priority_display",
        "duration_display",
        "error_display",
        "traceback_display",
        "result_display",
        "io_display",
        "payload_display",
        "tags_display",
        "parent_display",
        "children_display",
        "dependents_display",
        "same_key_display",
        "retry_display",
        "worker_display",
    )

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: TaskHistory) -> Any:
        return display.badge(obj.status)

    @admin.display(description="duration", ordering="duration_ms")
    def duration_display(self, obj: TaskHistory) -> str:
        return charts.format_ms(obj.duration_ms)

    @admin.display(description="retries")
    def retry_display(self, obj: TaskHistory) -> str:
        return f"{obj.retry_count} / {obj.max_retries}"

    @admin.display(description="error")
    def error_excerpt(self, obj: TaskHistory) -> Any:
        error = mask_text(obj.last_error, obj.task_type, obj.payload)
        return format_html(
            '<span class="tm-error-excerpt" title="{}">{}</span>',
            error[:500],
            _excerpt(error, 70),
        )

    @admin.display(description="finished", ordering="finished_at")
    def finished_display(self, obj: TaskHistory) -> Any:
        return display.relative(obj.finished_at)

    @admin.display(description="error")
    def error_display(self, obj: TaskHistory) -> Any:
        return display.preformatted(mask_text(obj.last_error, obj.task_type, obj.payload))

    @admin.display(description="traceback")
    def traceback_display(self, obj: TaskHistory) -> Any:
        return display.preformatted(mask_text(obj.traceback, obj.task_type, obj.payload))

    @admin.display(description="result")
    def result_display(self, obj: TaskHistory) -> Any:
        return display.pretty_json(mask_json(obj.result, obj.task_type, obj.payload))

    @admin.display(description="IO (read / write / net in / net out)")
    def io_display(self, obj: TaskHistory) -> str:
        return " / ".join(
            display.file_size(n)
            for n in (obj.read_bytes, obj.write_bytes, obj.net_rx_bytes, obj.net_tx_bytes)
        )

    @admin.display(description="payload")
    def payload_display(self, obj: TaskHistory) -> Any:
        return display.pretty_json(mask_payload(obj.payload, obj.task_type))

    @admin.display(description="tags")
    def tags_display(self, obj: TaskHistory) -> Any:
        url = display.admin_url(self.admin_site.name, type(obj), "changelist")
        return display.tag_table(obj.tags.values_list("key", "value"), url)

    @admin.display(description="parent")
    def parent_display(self, obj: TaskHistory) -> Any:
        if obj.parent_id is None:
            return display.EMPTY
        return display.task_links(self.admin_site.name, [obj.parent_id])

    @admin.display(description="children")
    def children_display(self, obj: TaskHistory) -> Any:
        return display.children(self.admin_site.name, obj.id)

    @admin.display(description="needed by (still waiting)")
    def dependents_display(self, obj: TaskHistory) -> Any:
        ids = TaskDependency.objects.filter(depends_on_id=obj.id).values_list("task_id", flat=True)
        return display.task_links(self.admin_site.name, sorted(ids)[:50])

    @admin.display(description="same key (active now and other runs)")
    def same_key_display(self, obj: TaskHistory) -> Any:
        ids = list(Task.objects.filter(key=obj.key).values_list("id", flat=True))
        ids += list(
            TaskHistory.objects.filter(key=obj.key)
            .exclude(id=obj.id)
            .newest_first()
            .values_list("id", flat=True)[:20]
        )
        return display.task_links(self.admin_site.name, ids)

    @admin.display(description="worker")
    def worker_display(self, obj: TaskHistory) -> Any:
        if obj.worker_id is None:
            return display.EMPTY
        worker = Worker.objects.filter(id=obj.worker_id).first()
        if worker is None:
            return format_html("{} <small>(gone)</small>", str(obj.worker_id)[:8])
        url = display.admin_url(self.admin_site.name, Worker, "change", worker.id)
        return format_html('<a href="{}">{}</a>', url, worker.name)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> Any:
        """A link to a task that has not finished yet: show its active row instead."""
        raw = unquote(object_id)
        context = dict(extra_context or {})
        if raw.isdigit():
            row = TaskHistory.objects.filter(id=int(raw)).values_list("status", flat=True)
            status = row.first()
            if status is None and Task.objects.filter(id=int(raw)).exists():
                url = display.admin_url(self.admin_site.name, Task, "change", int(raw))
                if url:
                    return HttpResponseRedirect(url)
            if status == "dead_letter":
                context.setdefault("object_actions", [("retry_entries", "Retry", "")])
                context.setdefault(
                    "object_action_url",
                    display.admin_url(self.admin_site.name, DeadLetter, "changelist"),
                )
        return super().change_view(request, object_id, form_url, extra_context=context)

    # --- prune -------------------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        info = self.opts.app_label, self.opts.model_name
        return [
            path(
                "prune/",
                self.admin_site.admin_view(self.prune_view),
                name="%s_%s_prune" % info,  # noqa: UP031 - Django's own URL naming pattern
            ),
            *super().get_urls(),
        ]

    def can_operate(self, request: HttpRequest) -> bool:
        """Pruning deletes history: ``delete_taskhistory``."""
        return access.allowed(request.user, access.PRUNE_HISTORY)

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> Any:
        tools = []
        if self.can_operate(request) and type(self) is TaskHistoryAdmin:
            info = self.admin_site.name, self.opts.app_label, self.opts.model_name
            tools.append(("Prune history…", reverse("%s:%s_%s_prune" % info)))  # noqa: UP031
        return super().changelist_view(request, {"tools": tools, **(extra_context or {})})

    def prune_view(self, request: HttpRequest) -> HttpResponse:
        self.require_operate(request)
        changelist = display.admin_url(self.admin_site.name, TaskHistory, "changelist") or ""
        form = PruneForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            target = scheduler.domain(data["domain"]) if data["domain"] else scheduler.store()
            where = f" in domain {data['domain']}" if data["domain"] else ""
            try:
                if data["mode"] == PruneForm.MODE_COUNT:
                    deleted = target.prune_history_by_count(int(data["amount"]))
                    text = (
                        f"Pruned {deleted} history row(s){where}, "
                        f"keeping the newest {int(data['amount'])}."
                    )
                else:
                    deleted = target.prune_history_by_age(data["amount"])
                    text = (
                        f"Pruned {deleted} history row(s){where} "
                        f"older than {data['amount']:g} days."
                    )
            except TaskmillError as exc:
                messages.error(request, f"Nothing pruned. {exc}")
            else:
                log_operation(request, TaskHistory, "", "history", text)
                messages.success(request, text)
                return HttpResponseRedirect(changelist)
        context = {
            **self.admin_site.each_context(request),
            **self.nav_context(request, "taskhistory"),
            "title": "Prune history",
            "opts": self.opts,
            "form": form,
            "total": TaskHistory.objects.count(),
            "changelist_url": changelist,
            "media": self.media + form.media,
        }
        return TemplateResponse(request, "admin/taskmill_django/prune.html", context)


@admin.register(DeadLetter)
class DeadLetterAdmin(TaskHistoryAdmin):
    """The dead-letter list: entries whose retries ran out, ready to be submitted again."""

    list_title = "Dead-letter list"
    list_display = (
        "id",
        "task_type",
        "label_or_key",
        "retry_display",
        "finished_display",
        "error_excerpt",
        "retried_display",
        "requeued_display",
    )
    list_filter = (
        RetriedFilter,
        DomainFilter,
        TaskTypeFilter,
        PriorityTierFilter,
        HistoryGroupFilter,
        HistoryTagFilter,
    )
    actions = ("retry_entries",)

    def has_retry_permission(self, request: HttpRequest) -> bool:
        """Retrying submits anew: ``add_task`` and ``view_taskhistory``, as over the API."""
        return access.allowed(request.user, access.RETRY_DEAD_LETTERS)

    def can_operate(self, request: HttpRequest) -> bool:
        return self.has_retry_permission(request)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        active = Task.objects.filter(key=OuterRef("key"))
        return (
            super()
            .get_queryset(request)
            .annotate(
                active_id=Subquery(active.values("id")[:1]),
                active_status=Subquery(active.values("status")[:1]),
            )
        )

    @admin.display(description="retried as", ordering="retried_at")
    def retried_display(self, obj: Any) -> Any:
        if obj.retried_as_id is None:
            return display.EMPTY
        # The task page sends a finished task on to its history page: no lookup per row.
        url = display.admin_url(self.admin_site.name, Task, "change", obj.retried_as_id)
        return format_html(
            '<a href="{}">#{}</a> {}', url, obj.retried_as_id, display.relative(obj.retried_at)
        )

    @admin.display(description="requeued")
    def requeued_display(self, obj: Any) -> Any:
        if getattr(obj, "active_id", None) is None:
            return display.EMPTY
        where = {obj.active_id: (Task, obj.active_status)}
        return display.task_link(self.admin_site.name, obj.active_id, where)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> Any:
        context = {
            "object_actions": [("retry_entries", "Retry", "")],
            **(extra_context or {}),
        }
        return super().change_view(request, object_id, form_url, extra_context=context)

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> Any:
        tools = []
        if self.can_operate(request):
            info = self.admin_site.name, self.opts.app_label, self.opts.model_name
            url = reverse("%s:%s_%s_retry_all" % info)  # noqa: UP031
            query = request.GET.urlencode()
            tools.append(("Retry all matching…", f"{url}?{query}" if query else url))
        return super().changelist_view(request, {"tools": tools, **(extra_context or {})})

    def get_urls(self) -> list[URLPattern]:
        info = self.opts.app_label, self.opts.model_name
        return [
            path(
                "retry-all/",
                self.admin_site.admin_view(self.retry_all_view),
                name="%s_%s_retry_all" % info,  # noqa: UP031
            ),
            *[u for u in super().get_urls() if not str(u.pattern).startswith("prune/")],
        ]

    @admin.action(description="Retry selected entries (submit them again)", permissions=["retry"])
    def retry_entries(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        self.retry(request, queryset)

    def retry_all_view(self, request: HttpRequest) -> HttpResponse:
        """Retry the entries the list's current filters match (``RETRY_LIMIT`` at a time),
        after a confirmation."""
        self.require_operate(request)
        changelist = display.admin_url(self.admin_site.name, DeadLetter, "changelist") or ""
        query = request.GET.urlencode()
        back = f"{changelist}?{query}" if query else changelist
        try:
            cl = self.get_changelist_instance(request)
        except IncorrectLookupParameters:
            messages.error(request, "Those filters are not valid; nothing was retried.")
            return HttpResponseRedirect(changelist)
        # Entries retried before are done with; "all" means all still waiting.
        matching = cl.get_queryset(request).filter(retried_at__isnull=True)
        if request.method == "POST":
            self.retry(request, matching)
            return HttpResponseRedirect(back)
        context = {
            **self.admin_site.each_context(request),
            **self.nav_context(request, "deadletter"),
            "title": "Retry all matching dead-letter entries",
            "opts": self.opts,
            "count": matching.count(),
            "limit": RETRY_LIMIT,
            "sample": display.sample_rows(matching[:10]),
            "filters": [(k, v) for k, values in request.GET.lists() for v in values],
            "back_url": back,
        }
        return TemplateResponse(request, "admin/taskmill_django/retry_all.html", context)

    def retry(self, request: HttpRequest, entries: QuerySet[Any]) -> None:
        """Submit the first ``RETRY_LIMIT`` of ``entries`` again (one transaction each) and tell
        the operator what happened. Entries at a preempting priority need ``submit_urgent``."""
        kinds: Counter[str] = Counter()
        errors: list[str] = []
        new_ids: list[int] = []
        done: list[int] = []
        urgent_ok = self.has_urgent_permission(request)
        beyond_limit = _more_than(entries, RETRY_LIMIT)
        for history_id, priority in _in_chunks(entries, RETRY_LIMIT):
            if access.is_urgent(priority) and not urgent_ok:
                errors.append(f"#{history_id}: {access.urgent_refusal(priority)}")
                continue
            try:
                outcome = scheduler.retry_dead_letter(history_id)
            except TaskmillError as exc:
                errors.append(f"#{history_id}: {exc}")
                continue
            kinds[outcome.kind] += 1
            done.append(history_id)
            if outcome.id is not None:
                new_ids.append(outcome.id)
        self.log_rows(
            request,
            DeadLetter.objects.filter(id__in=done[:10_000]).only("id", "task_type", "status"),
            "Retried (submitted again).",
        )
        if kinds:
            parts = [f"{n} {kind}" for kind, n in sorted(kinds.items())]
            total = sum(kinds.values())
            noun = "entry" if total == 1 else "entries"
            text = f"Retried {total} {noun}: {', '.join(parts)}."
            if len(new_ids) == 1:
                url = display.admin_url(self.admin_site.name, Task, "change", new_ids[0])
                self.message_user(
                    request,
                    format_html('{} <a href="{}">Open task #{}</a>', text, url, new_ids[0]),
                    messages.SUCCESS,
                )
            else:
                self.message_user(request, text, messages.SUCCESS)
        if errors:
            more = len(errors) - RETRY_REPORT_LIMIT
            shown = "; ".join(errors[:RETRY_REPORT_LIMIT]) + (
                f"; and {more} more" if more > 0 else ""
            )
            self.message_user(request, f"Not retried: {shown}", messages.ERROR)
        if not kinds and not errors:
            self.message_user(request, "Nothing to retry.", messages.WARNING)
        if beyond_limit:
            self.message_user(
                request,
                f"At most {RETRY_LIMIT} entries are retried at once: retry again for the rest.",
                messages.WARNING,
            )


def _in_chunks(entries: QuerySet[Any], limit: int) -> Iterator[tuple[int, int]]:
    """(id, priority) of the first ``limit`` entries by id, read ``RETRY_CHUNK`` at a time
    (keyset: entries retried meanwhile are not read twice)."""
    last, taken = 0, 0
    while taken < limit:
        rows = list(
            entries.filter(id__gt=last)
            .order_by("id")
            .values_list("id", "priority")[: min(RETRY_CHUNK, limit - taken)]
        )
        if not rows:
            return
        yield from rows
        last, taken = rows[-1][0], taken + len(rows)


def _more_than(entries: QuerySet[Any], limit: int) -> bool:
    return bool(entries.order_by("id").values_list("id", flat=True)[limit : limit + 1])
