"""Worker registration and heartbeats: the liveness record every lease hangs on."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from django.db import transaction
from django.db.models.functions import Now

from ..enums import TaskStatus
from ..models import Task, Worker


def register_worker(
    name: str, pid: int, concurrency: int, domains: Sequence[str] | None
) -> uuid.UUID:
    """Create a fresh worker row; a new id per process start so old leases are never inherited."""
    worker_id = uuid.uuid4()
    Worker.objects.create(
        id=worker_id,
        name=name,
        hostname=socket.gethostname(),
        pid=pid,
        concurrency=concurrency,
        domains=list(domains) if domains else None,
    )
    return worker_id


def heartbeat(
    worker_id: uuid.UUID,
    running_count: int,
    status: str = "running",
    io: dict[str, Any] | None = None,
) -> bool:
    """Refresh the heartbeat (database clock), with the machine's IO measurement when there is
    one. False means our row is gone: we were declared dead, our leases may already be
    rescued, and the caller must re-register."""
    fields: dict[str, Any] = {"heartbeat_at": Now(), "running_count": running_count}
    fields["status"] = status
    if io is not None:
        fields["io"] = io
    return bool(Worker.objects.filter(id=worker_id).update(**fields))


def deregister_worker(worker_id: uuid.UUID) -> None:
    Worker.objects.filter(id=worker_id).delete()


def cancel_requests(worker_id: uuid.UUID, task_ids: Iterable[int]) -> dict[int, str]:
    """Running tasks of this worker with a cancellation request, and the requested status."""
    ids = list(task_ids)
    if not ids:
        return {}
    return dict(
        Task.objects.filter(id__in=ids, worker_id=worker_id, status=TaskStatus.RUNNING)
        .exclude(cancel_reason="")
        .values_list("id", "cancel_reason")
    )


def save_progress(leases: Mapping[int, uuid.UUID], reports: Mapping[int, dict[str, Any]]) -> None:
    """Persist throttled progress reports, fenced by lease so a zombie cannot overwrite them."""
    if not reports:
        return
    with transaction.atomic():
        for task_id, values in reports.items():
            Task.objects.filter(
                id=task_id, lease_token=leases[task_id], status=TaskStatus.RUNNING
            ).update(progress_at=Now(), **values)


def stray_claims(worker_id: uuid.UUID, known_ids: Iterable[int]) -> list[Task]:
    """Rows marked running for this worker that it is not running (a claim whose commit
    succeeded while the worker saw an error). Their lease tokens let the caller release them."""
    return list(
        Task.objects.filter(worker_id=worker_id, status=TaskStatus.RUNNING).exclude(
            id__in=list(known_ids)
        )
    )
