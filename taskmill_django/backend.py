"""A Django Tasks backend (``django.tasks``, Django 6+): ``@django.tasks.task`` functions run on
taskmill workers, with leases, crash rescue, priorities, per-queue limits and the admin.

    TASKS = {"default": {"BACKEND": "taskmill_django.backend.TaskmillBackend",
                         "QUEUES": ["default", "emails"]}}

Every enqueued call becomes one taskmill task of type ``django::call`` whose JSON payload names
the task by its module path. That path is looked up, never imported: only functions declared
with ``@django.tasks.task`` on a TaskmillBackend in this process (which registers them as Django
creates them) can run, so a row can never name arbitrary code (RELIABILITY G10). Workers import
every installed app's ``tasks.py``; a task declared elsewhere must be imported from there.
``django::call`` is internal: the REST API never submits it, whatever API_SUBMIT_TYPES says.
Queues map to taskmill groups (``default`` to none), so group limits, pauses and rate limits
apply per queue. Django priorities (-100..100, higher first) map onto 0..255 (lower first);
the most urgent ones stop just short of preemption unless OPTIONS["ALLOW_PREEMPTION"] is true.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from django.utils.dateparse import parse_datetime

try:
    from django.tasks import TaskContext as DjangoTaskContext
    from django.tasks import TaskResult, TaskResultStatus
    from django.tasks import signals as django_signals
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import Task as DjangoTask
    from django.tasks.base import TaskError
    from django.tasks.exceptions import TaskResultDoesNotExist
    from django.utils.json import normalize_json
except ImportError as exc:  # Django < 6.0
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(
        "taskmill_django.backend.TaskmillBackend needs Django 6.0 or newer (django.tasks)"
    ) from exc

from .context import TaskContext
from .domain import Domain
from .exceptions import PermanentError
from .retry import RetryPolicy

TASK_TYPE = "django::call"
DEFAULT_QUEUE = "default"

django_domain = Domain("django")

# module path -> the @django.tasks.task declared on a TaskmillBackend in this process.
_declared: dict[str, DjangoTask] = {}


def to_taskmill_priority(priority: int) -> int:
    """-100..100 (higher first) onto 0..255 (lower first): 0 → NORMAL (128), 50 → HIGH (64),
    100 → REALTIME (0), -50 → BACKGROUND (192), -100 → IDLE (255)."""
    if priority >= 0:
        return 128 - round(priority * 128 / 100)
    return 128 + round(-priority * 127 / 100)


def _resolve(path: Any) -> DjangoTask:
    """The declared django task at ``path``; a payload's path is never imported."""
    task = _declared.get(path) if isinstance(path, str) else None
    if task is None:
        raise PermanentError(
            f"{str(path)[:200]!r} is no @django.tasks.task declared on a TaskmillBackend in "
            "this process; declare it in an installed app's tasks.py (or import its module "
            "from there) so that workers know it"
        )
    return task


@django_domain.task("call", retry=RetryPolicy.constant(0))
def call(
    ctx: TaskContext,
    path: str,
    args: list[Any],
    kwargs: dict[str, Any],
    priority: int = 0,
    queue: str = DEFAULT_QUEUE,
    run_after: str | None = None,
    alias: str = "default",
) -> Any:
    """Run one enqueued django.tasks call (the worker side of TaskmillBackend)."""
    task = _resolve(path)
    backend = task.get_backend()
    running = backend.get_result(str(ctx.record.id))
    django_signals.task_started.send(sender=type(backend), task_result=running)
    try:
        if task.takes_context:
            value = task.call(DjangoTaskContext(task_result=running), *args, **kwargs)
        else:
            value = task.call(*args, **kwargs)
        value = normalize_json(value)
    except BaseException:
        failed = _with_status(running, TaskResultStatus.FAILED)
        django_signals.task_finished.send_robust(sender=type(backend), task_result=failed)
        raise
    done = _with_status(running, TaskResultStatus.SUCCESSFUL)
    object.__setattr__(done, "_return_value", value)
    django_signals.task_finished.send_robust(sender=type(backend), task_result=done)
    return value


call.internal = True  # its payload names code: written by enqueue() only, never over HTTP


def _with_status(result: TaskResult, status: TaskResultStatus) -> TaskResult:
    from dataclasses import replace

    return replace(result, status=status)


