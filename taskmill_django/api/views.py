"""Task endpoints: active tasks (submit, actions, explain), history and the dead-letter list.

Views parse input with serializers and call the core (``scheduler``, ``TaskDefinition.using``,
``store.manual``); they never write rows themselves.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response

from .. import access, scheduler
from ..domain import TaskDefinition
from ..enums import OutcomeKind, TaskStatus
from ..exceptions import AlreadyRetried, DuplicateTaskError, TaskNotFound, ValidationError
from ..models import Task, TaskHistory
from ..records import SubmitOutcome
from ..redaction import mask_json, mask_text
from ..store import manual, operator
from .base import Conflict, TaskmillViewSet
from .filters import DeadLetterFilter, FilterBackend, HistoryFilter, TaskFilter
from .schema import TaskmillAutoSchema, documented
from .serializers import (
    MAX_BULK,
    BulkRetryResultSerializer,
    BulkRetrySerializer,
    ExplainSerializer,
    HistorySerializer,
    PrioritySerializer,
    RelatedTaskSerializer,
    SubmitOutcomeSerializer,
    SubmitSerializer,
    TaskActionSerializer,
    TaskSerializer,
)
from .throttling import SubmitRateThrottle

_CREATED = (OutcomeKind.INSERTED, OutcomeKind.SUPERSEDED)


def outcome_response(outcome: SubmitOutcome) -> Response:
    """201 when a task was inserted (or replaced one), 200 when an active twin absorbed it."""
    code = status.HTTP_201_CREATED if outcome.kind in _CREATED else status.HTTP_200_OK
    return Response(SubmitOutcomeSerializer(outcome).data, status=code)


def current_status(task_id: int) -> str | None:
    """The active status, else the terminal one, else None."""
    found = Task.objects.filter(id=task_id).values_list("status", flat=True).first()
    if found is None:
        found = TaskHistory.objects.filter(id=task_id).values_list("status", flat=True).first()
    return found


def related_tasks(ids: list[int]) -> list[dict[str, Any]]:
    active = {
        i: (t, s)
        for i, t, s in Task.objects.filter(id__in=ids).values_list("id", "task_type", "status")
    }
    done = {
        i: (t, s)
        for i, t, s in TaskHistory.objects.filter(id__in=set(ids) - set(active)).values_list(
            "id", "task_type", "status"
        )
    }
    rows = []
    for task_id in ids:
        task_type, task_status = active.get(task_id) or done.get(task_id) or (None, None)
        rows.append(
            {
                "id": task_id,
                "task_type": task_type,
                "status": task_status,
                "is_active": task_id in active,
            }
        )
    return rows


def check_submittable(definition: TaskDefinition) -> None:
    """403 unless the REST API may submit this type (``API_SUBMIT_TYPES``, never internal)."""
    if definition.internal:
        why = f"{definition.task_type} is internal to taskmill and is never submitted over HTTP"
    elif not access.submittable_over_http(definition):
        why = (
            f"{definition.task_type} may not be submitted over HTTP: list it (or a pattern "
            "such as 'domain::*') in TASKMILL['API_SUBMIT_TYPES']"
        )
    else:
        return
    raise PermissionDenied({"task_type": [why]})


class TaskViewSet(TaskmillViewSet):
    """Active tasks (pending, running, paused, blocked, waiting)."""

    queryset = Task.objects.prefetch_related("tags").order_by("priority", "id")
    serializer_class = TaskSerializer
    filterset_class = TaskFilter
    filter_backends = (FilterBackend,)
    schema = TaskmillAutoSchema(tags=["tasks"])
    needs = {  # noqa: RUF012
        "list": access.READ_TASKS,
        "retrieve": access.READ_TASKS,
        "dependencies": access.READ_TASKS,
        "dependents": access.READ_TASKS,
        "explain": access.READ_TASKS,
        "create": access.SUBMIT,
        "cancel": access.CHANGE_TASKS,
        "pause": access.CHANGE_TASKS,
        "resume": access.CHANGE_TASKS,
        "priority": access.CHANGE_TASKS,
    }

    def get_serializer_class(self) -> Any:
        return {"create": SubmitSerializer, "priority": PrioritySerializer}.get(
            self.action or "", TaskSerializer
        )

    def get_throttles(self) -> list[Any]:
        if self.action == "create":
            return [SubmitRateThrottle()]
        return super().get_throttles()

    def _active(self, task_id: int) -> Task:
        task = self.get_queryset().filter(id=task_id).first()
        if task is not None:
            return task
        finished = TaskHistory.objects.filter(id=task_id).values_list("status", flat=True).first()
        if finished is not None:
            raise TaskNotFound(
                f"task {task_id} is not active: it finished as {finished} (see history/{task_id}/)"
            )
        raise TaskNotFound(f"no active task with id {task_id}")

    @documented(
        "listTasks", response=TaskSerializer, many=True, paginated=True, filters=True,
        description="Active tasks in dispatch order (priority, then id), filtered.",
    )  # fmt: skip
    def list(self, request: Request) -> Response:
        return self.paginated(self.filter_queryset(self.get_queryset()), TaskSerializer)

    @documented("retrieveTask", response=TaskSerializer)
    def retrieve(self, request: Request, pk: str | None = None) -> Response:
        return Response(TaskSerializer(self._active(self.object_id())).data)

    @documented(
        "submitTask", request=SubmitSerializer, response=SubmitOutcomeSerializer,
        statuses=(200, 201), errors=(409, 429),
        description="Submit a task with any option of using(). 201 when inserted or "
        "superseding; 200 when an active twin absorbed it (duplicate, upgraded, requeued). "
        "403 for a type not in API_SUBMIT_TYPES, and for a preempting priority without "
        "submit_urgent. With recurring, key names the schedule: submitting it again is a "
        "duplicate.",
    )  # fmt: skip
    def create(self, request: Request) -> Response:
        body = SubmitSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        definition, options, payload = body.submission()
        check_submittable(definition)
        self.check_urgency(options.get("priority", definition.priority))
        return outcome_response(definition.using(**options).submit(**payload))

    @documented(
        "cancelTask", response=TaskActionSerializer,
        description="Cancel the task (and its children). A running task is asked to stop; "
        "its worker acts on the request at its next heartbeat.",
    )  # fmt: skip
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        task_id = self.object_id()
        self._active(task_id)
        changed = scheduler.cancel(task_id)
        now = current_status(task_id)
        if now == TaskStatus.RUNNING:
            message = "cancellation requested; its worker stops it at the next heartbeat"
        elif changed:
            message = "cancelled"
        else:
            message = "nothing to do: it is already being cancelled or finished"
        return self._result(task_id, changed, now, message)

    @documented(
        "pauseTask", response=TaskActionSerializer, errors=(409,),
        description="Pause a pending task (pause_reason 'manual'). A running task is asked to "
        "pause: its worker stops the attempt at its next heartbeat and the task waits paused, "
        "no retry spent. 409 for blocked or waiting tasks.",
    )  # fmt: skip
    @action(detail=True, methods=["post"])
    def pause(self, request: Request, pk: str | None = None) -> Response:
        task_id = self.object_id()
        changed = manual.pause_task(task_id)
        now = current_status(task_id)
        if now == TaskStatus.RUNNING:
            message = "pause requested; its worker pauses it at the next heartbeat"
            if not changed:
                message = "nothing to do: it is already being paused, cancelled or preempted"
            return self._result(task_id, changed, now, message)
        if changed:
            return self._result(task_id, True, TaskStatus.PAUSED, "paused")
        task = self._active(task_id)
        if task.status == TaskStatus.PAUSED:
            return self._result(task_id, False, task.status, "already paused")
        raise Conflict(
            {
                "status": [
                    f"only a pending or running task can be paused; task {task_id} is {task.status}"
                ]
            }
        )

    @documented(
        "resumeTask", response=TaskActionSerializer, errors=(409,),
        description="Make a task paused by hand pending again; 409 for other statuses.",
    )  # fmt: skip
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, pk: str | None = None) -> Response:
        task_id = self.object_id()
        if manual.resume_task(task_id):
            now = current_status(task_id)
            if now == TaskStatus.RUNNING:
                return self._result(task_id, True, now, "pause request withdrawn; it runs on")
            return self._result(task_id, True, TaskStatus.PENDING, "resumed")
        task = self._active(task_id)
        if task.status == TaskStatus.PENDING:
            return self._result(task_id, False, task.status, "already pending")
        if task.status == TaskStatus.PAUSED:
            why = (
                f"task {task_id} was paused by the scheduler ({task.pause_reason or 'unknown'}), "
                "which resumes it itself"
            )
        else:
            why = f"only a paused task can be resumed; task {task_id} is {task.status}"
        raise Conflict({"status": [why]})

    @documented(
        "setTaskPriority", request=PrioritySerializer, response=TaskActionSerializer,
        description="Give the task a new priority (0..255, lower runs first). A preempting "
        "priority (PREEMPT_PRIORITY or lower) needs submit_urgent and preempts less urgent "
        "running work.",
    )  # fmt: skip
    @action(detail=True, methods=["post"])
    def priority(self, request: Request, pk: str | None = None) -> Response:
        task_id = self.object_id()
        body = PrioritySerializer(data=request.data)
        body.is_valid(raise_exception=True)
        value = body.validated_data["priority"]
        self.check_urgency(value)
        self._active(task_id)
        changed = operator.set_priority([task_id], value) > 0
        message = f"priority set to {value}" if changed else f"already at priority {value}"
        return self._result(task_id, changed, current_status(task_id), message)

    @documented(
        "listTaskDependencies", response=RelatedTaskSerializer, many=True,
        description="Tasks this task depends on, active or finished.",
    )  # fmt: skip
    @action(detail=True, methods=["get"])
    def dependencies(self, request: Request, pk: str | None = None) -> Response:
        task_id = self.object_id()
        scheduler.task(task_id)
        ids = scheduler.store().task_dependencies(task_id)
        return Response(RelatedTaskSerializer(related_tasks(ids), many=True).data)

    @documented(
        "listTaskDependents", response=RelatedTaskSerializer, many=True,
        description="Active tasks that depend on this task.",
    )  # fmt: skip
    @action(detail=True, methods=["get"])
    def dependents(self, request: Request, pk: str | None = None) -> Response:
        task_id = self.object_id()
        scheduler.task(task_id)
        ids = scheduler.store().task_dependents(task_id)
        return Response(RelatedTaskSerializer(related_tasks(ids), many=True).data)

    @documented(
        "explainTask", response=ExplainSerializer,
        description="Why isn't this task running? Every reason (scheduler.explain).",
    )  # fmt: skip
    @action(detail=True, methods=["get"])
    def explain(self, request: Request, pk: str | None = None) -> Response:
        task_id = self.object_id()
        row = scheduler.task(task_id)
        reasons = [
            {
                "code": reason.code,
                "message": mask_text(reason.message, row.task_type, row.payload),
                "data": mask_json(reason.data, row.task_type, row.payload),
            }
            for reason in scheduler.explain(task_id)
        ]
        body = {"id": task_id, "status": current_status(task_id) or "", "reasons": reasons}
        return Response(ExplainSerializer(body).data)

    def _result(self, task_id: int, changed: bool, now: str | None, message: str) -> Response:
        body = {"id": task_id, "changed": changed, "status": now or "", "message": message}
        return Response(TaskActionSerializer(body).data)


class HistoryViewSet(TaskmillViewSet):
    """Finished tasks, newest first."""

    queryset = TaskHistory.objects.prefetch_related("tags").order_by("-finished_at", "-id")
    serializer_class = HistorySerializer
    filterset_class = HistoryFilter
    filter_backends = (FilterBackend,)
    schema = TaskmillAutoSchema(tags=["history"])
    needs = {"list": access.READ_HISTORY, "retrieve": access.READ_HISTORY}  # noqa: RUF012

    @documented("listHistory", response=HistorySerializer, many=True, paginated=True, filters=True)
    def list(self, request: Request) -> Response:
        return self.paginated(self.filter_queryset(self.get_queryset()), HistorySerializer)

    @documented("retrieveHistoryEntry", response=HistorySerializer)
    def retrieve(self, request: Request, pk: str | None = None) -> Response:
        task_id = self.object_id()
        entry = self.get_queryset().filter(id=task_id).first()
        if entry is None:
            hint = f" (it is still active: see tasks/{task_id}/)" if current_status(task_id) else ""
            raise TaskNotFound(f"no finished task with id {task_id}{hint}")
        return Response(HistorySerializer(entry).data)


class DeadLetterViewSet(TaskmillViewSet):
    """Tasks whose retries ran out; retry re-submits them (the entry stays in history)."""

    queryset = TaskHistory.objects.dead_letter().prefetch_related("tags").newest_first()
    serializer_class = HistorySerializer
    filterset_class = DeadLetterFilter
    filter_backends = (FilterBackend,)
    schema = TaskmillAutoSchema(tags=["dead-letter"])
    needs = {  # noqa: RUF012
        "list": access.READ_HISTORY,
        "retrieve": access.READ_HISTORY,
        "retry": access.RETRY_DEAD_LETTERS,
        "retry_bulk": access.RETRY_DEAD_LETTERS,
    }

    def get_serializer_class(self) -> Any:
        return BulkRetrySerializer if self.action == "retry_bulk" else HistorySerializer

    @documented(
        "listDeadLetters", response=HistorySerializer, many=True, paginated=True, filters=True
    )
    def list(self, request: Request) -> Response:
        return self.paginated(self.filter_queryset(self.get_queryset()), HistorySerializer)

    @documented("retrieveDeadLetter", response=HistorySerializer)
    def retrieve(self, request: Request, pk: str | None = None) -> Response:
        history_id = self.object_id()
        entry = self.get_queryset().filter(id=history_id).first()
        if entry is None:
            raise TaskNotFound(f"no dead-letter entry with id {history_id}")
        return Response(HistorySerializer(entry).data)

    @documented(
        "retryDeadLetter", response=SubmitOutcomeSerializer, statuses=(200, 201), errors=(409,),
        description="Submit the entry again: same type, payload, key, priority, tags, group. "
        "The entry records the task it became (retried_at, retried_as_id); an entry retried "
        "before answers 409. An entry at a preempting priority needs submit_urgent.",
    )  # fmt: skip
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, pk: str | None = None) -> Response:
        history_id = self.object_id()
        priority = self.get_queryset().filter(id=history_id).values_list("priority", flat=True)
        if priority:
            self.check_urgency(priority[0])
        return outcome_response(scheduler.retry_dead_letter(history_id))

    @documented(
        "retryDeadLetters", request=BulkRetrySerializer, response=BulkRetryResultSerializer,
        filters=True, body_required=True,
        description=f"Retry entries by id, or every entry matching the query's filters that "
        f"was not retried before (all_matching: true; the filters are ignored with ids); at "
        f"most {MAX_BULK} per "
        "request. Each retry is its own "
        "transaction: one failing entry does not stop the others. Entries at a preempting "
        "priority fail without submit_urgent.",
    )  # fmt: skip
    @action(detail=False, methods=["post"], url_path="retry")
    def retry_bulk(self, request: Request) -> Response:
        body = BulkRetrySerializer(data=request.data)
        body.is_valid(raise_exception=True)
        matching = self.filter_queryset(self.get_queryset())  # bad filters: 400 either way
        if body.validated_data.get("all_matching"):
            # Entries retried before are done with; "all" means all still waiting.
            waiting = matching.filter(retried_at__isnull=True)
            ids = list(waiting.values_list("id", flat=True)[: MAX_BULK + 1])
            if len(ids) > MAX_BULK:
                raise serializers.ValidationError(
                    {"all_matching": [f"more than {MAX_BULK} entries match; narrow the filters"]}
                )
        else:
            ids = list(dict.fromkeys(body.validated_data["ids"]))
        urgent_ok = self.may_use_urgent()
        priorities = dict(TaskHistory.objects.filter(id__in=ids).values_list("id", "priority"))
        results = [
            _retry_one(history_id)
            if urgent_ok or not access.is_urgent(priorities.get(history_id, 255))
            else _refused(history_id, access.urgent_refusal(priorities[history_id]))
            for history_id in ids
        ]
        failed = sum(1 for r in results if r["error"] is not None)
        data = {"retried": len(results) - failed, "failed": failed, "results": results}
        return Response(BulkRetryResultSerializer(data).data)


def _retry_one(history_id: int) -> dict[str, Any]:
    try:
        outcome = scheduler.retry_dead_letter(history_id)
    except (TaskNotFound, ValidationError, DuplicateTaskError, AlreadyRetried) as exc:
        return _refused(history_id, str(exc))
    return {"history_id": history_id, "kind": outcome.kind, "id": outcome.id, "error": None}


def _refused(history_id: int, error: str) -> dict[str, Any]:
    return {"history_id": history_id, "kind": None, "id": None, "error": error}
