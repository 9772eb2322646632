"""Admin pages that are not about one model: the dashboard (+ its JSON), tags, controls.

Each view takes the TaskAdmin it is mounted on (for the admin site, permissions and logging),
reads through ``taskmill_django.dashboard`` and changes state only through core functions.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import quote, urlencode

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from .. import access, registry, scheduler
from ..exceptions import TaskmillError
from ..models import DeadLetter, PausedGroup, SchedulerSetting, Task, TaskHistory, Worker
from ..policy import config
from ..read import dashboard as board
from . import charts, display
from .base import OperatorAdmin, log_operation
from .forms import (
    DomainForm,
    GroupForm,
    GroupLimitForm,
    GroupPauseForm,
    GroupRateLimitForm,
    GroupWeightForm,
    MaxConcurrencyForm,
    TypeRateLimitForm,
)

REFRESH_SECONDS = 5
PANELS = ("summary", "charts", "running", "domains", "workers", "limits", "schedules", "types")


# --- dashboard -------------------------------------------------------------------------------


def dashboard(model_admin: OperatorAdmin, request: HttpRequest) -> HttpResponse:
    model_admin.require_view(request)
    data = board.collect()
    context = {
        **model_admin.admin_site.each_context(request),
        **model_admin.nav_context(request, "dashboard"),
        **panel_context(model_admin, data),
        "title": "Taskmill dashboard",
        "opts": model_admin.opts,
        "data_url": reverse(f"{model_admin.admin_site.name}:taskmill_django_dashboard_data"),
        "refresh_seconds": REFRESH_SECONDS,
        "panels": PANELS,
    }
    return TemplateResponse(request, "admin/taskmill_django/dashboard.html", context)


def dashboard_data(model_admin: OperatorAdmin, request: HttpRequest) -> JsonResponse:
    """The dashboard as JSON: ``data`` (plain records) and ``panels`` (rendered HTML that the
    page's script swaps in, so numbers, bars and charts are drawn by one code path)."""
    model_admin.require_view(request)
    data = board.collect()
    context = panel_context(model_admin, data)
    panels = {
        name: render_to_string(
            f"admin/taskmill_django/dashboard/{name}.html", context, request=request
        )
        for name in PANELS
    }
    return JsonResponse({"data": board.to_json(data), "clock": context["clock"], "panels": panels})


def panel_context(model_admin: OperatorAdmin, data: board.Dashboard) -> dict[str, Any]:
    site = model_admin.admin_site.name
    now = data.generated_at
    minutes = [data.window_start + timedelta(minutes=i) for i in range(data.window_minutes)]
    clock = [timezone.localtime(m).strftime("%H:%M") for m in minutes]
    ticks = [(i, clock[i]) for i in range(0, data.window_minutes, 15)]
    ticks.append((data.window_minutes - 1, "now"))
    colors = {s.name: charts.color_for(i) for i, s in enumerate(data.throughput)}
    completed = [charts.Series(s.name, colors[s.name], s.completed) for s in data.throughput]
    failed = [charts.Series(s.name, colors[s.name], s.failed) for s in data.throughput]

    def tips(series: list[charts.Series], what: str) -> list[str]:
        return [
            f"{clock[i]} — {what}: "
            + (", ".join(f"{s.name} {s.values[i]}" for s in series if s.values[i]) or "none")
            for i in range(data.window_minutes)
        ]

    depth_tips = [f"{clock[i]} — up to {n} unfinished" for i, n in enumerate(data.queue_depth)]
    snapshot = data.snapshot
    task_url = display.admin_url(site, Task, "changelist")
    return {
        "board": data,
        "generated_at": now,
        "clock": timezone.localtime(now).strftime("%H:%M:%S"),
        "totals": [(status, n, f"{task_url}?status={status}") for status, n in data.totals.items()],
        "active_count": sum(data.totals.values()),
        "pressure_percent": round(snapshot.pressure * 100),
        "pressure_breakdown": sorted(snapshot.pressure_breakdown.items()),
        "completed_chart": charts.stacked_bars(
            completed, ticks, tips(completed, "completed"), label="Completed per minute"
        ),
        "failed_chart": charts.stacked_bars(
            failed, ticks, tips(failed, "failed"), label="Failed per minute"
        ),
        "depth_chart": charts.area(
            data.queue_depth, ticks, depth_tips, label="Unfinished tasks", color="#79aec8"
        ),
        "duration_chart": charts.duration_bars(
            [(t.task_type, t.p50_ms, t.p95_ms) for t in data.types],
            label="Duration p50 and p95 per task type",
        ),
        "legend": charts.legend(completed),
        "running_rows": [
            {
                "row": r,
                "link": display.task_link(site, r.id, {r.id: (Task, "running")}),
                "bar": display.progress_bar(
                    r.progress, r.message, r.is_estimated, overdue=r.is_overdue
                ),
                "elapsed": display.age(r.elapsed_seconds),
                "priority": display.priority_label(r.priority),
                "worker_url": display.admin_url(site, Worker, "change", r.worker_id)
                if r.worker_id
                else None,
            }
            for r in data.running
        ],
        "running_more": data.snapshot.running_count > len(data.running),
        "running_url": f"{task_url}?status=running",
        "domain_rows": [
            {"row": d, "url": f"{task_url}?domain={quote(d.name)}"} for d in data.domains
        ],
        "worker_rows": [
            {
                "row": w,
                "age": display.age(w.heartbeat_age_seconds),
                "url": display.admin_url(site, Worker, "change", w.id),
                "load": round(100 * w.running_count / w.concurrency) if w.concurrency else 0,
                "io": display.io_summary(w.io),
            }
            for w in snapshot.workers
        ],
        "schedule_rows": [
            {
                "row": s,
                "next": display.relative(s.next_run_at, now),
                "every": s.cron
                or (
                    f"every {display.age(s.interval_seconds)}"
                    if s.interval_seconds
                    else display.DASH
                ),
            }
            for s in snapshot.recurring
        ],
        "type_rows": [
            {
                "row": t,
                "avg": charts.format_ms(t.avg_duration_ms),
                "p50": charts.format_ms(t.p50_ms),
                "p95": charts.format_ms(t.p95_ms),
                "failure_percent": f"{t.failure_rate * 100:.1f}%",
                "read": display.file_size(t.avg_read_bytes),
                "write": display.file_size(t.avg_write_bytes),
                "url": f"{display.admin_url(site, TaskHistory, 'changelist')}"
                f"?task_type={quote(t.task_type)}",
            }
            for t in data.types
        ],
        "group_rows": [
            {"row": g, "until": display.relative(g.paused_until, now) if g.paused_until else None}
            for g in data.groups
        ],
        "type_limits": [r for r in data.rate_limits if r.scope == "type"],
        "controls_url": reverse(f"{site}:taskmill_django_controls"),
        "dead_letter_url": display.admin_url(site, DeadLetter, "changelist"),
    }


# --- tag browser -----------------------------------------------------------------------------


def tag_browser(model_admin: OperatorAdmin, request: HttpRequest) -> HttpResponse:
    """Tag keys by prefix → a key's values with counts → the tasks carrying them."""
    model_admin.require_view(request)
    site = model_admin.admin_site.name
    history = request.GET.get("source") == "history"
    if history:
        model_admin.require(request, access.READ_HISTORY)
    prefix = request.GET.get("prefix", "")[:64]
    key = request.GET.get("key", "")[:64]
    list_url = display.admin_url(site, TaskHistory if history else Task, "changelist")
    source = "history" if history else "active"

    def here(**params: str) -> str:
        return "?" + urlencode({"source": source, **params})

    keys = [
        {
            "key": k.value,
            "count": k.count,
            "url": here(prefix=prefix, key=k.value),
            "tasks_url": f"{list_url}?{urlencode({'tag': k.value})}",
            "current": k.value == key,
        }
        for k in board.tag_keys(prefix, history=history)
    ]
    values = [
        {
            "value": v.value,
            "count": v.count,
            "tasks_url": f"{list_url}?{urlencode({'tag': f'{key}:{v.value}'})}",
        }
        for v in (board.tag_values(key, history=history) if key else [])
    ]
    context = {
        **model_admin.admin_site.each_context(request),
        **model_admin.nav_context(request, "tags"),
        "title": "Tags",
        "opts": model_admin.opts,
        "source": source,
        "prefix": prefix,
        "key": key,
        "keys": keys,
        "values": values,
        "prefix_tasks_url": f"{list_url}?{urlencode({'tag_prefix': prefix})}" if prefix else None,
        "active_url": "?" + urlencode({"prefix": prefix}),
        "history_url": "?" + urlencode({"prefix": prefix, "source": "history"}),
    }
    return TemplateResponse(request, "admin/taskmill_django/tags.html", context)


# --- controls --------------------------------------------------------------------------------

Handler = Callable[[forms.Form], tuple[type, str, str]]


def _pause_all(form: forms.Form) -> tuple[type, str, str]:
    asked = scheduler.pause_all()
    text = f"Paused the whole cluster; {asked} running task(s) asked to pause."
    return SchedulerSetting, config.PAUSED, text


def _resume_all(form: forms.Form) -> tuple[type, str, str]:
    resumed = scheduler.resume_all()
    text = f"Resumed the whole cluster; {resumed} paused task(s) pending again."
    return SchedulerSetting, config.PAUSED, text


def _max_concurrency(form: forms.Form) -> tuple[type, str, str]:
    limit = form.cleaned_data["limit"]
    scheduler.set_max_concurrency(limit)
    text = f"Cluster-wide cap set to {limit}." if limit else "Cluster-wide cap removed."
    return SchedulerSetting, config.MAX_CONCURRENCY, text


def _pause_domain(form: forms.Form) -> tuple[type, str, str]:
    name = form.cleaned_data["domain"]
    asked = scheduler.domain(name).pause()
    text = f"Paused domain {name}; {asked} running task(s) asked to pause."
    return SchedulerSetting, config.DOMAIN_PAUSED + name, text


def _resume_domain(form: forms.Form) -> tuple[type, str, str]:
    name = form.cleaned_data["domain"]
    resumed = scheduler.domain(name).resume()
    text = f"Resumed domain {name}; {resumed} paused task(s) pending again."
    return SchedulerSetting, config.DOMAIN_PAUSED + name, text


def _domain_limit(form: forms.Form) -> tuple[type, str, str]:
    name, limit = form.cleaned_data["domain"], form.cleaned_data["limit"]
    scheduler.domain(name).set_max_concurrency(limit)
    text = f"Domain {name} capped at {limit}." if limit else f"Domain {name} cap removed."
    return SchedulerSetting, config.DOMAIN_CAP + name, text


def _pause_group(form: forms.Form) -> tuple[type, str, str]:
    group, until = form.cleaned_data["group"], form.cleaned_data.get("until")
    asked = scheduler.pause_group(group, until)
    text = f"Paused group {group}" + (f" until {until:%Y-%m-%d %H:%M:%S}" if until else "")
    text += f"; {asked} running task(s) asked to pause."
    return PausedGroup, group, text


def _resume_group(form: forms.Form) -> tuple[type, str, str]:
    group = form.cleaned_data["group"]
    was_paused = scheduler.resume_group(group)
    text = f"Resumed group {group}." if was_paused else f"Group {group} was not paused."
    return PausedGroup, group, text


def _group_limit(form: forms.Form) -> tuple[type, str, str]:
    group, limit = form.cleaned_data["group"], form.cleaned_data["limit"]
    if limit:
        scheduler.set_group_limit(group, limit)
    else:
        scheduler.remove_group_limit(group)
    text = f"Group {group} capped at {limit}." if limit else f"Group {group} cap removed."
    return SchedulerSetting, config.GROUP_CAP + group, text


def _group_weight(form: forms.Form) -> tuple[type, str, str]:
    group = form.cleaned_data["group"]
    weight, slots = form.cleaned_data["weight"], form.cleaned_data["minimum_slots"]
    if weight:
        scheduler.set_group_weight(group, weight)
    else:
        scheduler.remove_group_weight(group)
    scheduler.set_group_minimum_slots(group, slots)
    text = f"Group {group}: weight {weight or 'default'}, minimum slots {slots or 0}."
    return SchedulerSetting, config.GROUP_WEIGHT + group, text


def _group_rate(form: forms.Form) -> tuple[type, str, str]:
    assert isinstance(form, GroupRateLimitForm)  # noqa: S101 - the table below pairs them
    group, limit = form.cleaned_data["group"], form.limit()
    scheduler.set_group_rate_limit(group, limit)
    text = f"Group {group} rate limit: {_rate_text(limit)}."
    return SchedulerSetting, config.GROUP_RATE + group, text


def _type_rate(form: forms.Form) -> tuple[type, str, str]:
    assert isinstance(form, TypeRateLimitForm)  # noqa: S101 - the table below pairs them
    task_type, limit = form.cleaned_data["task_type"], form.limit()
    scheduler.set_rate_limit(task_type, limit)
    text = f"{task_type} rate limit: {_rate_text(limit)}."
    return SchedulerSetting, config.RATE + task_type, text


def _rate_text(limit: Any) -> str:
    if limit is None:
        return "removed"
    return f"{limit.rate:g}/s, burst {limit.burst:g}"


OPERATIONS: dict[str, tuple[type[forms.Form], Handler]] = {
    "pause_all": (forms.Form, _pause_all),
    "resume_all": (forms.Form, _resume_all),
    "max_concurrency": (MaxConcurrencyForm, _max_concurrency),
    "pause_domain": (DomainForm, _pause_domain),
    "resume_domain": (DomainForm, _resume_domain),
    "domain_limit": (DomainForm, _domain_limit),
    "pause_group": (GroupPauseForm, _pause_group),
    "resume_group": (GroupForm, _resume_group),
    "group_limit": (GroupLimitForm, _group_limit),
    "group_weight": (GroupWeightForm, _group_weight),
    "group_rate": (GroupRateLimitForm, _group_rate),
    "type_rate": (TypeRateLimitForm, _type_rate),
}


def controls(model_admin: OperatorAdmin, request: HttpRequest) -> HttpResponse:
    """Cluster, domain, group and rate-limit controls: one small form per operation."""
    model_admin.require_view(request)
    may_control = access.allowed(request.user, access.CONTROL)
    if request.method == "POST":
        if not may_control:
            raise PermissionDenied
        return _operate(model_admin, request)
    snapshot = scheduler.snapshot(running_limit=0)  # counts only: the page lists no task
    policy = board.current_policy(snapshot)
    now = timezone.now()
    rate_limits = board.rate_limit_rows(policy, now)
    type_limits = {r.name: r for r in rate_limits if r.scope == "type"}
    group_rows = board.group_rows(snapshot, policy, rate_limits)
    groups = [
        {"row": g, "until": display.relative(g.paused_until, now) if g.paused_until else None}
        for g in group_rows
    ]
    context = {
        **model_admin.admin_site.each_context(request),
        **model_admin.nav_context(request, "controls"),
        "title": "Controls",
        "opts": model_admin.opts,
        "can_operate": may_control,
        "snapshot": snapshot,
        "policy": policy,
        "domains": board.domain_rows(snapshot, policy, []),
        "groups": groups,
        "types": [(t.task_type, type_limits.get(t.task_type)) for t in registry.all_tasks()],
        "type_limits_count": len(type_limits),
        "group_names": sorted({row.name for row in group_rows}),
    }
    return TemplateResponse(request, "admin/taskmill_django/controls.html", context)


def _operate(model_admin: OperatorAdmin, request: HttpRequest) -> HttpResponse:
    back = HttpResponseRedirect(request.get_full_path())
    op = request.POST.get("op", "")
    if op not in OPERATIONS:
        messages.error(request, f"Unknown operation {op!r}.")
        return back
    form_class, handler = OPERATIONS[op]
    form = form_class(request.POST)
    if not form.is_valid():
        errors = "; ".join(
            f"{field}: {' '.join(map(str, errs))}"
            if field != "__all__"
            else " ".join(map(str, errs))
            for field, errs in form.errors.items()
        )
        messages.error(request, f"Nothing changed. {errors}")
        return back
    try:
        model, object_id, text = handler(form)
    except TaskmillError as exc:
        messages.error(request, f"Nothing changed. {exc}")
        return back
    log_operation(request, model, object_id, object_id, text)
    messages.success(request, text)
    return back
