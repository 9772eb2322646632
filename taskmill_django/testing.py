"""Helpers for testing code that submits tasks: run the queue in the calling thread.

``run_pending()`` claims and executes due tasks in the current thread and database connection,
so it works inside Django's ``TestCase`` transaction, where a worker process could not see the
test's uncommitted rows.

>>> # in a test:  thumbnail.submit(path="a.png", size=64); run_pending(); assert ...
"""

from __future__ import annotations

import uuid

from asgiref.sync import async_to_sync

from . import executor
from .models import TaskHistory
from .store import claim, lifecycle


def run_pending(*, limit: int | None = None, domains: list[str] | None = None) -> int:
    """Run due tasks until none is left (or ``limit`` ran); return how many attempts ran.

    Retries with a delay are not waited for: a task whose ``run_after`` lies in the future is
    not due. Use ``limit`` to stop a task that keeps re-submitting itself.
    """
    worker_id = uuid.uuid4()
    ran = 0
    while limit is None or ran < limit:
        batch = claim.claim_batch(worker_id, 1, domains)
        if not batch:
            return ran
        task = batch[0]
        ctx, definition = executor.build_context(task)
        if definition is not None and definition.is_async:
            # async_to_sync: the task's sync_to_async calls (ctx.aspawn_child...) come back to
            # this thread, so they share the test's connection and transaction.
            outcome = async_to_sync(executor.run_async)(task, ctx, definition)
        else:
            outcome = executor.run_sync(task, ctx, definition, manage_connections=False)
        lifecycle.apply_outcomes([outcome])
        ran += 1
    return ran


def submitted(task_type: str) -> list[TaskHistory]:
    """History rows of ``task_type``, newest first (what ran in this test)."""
    return list(TaskHistory.objects.filter(task_type=task_type).newest_first())
