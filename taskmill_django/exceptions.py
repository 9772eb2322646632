"""Exceptions raised by taskmill_django. Messages say what was wrong and what to do."""

from __future__ import annotations


class TaskmillError(Exception):
    """Base class of every error this app raises on purpose."""


class ValidationError(TaskmillError, ValueError):
    """Bad input at a public entry point; ``field`` names the offending argument."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class DomainNotRegistered(TaskmillError, LookupError):
    """``scheduler.domain(name)`` was asked for a domain nobody declared."""


class UnknownTaskType(ValidationError):
    """A task type name that no ``@domain.task`` registered."""

    def __init__(self, task_type: str) -> None:
        super().__init__(
            "task_type",
            f"unknown task type {task_type!r}; declare it with @domain.task in an app's tasks.py",
        )


class DuplicateTaskError(TaskmillError):
    """A ``duplicate="reject"`` submission found its key occupied by an active task."""

    def __init__(
        self, key: str, existing_id: int | None, task_type: str = "", label: str = ""
    ) -> None:
        self.key = key
        self.existing_id = existing_id
        what = f"{task_type} {label!r}".strip() if task_type else f"key {key!r}"
        where = f"is already active as task {existing_id}" if existing_id else "is twice in batch"
        super().__init__(
            f"{what} {where} (duplicate='reject'); use duplicate='skip' or 'supersede' to accept it"
        )


class AlreadyRetried(TaskmillError):
    """A dead-letter entry was already submitted again; retrying it twice would run it twice."""

    def __init__(self, history_id: int, retried_as_id: int | None) -> None:
        self.history_id = history_id
        self.retried_as_id = retried_as_id
        super().__init__(
            f"dead-letter entry {history_id} was already retried as task {retried_as_id}"
        )


class TaskNotFound(TaskmillError, LookupError):
    """No active or historical task has the given id."""


class RetryableError(Exception):
    """Raise from task code to ask for a retry under the task's RetryPolicy."""


class PermanentError(Exception):
    """Raise from task code to fail the task at once, without retries."""


class LeaseLost(TaskmillError):
    """A worker tried to write the outcome of a task it no longer owns (fenced off)."""


class ResultTimeout(TaskmillError, TimeoutError):
    """``outcome.wait(timeout=...)`` ran out of time before the task reached a terminal state."""

    def __init__(self, task_id: int, timeout: float, status: str) -> None:
        self.task_id = task_id
        self.timeout = timeout
        self.status = status
        super().__init__(
            f"task {task_id} did not finish within {timeout:g} s (it is {status}); "
            "wait longer, or read it later with scheduler.result(task_id)"
        )
