"""Dependency edges: validation at submit, and resolution when a dependency finishes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from .. import signals
from ..enums import DependencyFailurePolicy, HistoryStatus, TaskStatus
from ..exceptions import ValidationError
from ..models import Task, TaskDependency, TaskHistory
from .db import send_on_commit


def check_dependencies_exist(ids: set[int]) -> None:
    """Reject a dependency on an id that is neither active nor in history."""
    if not ids:
        return
    found = set(Task.objects.filter(id__in=ids).values_list("id", flat=True))
    found |= set(TaskHistory.objects.filter(id__in=ids - found).values_list("id", flat=True))
    missing = sorted(ids - found)
    if missing:
        raise ValidationError("depends_on", f"no task with id {missing[0]} exists")


def add_dependencies(edges: Iterable[tuple[int, Sequence[int]]]) -> None:
    """Store edges for freshly inserted (blocked) tasks, then settle those already decidable."""
    rows = [TaskDependency(task_id=t, depends_on_id=d) for t, deps in edges for d in set(deps)]
    TaskDependency.objects.bulk_create(rows)
    dep_ids = {r.depends_on_id for r in rows}
    finished = dict(TaskHistory.objects.filter(id__in=dep_ids).values_list("id", "status"))
    if finished:
        resolve_dependents(finished, only={r.task_id for r in rows})
    _unblock_ready({r.task_id for r in rows})


def delete_edges_of(task_ids: Sequence[int]) -> None:
    TaskDependency.objects.filter(task_id__in=task_ids).delete()


def resolve_dependents(finished: Mapping[int, str], *, only: set[int] | None = None) -> None:
    """React to dependencies reaching a terminal status: unblock, fail or cancel dependents."""
    if not finished:
        return
    failed = [i for i, s in finished.items() if s != HistoryStatus.COMPLETED]
    completed = [i for i, s in finished.items() if s == HistoryStatus.COMPLETED]
    candidates: set[int] = set()
    if completed:
        qs = TaskDependency.objects.filter(depends_on_id__in=completed)
        if only is not None:
            qs = qs.filter(task_id__in=only)
        candidates |= set(qs.values_list("task_id", flat=True))
    if failed:
        candidates |= _fail_dependents(failed, only)
    _unblock_ready(candidates)


def _fail_dependents(failed: list[int], only: set[int] | None) -> set[int]:
    from .history import Finish, move_to_history  # cycle: history resolves dependents

    edges = TaskDependency.objects.filter(depends_on_id__in=failed)
    if only is not None:
        edges = edges.filter(task_id__in=only)
    dependents = list(
        Task.objects.select_for_update()
        .filter(id__in=edges.values("task_id"), status=TaskStatus.BLOCKED)
        .order_by("id")
    )
    ignoring = [
        t.id for t in dependents if t.on_dependency_failure == DependencyFailurePolicy.IGNORE
    ]
    TaskDependency.objects.filter(task_id__in=ignoring, depends_on_id__in=failed).delete()
    doomed = [t for t in dependents if t.id not in set(ignoring)]
    if doomed:
        failed_dep = dict(
            edges.filter(task_id__in=[t.id for t in doomed]).values_list("task_id", "depends_on_id")
        )
        details = {
            t.id: Finish(error=f"dependency #{failed_dep.get(t.id)} did not complete")
            for t in doomed
        }
        statuses = {
            t.id: HistoryStatus.FAILED
            if t.on_dependency_failure == DependencyFailurePolicy.FAIL
            else HistoryStatus.DEPENDENCY_FAILED
            for t in doomed
        }
        for task in doomed:
            send_on_commit(signals.task_dependency_failed, task.task_type, task_id=task.id)
        move_to_history(doomed, HistoryStatus.DEPENDENCY_FAILED, details, statuses=statuses)
    return set(ignoring)


def _unblock_ready(task_ids: set[int]) -> None:
    """Blocked tasks with no remaining active dependency become pending."""
    if not task_ids:
        return
    waiting = set(
        TaskDependency.objects.filter(
            task_id__in=task_ids, depends_on_id__in=Task.objects.values("id")
        ).values_list("task_id", flat=True)
    )
    ready = list(
        Task.objects.filter(id__in=task_ids - waiting, status=TaskStatus.BLOCKED).values_list(
            "id", "task_type"
        )
    )
    if ready:
        Task.objects.filter(id__in=[i for i, _ in ready]).update(status=TaskStatus.PENDING)
        for task_id, task_type in ready:
            send_on_commit(signals.task_unblocked, task_type, task_id=task_id)
