"""Worker registration and heartbeats: the liveness record every lease hangs on."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models.functions import Now

from ..enums import TaskStatus, WorkerStatus
from ..models import Task, Worker


def register_worker(
    name: str, pid: int, concurrency: int, domains: Sequence[str] | None, claim_ahead: int = 0
) -> uuid.UUID:
    """Create a fresh worker row; a new id per process start so old leases are never inherited.
    ``claim_ahead``: the most tasks it will claim beyond its threads (a cap's reach counts
    them, see ``claim.load``)."""
    worker_id = uuid.uuid4()
    Worker.objects.create(
        id=worker_id,
        name=name,
        hostname=socket.gethostname(),
        pid=pid,
        concurrency=concurrency,
        claim_ahead=claim_ahead,
        domains=list(domains) if domains else None,
    )
    return worker_id


@dataclass(frozen=True)
class Beat:
    """What one heartbeat learnt: whether the worker row was renewed (False: it is gone or was
    declared dead, and its leases may already be rescued), and the state of the rows of the
    tasks the worker asked about (absent: the row left the active table)."""

    renewed: bool
    states: dict[int, RowState]


@dataclass(frozen=True)
class RowState:
    lease_token: uuid.UUID | None
    status: str
    cancel_reason: str


def beat(
    worker_id: uuid.UUID,
    status: str,
    task_ids: Sequence[int],
    progress: Mapping[int, tuple[uuid.UUID, dict[str, Any]]] | None = None,
    io: dict[str, Any] | None = None,
) -> Beat:
    """Renew this worker's lease (database clock), persist progress reports (fenced by lease),
    and read the state of the rows of ``task_ids``: one short transaction."""
    with transaction.atomic():
        renewed = heartbeat(worker_id, len(task_ids), status, io)
        if renewed and progress:
            save_progress(
                {i: lease for i, (lease, _) in progress.items()},
                {i: values for i, (_, values) in progress.items()},
            )
        rows = Task.objects.filter(id__in=list(task_ids)).values_list(
            "id", "lease_token", "status", "cancel_reason"
        )
        states = {row[0]: RowState(*row[1:]) for row in rows} if task_ids else {}
    return Beat(renewed, states)


def heartbeat(
    worker_id: uuid.UUID,
    running_count: int,
    status: str = WorkerStatus.RUNNING,
    io: dict[str, Any] | None = None,
) -> bool:
    """Refresh the heartbeat (database clock), with the machine's IO measurement when there is
    one. False means our row is gone or was declared dead: our leases may already be rescued,
    and the caller must stop its tasks and re-register."""
    fields: dict[str, Any] = {"heartbeat_at": Now(), "running_count": running_count}
    fields["status"] = status
    if io is not None:
        fields["io"] = io
    rows = Worker.objects.filter(id=worker_id).exclude(status=WorkerStatus.DEAD)
    return bool(rows.update(**fields))


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


def save_progress(
    leases: Mapping[int, uuid.UUID | None], reports: Mapping[int, dict[str, Any]]
) -> None:
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
