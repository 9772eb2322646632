"""Claiming: move pending rows to running under a fresh lease, in one short transaction."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from django.db import transaction
from django.db.models.functions import Coalesce, Now

from ..enums import TaskStatus
from ..models import Task


def claim_batch(
    worker_id: uuid.UUID, limit: int, domains: Sequence[str] | None = None
) -> list[Task]:
    """Claim up to ``limit`` due tasks in priority-then-FIFO order for ``worker_id``.

    ``SKIP LOCKED`` lets many workers claim side by side without waiting on each other's rows;
    the conditional UPDATE (``status='pending'``) makes the claim safe on SQLite too, where
    ``select_for_update`` is a no-op and IMMEDIATE transactions serialise writers instead.
    One lease token per batch fences every later write of this claim.
    """
    if limit <= 0:
        return []
    token = uuid.uuid4()
    with transaction.atomic():
        candidates = Task.objects.claimable()
        if domains:
            candidates = candidates.filter(domain__in=list(domains))
        ids = list(
            candidates.in_dispatch_order()
            .select_for_update(skip_locked=True)
            .values_list("id", flat=True)[:limit]
        )
        if not ids:
            return []
        Task.objects.filter(id__in=ids, status=TaskStatus.PENDING).update(
            status=TaskStatus.RUNNING,
            lease_token=token,
            worker_id=worker_id,
            started_at=Now(),
            first_started_at=Coalesce("first_started_at", Now()),
        )
        return list(Task.objects.filter(id__in=ids, lease_token=token).order_by("priority", "id"))
