"""Helpers for users' own tests: run the queue in the calling thread, record submissions.

``run_pending()`` claims and executes due tasks in the current thread and database connection,
so it works inside Django's ``TestCase`` transaction, where a worker process could not see the
test's uncommitted rows. ``capture()`` records what is submitted inside it, and can keep it out
of the database. The pytest plugin (``taskmill_django.pytest_plugin``, loaded through
the ``pytest11`` entry point) wraps both as fixtures; this module never imports pytest.

>>> # in a test:  thumbnail.submit(path="a.png", size=64); run_pending(); assert ...
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import async_to_sync

from .. import executor
from ..models import TaskHistory
from ..records import NewTask, SubmitOutcome
from ..store import claim, lifecycle
from ..store.submit import observing


@dataclass(frozen=True)
class CapturedTask:
    """One task submitted inside ``capture()``.

    ``options`` are the submission options as resolved (the task type's defaults included):
    ``priority``, ``label``, ``group``, ``tags``, ``run_after``, ``ttl``, ``timeout``,
    ``max_retries``, ``duplicate``, ``parent``, ``depends_on``. ``id`` and ``kind`` are those
    of the ``SubmitOutcome`` (``id`` None and ``kind`` ``"captured"`` with ``queue=False``)."""

    task_type: str
    payload: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)
    id: int | None = None
    kind: str = ""


def _options(new: NewTask) -> dict[str, Any]:
    return {
        "priority": new.priority,
        "label": new.label,
        "group": new.group_key,
        "tags": dict(new.tags),
        "run_after": new.run_after,
        "ttl": new.ttl_seconds,
        "timeout": new.timeout_seconds,
        "max_retries": new.max_retries,
        "duplicate": new.duplicate,
        "parent": new.parent_id,
        "depends_on": list(new.depends_on),
    }


class _Recorder:
    def __init__(self, keeps_out: bool) -> None:
        self.keeps_out = keeps_out
        self.captured: list[CapturedTask] = []

    def observed(self, new_tasks: Sequence[NewTask], outcomes: Sequence[SubmitOutcome]) -> None:
        self.captured.extend(
            CapturedTask(new.task_type, dict(new.payload), _options(new), out.id, out.kind)
            for new, out in zip(new_tasks, outcomes, strict=True)
        )


@contextmanager
def capture(*, queue: bool = True) -> Iterator[list[CapturedTask]]:
    """Record every task submitted inside the block, in submission order.

    ``queue=True`` (the default) submits them as usual, so ``run_pending()`` can run them;
    ``queue=False`` keeps them out of the database: nothing is written, each ``SubmitOutcome``
    has ``kind == "captured"`` and ``id`` None. Submissions from every front door are seen
    (``submit``, ``submit_batch``, ``using(...)``, children, the REST API, the Django Tasks
    backend), in this thread and in the ``sync_to_async`` calls it makes.

    >>> with capture(queue=False) as submitted:
    ...     signup(email="a@example.com")
    >>> [(t.task_type, t.payload) for t in submitted]
    [('email::send', {'to': 'a@example.com'})]
    """
    recorder = _Recorder(keeps_out=not queue)
    with observing(recorder):
        yield recorder.captured


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
