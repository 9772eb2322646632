"""Presentation helpers shared by the admin pages: links between rows, badges, JSON, sizes."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from django.db.models import Model
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from ..enums import HistoryStatus, Priority
from ..models import Task, TaskHistory
from ..redaction import mask_text

DASH = "\u2013"  # what an empty cell shows
EMPTY = format_html('<span class="tm-quiet">{}</span>', DASH)

_BADGE = {
    "pending": "tm-badge-pending",
    "running": "tm-badge-running",
    "paused": "tm-badge-paused",
    "blocked": "tm-badge-waiting",
    "waiting": "tm-badge-waiting",
    HistoryStatus.COMPLETED: "tm-badge-ok",
    HistoryStatus.FAILED: "tm-badge-error",
    HistoryStatus.DEAD_LETTER: "tm-badge-error",
    HistoryStatus.DEPENDENCY_FAILED: "tm-badge-error",
}


def badge(status: str) -> SafeString:
    css = _BADGE.get(status, "tm-badge-quiet")
    return format_html('<span class="tm-badge {}">{}</span>', css, status.replace("_", " "))


def priority_label(priority: int) -> str:
    """``128 (normal)``, or ``100 (high+36)`` between named tiers."""
    tier = Priority.tier_of(priority)
    if tier.value == priority:
        return f"{priority} ({tier.label})"
    return f"{priority} ({tier.label}+{priority - tier.value})"


def admin_url(site_name: str, model: type[Model], view: str, *args: Any) -> str | None:
    name = f"{site_name}:{model._meta.app_label}_{model._meta.model_name}_{view}"
    try:
        return reverse(name, args=args)
    except NoReverseMatch:
        return None


def locate(ids: Iterable[int]) -> dict[int, tuple[type, str]]:
    """Where each id lives now: (Task or TaskHistory, status). Two primary-key queries."""
    wanted = {i for i in ids if i is not None}
    found: dict[int, tuple[type, str]] = {}
    if not wanted:
        return found
    for task_id, status in Task.objects.filter(id__in=wanted).values_list("id", "status"):
        found[task_id] = (Task, status)
    rest = wanted - set(found)
    if rest:
        for task_id, status in TaskHistory.objects.filter(id__in=rest).values_list("id", "status"):
            found[task_id] = (TaskHistory, status)
    return found


def task_link(
    site_name: str, task_id: int, where: Mapping[int, tuple[type[Model], str]]
) -> SafeString:
    """``#12 running`` linking to the active or history page of task 12."""
    model, status = where.get(task_id, (None, "gone"))
    url = admin_url(site_name, model, "change", task_id) if model else None
    if url is None:
        return format_html("#{} {}", task_id, badge(status))
    return format_html('<a href="{}">#{}</a> {}', url, task_id, badge(status))


def task_links(site_name: str, ids: Iterable[int]) -> SafeString:
    ids = list(ids)
    if not ids:
        return EMPTY
    where = locate(ids)
    return format_html_join(mark_safe(", "), "{}", ((task_link(site_name, i, where),) for i in ids))


def children(site_name: str, parent_id: int, limit: int = 50) -> SafeString:
    """A parent's children, active and finished, as links (both tables index ``parent_id``),
    the first ``limit`` of each; nothing but a dash when it has none."""
    active = list(
        Task.objects.filter(parent_id=parent_id)
        .order_by("id")
        .values_list("id", flat=True)[: limit + 1]
    )
    finished = list(
        TaskHistory.objects.filter(parent_id=parent_id)
        .order_by("id")
        .values_list("id", flat=True)[: limit + 1]
    )
    history_url = admin_url(site_name, TaskHistory, "changelist")
    parts = []
    for label, ids in (("active", active), ("finished", finished)):
        if not ids:
            continue
        more: Any = ""
        if len(ids) > limit:
            more = " and more"
            if label == "finished" and history_url:
                more = format_html(
                    ' and <a href="{}?parent_id={}">more</a>', history_url, parent_id
                )
        parts.append(format_html("{}: {}{}", label, task_links(site_name, ids[:limit]), more))
    return format_html_join(mark_safe(" · "), "{}", ((part,) for part in parts)) or EMPTY


def sample_rows(rows: Iterable[Any]) -> list[dict[str, Any]]:
    """A few task or history rows for a confirmation page, their texts masked (``redaction``)."""
    return [
        {
            "pk": row.pk,
            "task_type": row.task_type,
            "priority": row.priority,
            "label": mask_text(row.label, row.task_type, row.payload),
            "last_error": mask_text(row.last_error, row.task_type, row.payload),
        }
        for row in rows
    ]


