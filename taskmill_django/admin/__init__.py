"""Admin pages of taskmill_django: the dashboard, tasks, history, dead letters, schedules,
workers, tags and controls. Read-mostly: every change goes through a core function."""

from .cluster import ScheduleAdmin, WorkerAdmin
from .dashboard import DashboardLinkAdmin
from .history import DeadLetterAdmin, TaskHistoryAdmin
from .tasks import TaskAdmin

__all__ = [
    "DashboardLinkAdmin",
    "DeadLetterAdmin",
    "ScheduleAdmin",
    "TaskAdmin",
    "TaskHistoryAdmin",
    "WorkerAdmin",
]
