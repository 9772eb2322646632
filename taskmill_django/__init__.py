"""taskmill_django: a priority-aware, cluster-safe task scheduler in your Django database.

Public names only; importing this package loads no models, so it is safe in settings and
in ``tasks.py`` modules.
"""

from .context import TaskContext
from .cron import RecurringSchedule
from .domain import Domain, TaskDefinition
from .enums import DependencyFailurePolicy, DuplicateStrategy, HistoryStatus, Priority, TaskStatus
from .exceptions import (
    AlreadyRetried,
    DomainNotRegistered,
    DuplicateTaskError,
    PermanentError,
    ResultTimeout,
    RetryableError,
    TaskmillError,
    TaskNotFound,
    UnknownTaskType,
    ValidationError,
)
from .policy.ratelimit import RateLimit
from .records import (
    ByteProgress,
    EstimatedProgress,
    IoBudget,
    PausedGroupInfo,
    SubmitOutcome,
    TaskLookup,
    TypeStats,
)
from .retry import RetryPolicy
from .scheduler import scheduler

__all__ = [
    "AlreadyRetried",
    "ByteProgress",
    "DependencyFailurePolicy",
    "Domain",
    "DomainNotRegistered",
    "DuplicateStrategy",
    "DuplicateTaskError",
    "EstimatedProgress",
    "HistoryStatus",
    "IoBudget",
    "PausedGroupInfo",
    "PermanentError",
    "Priority",
    "RateLimit",
    "RecurringSchedule",
    "ResultTimeout",
    "RetryPolicy",
    "RetryableError",
    "SubmitOutcome",
    "TaskContext",
    "TaskDefinition",
    "TaskLookup",
    "TaskNotFound",
    "TaskStatus",
    "TaskmillError",
    "TypeStats",
    "UnknownTaskType",
    "ValidationError",
    "scheduler",
]
