"""Who may do what: the one permission policy of the admin and the REST API.

Django's own model permissions, plus two custom ones on ``Task``: reading needs ``view_*``,
submitting ``add_task``, acting on tasks ``change_task``, cluster-wide controls
``control_scheduler``, and a priority that preempts (numerically at or below
``PREEMPT_PRIORITY``) ``submit_urgent``. ``is_staff`` grants nothing by itself; active
superusers have every permission. docs/howto/security.md has the table per page and endpoint.

Each ``Need`` is the set of permissions one kind of operation requires; the admin and the API
look them up here, so the two can never drift apart.

>>> RETRY_DEAD_LETTERS
('taskmill_django.add_task', 'taskmill_django.view_taskhistory')
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from .conf import app_settings

if TYPE_CHECKING:
    from .domain import TaskDefinition

APP = "taskmill_django"

Need = tuple[str, ...]

# Any permission of the app: the API root and the schema, which only list what exists.
ANY: Need = ()
READ_TASKS: Need = (f"{APP}.view_task",)
READ_HISTORY: Need = (f"{APP}.view_taskhistory",)
READ_WORKERS: Need = (f"{APP}.view_worker",)
READ_SCHEDULES: Need = (f"{APP}.view_schedule",)
SUBMIT: Need = (f"{APP}.add_task",)
CHANGE_TASKS: Need = (f"{APP}.change_task",)
RETRY_DEAD_LETTERS: Need = (f"{APP}.add_task", f"{APP}.view_taskhistory")
CHANGE_SCHEDULES: Need = (f"{APP}.change_schedule",)
PRUNE_HISTORY: Need = (f"{APP}.delete_taskhistory",)
CONTROL: Need = (f"{APP}.control_scheduler",)
URGENT: Need = (f"{APP}.submit_urgent",)
READ_METRICS: Need = (f"{APP}.view_metrics",)


def allowed(user: Any, need: Need) -> bool:
    """Whether ``user`` holds every permission of ``need`` (``ANY``: some permission of the
    app). Anonymous and inactive users hold none."""
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    if not need:
        return bool(user.has_module_perms(APP))
    return bool(user.has_perms(need))


def is_urgent(priority: int) -> bool:
    """Whether a task at ``priority`` preempts running work (``PREEMPT_PRIORITY`` or more
    urgent), so that submitting or moving a task there needs ``submit_urgent``."""
    return priority <= int(app_settings.PREEMPT_PRIORITY)


def urgent_refusal(priority: int) -> str:
    """The message of a refusal for lack of ``submit_urgent``."""
    return (
        f"priority {priority} preempts running work (PREEMPT_PRIORITY is "
        f"{int(app_settings.PREEMPT_PRIORITY)}): it needs the permission {URGENT[0]}"
    )


def submittable_over_http(definition: TaskDefinition) -> bool:
    """Whether the REST API may submit tasks of this type: it matches one of the qualified
    types or shell patterns of ``API_SUBMIT_TYPES`` (none by default) and is not internal."""
    if definition.internal:
        return False
    return any(fnmatchcase(definition.task_type, str(p)) for p in app_settings.API_SUBMIT_TYPES)
