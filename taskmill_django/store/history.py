"""Moving finished tasks from the active table to history, in the caller's transaction.

Every terminal transition (complete, fail, dead-letter, cancel, supersede, expire) goes through
``move_to_history`` so tags are copied, edges cleaned and dependents resolved in one place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.models import Q

from .. import clock
from ..enums import HistoryStatus
from ..models import Task, TaskHistory, TaskTag
from .counters import count_history
from .db import chunks, is_postgres, notify_results, qn


@dataclass(frozen=True)
class Finish:
    """Per-task details of a terminal transition (all optional)."""

    error: str = ""
    traceback: str = ""
    result: Any = None
    duration_ms: int | None = None
    read_bytes: int = 0
    write_bytes: int = 0
    net_rx_bytes: int = 0
    net_tx_bytes: int = 0


_NO_DETAILS = Finish()


def move_to_history(
    rows: Sequence[Task],
    status: str,
    details: Mapping[int, Finish] | None = None,
    *,
    statuses: Mapping[int, str] | None = None,
) -> list[TaskHistory]:
    """Insert history rows for ``rows``, copy their tags, and delete them from the active table.

    Must run inside a transaction that holds the rows' locks (or otherwise owns them).
    ``statuses`` overrides ``status`` per task id.
    """
    if not rows:
        return []
    now = clock.now()
    details = details or {}
    statuses = statuses or {}
    history = [
        _history_row(row, statuses.get(row.id, status), details.get(row.id, _NO_DETAILS), now)
        for row in rows
    ]
    TaskHistory.objects.bulk_create(history)
    count_history(
        rows,
        {h.id: h.status for h in history},
        {row.id: details.get(row.id, _NO_DETAILS).duration_ms for row in rows},
    )
    ids = [row.id for row in rows]
    if is_postgres():
        notify_results(_waited_for(rows))
    _copy_tags(ids)
    from .children import children_finished
    from .dependencies import delete_edges_of, resolve_dependents  # cycle: dependents finish too

    TaskTag.objects.filter(task_id__in=ids).delete()
    delete_edges_of(ids)
    Task.objects.filter(id__in=ids).delete()
    resolve_dependents({h.id: h.status for h in history})
    ended = [
        h
        for h, row in zip(history, rows, strict=True)
        if row.has_children and h.status != HistoryStatus.COMPLETED
    ]
    if ended:
        from .cancel import cancel_matching  # a parent that did not complete takes its children

        for child_status in {_child_status(h.status) for h in ended}:
            parents = [h.id for h in ended if _child_status(h.status) == child_status]
            cancel_matching(Q(parent_id__in=parents), status=child_status)
    children_finished((h.id, h.parent_id, h.status) for h in history if h.parent_id)
    return history


def _waited_for(rows: Sequence[Task]) -> list[int]:
    """Ids among ``rows`` that someone waits for. A row loaded without ``has_waiter`` (a
    deferred column) is asked of the database, in one query for all such rows."""
    waited = [row.id for row in rows if row.__dict__.get("has_waiter")]
    unknown = [row.id for row in rows if "has_waiter" not in row.__dict__]
    if unknown:
        waited += Task.objects.filter(id__in=unknown, has_waiter=True).values_list("id", flat=True)
    return waited


def _child_status(parent_status: str) -> str:
    """Children of an expired parent expire with it; otherwise they are cancelled."""
    return (
        HistoryStatus.EXPIRED if parent_status == HistoryStatus.EXPIRED else HistoryStatus.CANCELLED
    )


def _history_row(row: Task, status: str, finish: Finish, now: Any) -> TaskHistory:
    error = finish.error or (row.last_error if status != HistoryStatus.COMPLETED else "")
    return TaskHistory(
        id=row.id,
        task_type=row.task_type,
        domain=row.domain,
        key=row.released_key or row.key,
        label=row.label,
        priority=row.priority,
        status=status,
        payload=row.payload,
        group_key=row.group_key,
        parent_id=row.parent_id,
        retry_count=row.retry_count,
        max_retries=row.max_retries,
        rescue_count=row.rescue_count,
        last_error=error,
        traceback=finish.traceback,
        result=finish.result,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=now,
        duration_ms=finish.duration_ms,
        read_bytes=finish.read_bytes or row.read_bytes,
        write_bytes=finish.write_bytes or row.write_bytes,
        net_rx_bytes=finish.net_rx_bytes or row.net_rx_bytes,
        net_tx_bytes=finish.net_tx_bytes or row.net_tx_bytes,
        worker_id=row.worker_id,
    )


def _copy_tags(ids: Sequence[int]) -> None:
    """Copy tags with one INSERT ... SELECT per chunk: no rows travel through Python."""
    src, dst = qn(TaskTag._meta.db_table), qn("taskmill_task_history_tag")
    key, value = qn("key"), qn("value")
    with connection.cursor() as cursor:
        for chunk in chunks(list(ids)):
            marks = ", ".join(["%s"] * len(chunk))
            cursor.execute(
                f"INSERT INTO {dst} ({qn('history_id')}, {key}, {value}) "  # noqa: S608 - names are quoted constants
                f"SELECT {qn('task_id')}, {key}, {value} FROM {src} "
                f"WHERE {qn('task_id')} IN ({marks})",
                list(chunk),
            )