class TaskmillBackend(BaseTaskBackend):
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        self.allow_preemption = bool(self.options.get("ALLOW_PREEMPTION", False))

    def validate_task(self, task: DjangoTask) -> None:
        """Django validates every Task it creates (``@task``, ``using()``) with its backend:
        the valid ones are what workers may run, found by module path."""
        super().validate_task(task)
        _declared.setdefault(task.module_path, task)

    def _priority(self, priority: int) -> int:
        from .conf import app_settings

        mapped = to_taskmill_priority(priority)
        if not self.allow_preemption:
            mapped = max(mapped, int(app_settings.PREEMPT_PRIORITY) + 1)
        return min(mapped, 255)

    def enqueue(self, task: DjangoTask, args: Any, kwargs: Any) -> TaskResult:
        self.validate_task(task)
        args, kwargs = normalize_json(list(args)), normalize_json(dict(kwargs))  # TypeError early
        outcome = call.using(
            priority=self._priority(task.priority),
            run_after=task.run_after,
            key=uuid.uuid4().hex,  # every enqueue is a new result, as Django code expects
            label=task.module_path[:255],
            group=None if task.queue_name == DEFAULT_QUEUE else task.queue_name,
        ).submit(
            path=task.module_path,
            args=args,
            kwargs=kwargs,
            priority=task.priority,
            queue=task.queue_name,
            run_after=task.run_after.isoformat() if task.run_after else None,
            alias=self.alias,
        )
        result = self.get_result(str(outcome.id))
        django_signals.task_enqueued.send(sender=type(self), task_result=result)
        return result

    def get_result(self, result_id: str) -> TaskResult:
        from .models import Task, TaskHistory

        try:
            task_id = int(result_id)
        except (TypeError, ValueError):
            raise TaskResultDoesNotExist(result_id) from None
        row: Task | TaskHistory | None = Task.objects.filter(
            id=task_id, task_type=TASK_TYPE
        ).first()
        if row is None:
            row = TaskHistory.objects.filter(id=task_id, task_type=TASK_TYPE).first()
        if row is None or row.payload.get("alias") != self.alias:
            raise TaskResultDoesNotExist(result_id)
        return self._build(row)

    def _build(self, row: Any) -> TaskResult:
        p = row.payload
        run_after = parse_datetime(p["run_after"]) if p.get("run_after") else None
        task = _resolve(p["path"]).using(
            priority=p.get("priority", 0), queue_name=p.get("queue", DEFAULT_QUEUE)
        )
        if run_after is not None:
            task = task.using(run_after=run_after)
        status, finished_at, started = _status(row)
        result: TaskResult = TaskResult(
            task=task,
            id=str(row.id),
            status=status,
            enqueued_at=row.created_at,
            started_at=started,
            finished_at=finished_at,
            last_attempted_at=started,
            args=p.get("args", []),
            kwargs=p.get("kwargs", {}),
            backend=self.alias,
            errors=_errors(row) if status == TaskResultStatus.FAILED else [],
            worker_ids=[str(row.worker_id)] if row.worker_id and started else [],
        )
        if status == TaskResultStatus.SUCCESSFUL:
            object.__setattr__(result, "_return_value", row.result)
        return result


def _status(row: Any) -> tuple[TaskResultStatus, datetime | None, datetime | None]:
    from .models import TaskHistory

    if isinstance(row, TaskHistory):
        status = (
            TaskResultStatus.SUCCESSFUL if row.status == "completed" else TaskResultStatus.FAILED
        )
        return status, row.finished_at, row.started_at
    if row.status in ("running", "waiting"):
        return TaskResultStatus.RUNNING, None, row.started_at
    return TaskResultStatus.READY, None, row.started_at


def _errors(row: Any) -> list[TaskError]:
    """The recorded failure as a TaskError (class path read from the traceback's last line)."""
    trace = row.traceback or f"taskmill_django.exceptions.TaskmillError: {row.status}"
    last = trace.strip().splitlines()[-1] if trace.strip() else ""
    name = last.split(":", 1)[0].strip() or "Exception"
    path = name if "." in name else f"builtins.{name}"
    return [TaskError(exception_class_path=path, traceback=trace)]