def pretty_json(value: Any) -> SafeString:
    if value in (None, {}, []):
        return EMPTY
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    return format_html('<pre class="tm-json">{}</pre>', text)


def preformatted(text: str) -> SafeString:
    return format_html('<pre class="tm-pre">{}</pre>', text) if text else EMPTY


def tag_table(tags: Iterable[tuple[str, str]], filter_url: str | None) -> SafeString:
    rows = sorted(tags)
    if not rows:
        return EMPTY
    cells = []
    for key, value in rows:
        if filter_url:
            cells.append(
                format_html(
                    '<tr><th>{}</th><td><a href="{}?tag={}%3A{}" title="Tasks with this tag">'
                    "{}</a></td></tr>",
                    key,
                    filter_url,
                    _quote(key),
                    _quote(value),
                    value,
                )
            )
        else:
            cells.append(format_html("<tr><th>{}</th><td>{}</td></tr>", key, value))
    return mark_safe('<table class="tm-kv">' + "".join(cells) + "</table>")  # noqa: S308 - cells are escaped


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def file_size(n: float | None) -> str:
    """Bytes for people.

    >>> [file_size(v) for v in (0, 512, 2048, 5 * 1024**3)]
    ['0 B', '512 B', '2.0 KiB', '5.0 GiB']
    """
    if n is None:
        return DASH
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"  # pragma: no cover - the loop always returns


def age(seconds: float | None) -> str:
    """A duration in words for "… ago" and "in …".

    >>> [age(v) for v in (3.2, 75, 4000, 200000)]
    ['3 s', '1 min 15 s', '1 h 6 min', '2 d 7 h']
    """
    if seconds is None:
        return DASH
    s = int(max(seconds, 0))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s" if s % 60 else f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def relative(when: datetime | None, now: datetime | None = None) -> SafeString:
    """``in 2 min`` or ``5 s ago``, with the exact time as a tooltip."""
    if when is None:
        return EMPTY
    now = now or timezone.now()
    delta = (when - now).total_seconds()
    text = f"in {age(delta)}" if delta > 0 else f"{age(-delta)} ago"
    local = timezone.localtime(when).strftime("%Y-%m-%d %H:%M:%S %Z")
    return format_html('<span title="{}">{}</span>', local, text)


def timestamp(when: datetime | None) -> SafeString:
    """``2026-06-01 12:30:05 UTC`` (local time, to the second), then how long ago."""
    if when is None:
        return EMPTY
    exact = timezone.localtime(when).strftime("%Y-%m-%d %H:%M:%S %Z")
    return format_html('{} <span class="tm-quiet">({})</span>', exact, relative(when))


def progress_bar(
    fraction: float | None, message: str = "", estimated: bool = False, overdue: bool = False
) -> SafeString:
    """A progress bar; ``estimated`` marks a figure extrapolated from past runs, and
    ``overdue`` replaces it when the task has run longer than those runs took."""
    if overdue:
        return format_html(
            '<span class="tm-overdue" title="{}">overdue</span>'
            '<span class="tm-progress-text">{}</span>',
            "running longer than its type's past runs took; no progress reported",
            f" · {message}" if message else "",
        )
    if fraction is None:
        return EMPTY
    percent = max(0.0, min(fraction, 1.0)) * 100
    css = "tm-progress tm-progress-estimated" if estimated else "tm-progress"
    title = f"{percent:.0f}%" + (" (estimated from past runs)" if estimated else "")
    return format_html(
        '<div class="{}" title="{}"><span style="width:{}%"></span></div>'
        '<span class="tm-progress-text">{}{}</span>',
        css,
        title,
        f"{percent:.1f}",
        f"{percent:.0f}%" + ("~" if estimated else ""),
        f" · {message}" if message else "",
    )


def io_summary(io: dict[str, Any] | None) -> list[tuple[str, bool]]:
    """A worker's measured IO as ("disk_write 4.8 MB/s of 1.0 MB/s", saturated) per direction
    that moved bytes or has a capacity, with the budget a busy direction has left; empty
    without RESOURCE_MONITORING."""
    from django.template.defaultfilters import filesizeformat

    lines = []
    for direction, m in sorted((io or {}).items()):
        if not m.get("rate") and not m.get("capacity"):
            continue
        text = f"{direction} {filesizeformat(m.get('rate') or 0)}/s"
        if m.get("capacity"):
            text += f" of {filesizeformat(m['capacity'])}/s"
        if m.get("budget") and not m.get("saturated"):
            text += f", room for tasks of up to {filesizeformat(m['budget'])}"
        lines.append((text, bool(m.get("saturated"))))
    return lines
