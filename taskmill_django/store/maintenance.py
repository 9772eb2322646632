"""Maintenance any live worker may run: rescue orphaned tasks, forget dead workers, prune history.

Rescue compares heartbeats with the database clock only (G7), so worker clock skew cannot make a
live worker look dead or a dead one look alive.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import F, Q
from django.db.models.functions import Now

from .. import signals
from ..conf import app_settings
from ..enums import PARKING_REASONS, HistoryStatus, TaskStatus, WorkerStatus
from ..exceptions import ValidationError
from ..models import Task, TaskHistory, TaskHistoryTag, Worker
from .counters import RESCUED, count_events, fold_departed
from .db import notify_workers, send_on_commit
from .history import Finish, move_to_history
from .parking import park

logger = logging.getLogger(__name__)


def _stale_cutoff() -> Now:
    return Now() - app_settings.lease_timeout  # type: ignore[return-value]


def rescue_orphans(limit: int = 500, *, rescuer: uuid.UUID | None = None) -> int:
    """Make running tasks of silent or vanished workers pending again; return how many (at most
    ``limit`` per call: the rest are taken by the next call).

    A rescue is not a retry (the attempt was interrupted, not failed), but it is counted, and
    a task rescued ``MAX_RESCUES`` times is dead-lettered so one poison task cannot crash-loop
    a whole pool forever (G9).

    Silent workers are first marked dead, in the same transaction: a frozen worker that wakes
    up finds its row dead at its next heartbeat (which then renews nothing), learns that its
    tasks are gone and stops them (G12). Marking takes the worker row's lock, so a heartbeat
    racing with this rescue either commits first (the worker is live and keeps its tasks) or
    sees the row dead.

    ``rescuer``: the calling worker, which never rescues itself (it knows it is alive, and
    stops its own tasks when it cannot renew its lease).
    """
    stale = Worker.objects.filter(heartbeat_at__lt=_stale_cutoff()).exclude(
        status=WorkerStatus.DEAD
    )
    if rescuer is not None:
        stale = stale.exclude(id=rescuer)
    live = Worker.objects.exclude(status=WorkerStatus.DEAD)
    if rescuer is not None:
        live = live | Worker.objects.filter(id=rescuer)
    running = Task.objects.filter(status=TaskStatus.RUNNING)
    # Read first, lock only when there is something to do: most passes find nothing, and on
    # SQLite every write transaction takes the database's one write lock.
    if not stale.exists() and not running.exclude(worker_id__in=live.values("id")).exists():
        return 0
    with transaction.atomic():
        stale.update(status=WorkerStatus.DEAD)
        live_ids = live.values("id")
        orphans = list(
            Task.objects.select_for_update(skip_locked=True)
            .filter(status=TaskStatus.RUNNING)
            .exclude(worker_id__in=live_ids)
            .order_by("id")[:limit]
        )
        if not orphans:
            return 0
        limit = int(app_settings.MAX_RESCUES)
        orphans = _settle_requests(orphans)
        poisoned = [t for t in orphans if t.rescue_count + 1 >= limit]
        rescued = [t for t in orphans if t.rescue_count + 1 < limit]
        if rescued:
            Task.objects.filter(id__in=[t.id for t in rescued]).update(
                status=TaskStatus.PENDING,
                lease_token=None,
                worker_id=None,
                started_at=None,
                rescue_count=F("rescue_count") + 1,
            )
            count_events([(rescuer, task.task_type) for task in rescued], RESCUED)
            for task in rescued:
                send_on_commit(
                    signals.task_rescued,
                    task.task_type,
                    task_id=task.id,
                    rescue_count=task.rescue_count + 1,
                )
            notify_workers()
        if poisoned:
            for task in poisoned:
                task.rescue_count += 1
            error = f"worker died while running it {limit} times; dead-lettered"
            for task in poisoned:
                send_on_commit(
                    signals.task_dead_lettered, task.task_type, task_id=task.id, error=error
                )
            move_to_history(
                poisoned,
                HistoryStatus.DEAD_LETTER,
                {t.id: Finish(error=error) for t in poisoned},
            )
    logger.info("rescued orphaned tasks count=%s dead_lettered=%s", len(rescued), len(poisoned))
    return len(orphans)


def _settle_requests(orphans: list[Task]) -> list[Task]:
    """Orphans whose task was asked to stop are not run again: a cancellation (or supersede,
    fail-fast) ends in history now; a pause request parks them paused. Returns the rest."""
    ending = [t for t in orphans if t.cancel_reason and t.cancel_reason not in PARKING_REASONS]
    parking = [t for t in orphans if t.cancel_reason in PARKING_REASONS]
    for reason in {t.cancel_reason for t in parking}:
        park([(t.id, t.task_type) for t in parking if t.cancel_reason == reason], reason)
    if ending:
        move_to_history(
            ending, HistoryStatus.CANCELLED, statuses={t.id: t.cancel_reason for t in ending}
        )
    return [t for t in orphans if not t.cancel_reason]


def forget_dead_workers() -> int:
    """Delete worker rows silent for ten lease timeouts (their tasks were rescued long ago)."""
    cutoff = Now() - app_settings.lease_timeout * 10
    deleted, _ = Worker.objects.filter(heartbeat_at__lt=cutoff).delete()
    fold_departed()  # their counters (and those of workers that stopped) join the shared rows
    return deleted


def prune_history_by_count(
    keep: int, scope: Q | None = None, *, deadline: float | None = None
) -> int:
    """Delete all but the newest ``keep`` history rows (of ``scope``, a filter on history;
    all of it by default); return how many were deleted.

    ``deadline`` (a ``time.monotonic()`` value): stop after the batch that passes it; a later
    call carries on where this one stopped."""
    scope = scope or Q()
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
        raise ValidationError("keep", f"must be an integer >= 0, got {keep!r}")
    newest = TaskHistory.objects.filter(scope).order_by("-finished_at", "-id")
    row = next(iter(newest.values_list("finished_at", "id")[keep : keep + 1]), None)
    if row is None:
        return 0
    finished_at, row_id = row
    old = TaskHistory.objects.filter(scope).filter(
        Q(finished_at__lt=finished_at) | Q(finished_at=finished_at, id__lte=row_id)
    )
    return _delete_history(old, deadline)


def prune_history_by_age(
    days: float, scope: Q | None = None, *, deadline: float | None = None
) -> int:
    """Delete history rows finished more than ``days`` days ago (database clock); return how
    many were deleted. ``deadline`` as for ``prune_history_by_count``."""
    scope = scope or Q()
    if isinstance(days, bool) or not isinstance(days, int | float) or days < 0:
        raise ValidationError("days", f"must be a number >= 0, got {days!r}")
    old = TaskHistory.objects.filter(scope, finished_at__lt=Now() - timedelta(days=days))
    return _delete_history(old, deadline)


PRUNE_BATCH = 1000


def _delete_history(old: Any, deadline: float | None) -> int:
    """Delete the rows of ``old`` in batches, each its own short transaction, reading only the
    next batch's ids each time: memory and lock time stay bounded whatever the backlog (a
    million old rows are a thousand small transactions, not one list and one long lock)."""
    deleted = 0
    while True:
        started = time.monotonic()
        with transaction.atomic():
            ids = list(old.order_by().values_list("id", flat=True)[:PRUNE_BATCH])
            if not ids:
                return deleted
            TaskHistoryTag.objects.filter(history_id__in=ids).delete()
            deleted += TaskHistory.objects.filter(id__in=ids).delete()[0]
        if len(ids) < PRUNE_BATCH or (deadline is not None and time.monotonic() >= deadline):
            return deleted
        if connection.vendor == "sqlite":
            # One writer at a time, and a writer waiting for the lock only looks now and then:
            # back-to-back batches would starve the heartbeat. Leave the lock free as long as
            # the batch held it.
            time.sleep(min(time.monotonic() - started, 0.1))


def apply_retention(deadline: float | None = None) -> int:
    """Apply ``RETENTION`` (max_count and/or max_age_days); return rows deleted. With a
    ``deadline``, stop early (a later call goes on)."""
    retention = app_settings.RETENTION or {}
    deleted = 0
    if retention.get("max_age_days") is not None:
        deleted += prune_history_by_age(float(retention["max_age_days"]), deadline=deadline)
    if retention.get("max_count") is not None:
        if deadline is None or time.monotonic() < deadline:
            deleted += prune_history_by_count(int(retention["max_count"]), deadline=deadline)
    return deleted


def expire_due(limit: int = 500) -> int:
    """Move waiting tasks past their ``expires_at`` (database clock) to history as ``expired``.

    Running tasks are not interrupted: the dispatch-time check keeps expired rows from being
    claimed, and an attempt already under way may finish. Children of expired parents expire
    with them.
    """
    from .cancel import cancel_matching  # cancel handles the parent → children cascade

    due = Task.objects.filter(expires_at__lte=Now()).exclude(status=TaskStatus.RUNNING)
    if not due.exists():  # a plain read first: most sweeps find nothing
        return 0
    with transaction.atomic():
        ids = list(
            Task.objects.select_for_update(skip_locked=True)
            .filter(expires_at__lte=Now())
            .exclude(status=TaskStatus.RUNNING)
            .order_by("expires_at")
            .values_list("id", flat=True)[:limit]
        )
        if not ids:
            return 0
        count = len(cancel_matching(Q(id__in=ids), status=HistoryStatus.EXPIRED))
    logger.info("expired tasks count=%s", count)
    return count


def settle_stale_dependencies() -> int:
    """Blocked tasks none of whose dependencies is still active are settled from history
    (completed → unblock; failed → their failure policy; pruned → treated as met). Run at
    worker start, so nothing stays blocked on an edge whose resolution was missed."""
    from ..models import TaskDependency
    from .dependencies import resolve_dependents

    with transaction.atomic():
        blocked = Task.objects.select_for_update(skip_locked=True).filter(status=TaskStatus.BLOCKED)
        stale = list(
            blocked.exclude(
                dependency_edges__depends_on_id__in=Task.objects.values("id")
            ).values_list("id", flat=True)
        )
        if not stale:
            return 0
        dep_ids = set(
            TaskDependency.objects.filter(task_id__in=stale).values_list("depends_on_id", flat=True)
        )
        finished = dict(TaskHistory.objects.filter(id__in=dep_ids).values_list("id", "status"))
        resolve_dependents(finished, only=set(stale))
        # What is still blocked depends only on rows pruned from history: treated as met.
        Task.objects.filter(id__in=stale, status=TaskStatus.BLOCKED).update(
            status=TaskStatus.PENDING
        )
    logger.info("settled stale dependency edges tasks=%s", len(stale))
    return len(stale)


def refresh_planner_stats() -> bool:
    """PostgreSQL: ANALYZE the active table once it changed a lot since its last analyze.

    A bulk submission right after a quiet period leaves statistics that describe an empty
    table, and the planner then sorts every pending row on each claim instead of walking the
    dispatch index. Autovacuum catches up within minutes; this catches up within seconds.
    Cheap to call often: one catalogue read, and ANALYZE only when the change is large.
    """
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT n_mod_since_analyze, GREATEST(n_live_tup, 1) FROM pg_stat_user_tables "
            "WHERE relname = 'taskmill_task'"
        )
        row = cursor.fetchone()
        if row is None or row[0] < max(1000, row[1] // 5):
            return False
        # SKIP_LOCKED: when another worker is analyzing the table right now, do not wait.
        cursor.execute("ANALYZE (SKIP_LOCKED) taskmill_task")
    return True
