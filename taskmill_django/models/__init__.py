"""Models of taskmill_django: thin rows plus QuerySets that name states."""

from .cluster import PausedGroup, RateBucket, SchedulerSetting, Worker
from .counters import TaskCounter
from .history import DeadLetter, TaskHistory, TaskHistoryTag
from .schedule import Schedule, ScheduleTick
from .task import Dashboard, Task, TaskDependency, TaskTag

__all__ = [
    "Dashboard",
    "DeadLetter",
    "PausedGroup",
    "RateBucket",
    "Schedule",
    "ScheduleTick",
    "SchedulerSetting",
    "Task",
    "TaskCounter",
    "TaskDependency",
    "TaskHistory",
    "TaskHistoryTag",
    "TaskTag",
    "Worker",
]
