"""Admin access: the permission table of docs/howto/security.md (the REST API's policy), page by
page and action by action, role by role; a refused action changes nothing."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from taskmill_django import RecurringSchedule
from taskmill_django.models import Schedule, Task, TaskHistory
from tests.db.conftest import ROLES, db_state
from tests.testapp.tasks import record

pytestmark = pytest.mark.django_db

READERS = {"viewer", "operator", "controller", "superuser"}
OPERATORS = {"operator", "superuser"}
CONTROLLERS = {"controller", "superuser"}

TASKS = "admin:taskmill_django_task_changelist"
DEAD = "admin:taskmill_django_deadletter_changelist"
SCHEDULES = "admin:taskmill_django_schedule_changelist"
CONTROLS = "admin:taskmill_django_controls"
PRUNE = "admin:taskmill_django_taskhistory_prune"
RETRY_ALL = "admin:taskmill_django_deadletter_retry_all"

# (url name, the world object its one argument names or None, query, roles allowed)
PAGES = [
    ("admin:taskmill_django_dashboard", None, "", READERS),
    ("admin:taskmill_django_dashboard_data", None, "", READERS),
    ("admin:taskmill_django_tags", None, "", READERS),
    ("admin:taskmill_django_tags", None, "?source=history", READERS),
    (CONTROLS, None, "", READERS),
    (TASKS, None, "", READERS),
    ("admin:taskmill_django_task_change", "task", "", READERS),
    ("admin:taskmill_django_taskhistory_changelist", None, "", READERS),
    ("admin:taskmill_django_taskhistory_change", "dead", "", READERS),
    (DEAD, None, "", READERS),
    ("admin:taskmill_django_deadletter_change", "dead", "", READERS),
    ("admin:taskmill_django_worker_changelist", None, "", READERS),
    (SCHEDULES, None, "", READERS),
    ("admin:taskmill_django_schedule_change", "schedule", "", READERS),
    (RETRY_ALL, None, "", OPERATORS),
    (PRUNE, None, "", {"superuser"}),  # delete_taskhistory
]

# (label, url name, POST data with world placeholders, roles allowed). Each changes the world.
ACTIONS = [
    ("cancel tasks", TASKS, {"action": "cancel_tasks", "_selected_action": "task"}, OPERATORS),
    ("pause tasks", TASKS, {"action": "pause_tasks", "_selected_action": "task"}, OPERATORS),
    ("resume tasks", TASKS, {"action": "resume_tasks", "_selected_action": "paused"}, OPERATORS),
    (
        "change priority",
        TASKS,
        {"action": "change_priority", "_selected_action": "task", "priority": "100", "apply": "1"},
        OPERATORS,
    ),
    ("retry entries", DEAD, {"action": "retry_entries", "_selected_action": "dead"}, OPERATORS),
    ("retry all matching", RETRY_ALL, {}, OPERATORS),
    (
        "pause schedules",
        SCHEDULES,
        {"action": "pause_schedules", "_selected_action": "schedule"},
        OPERATORS,
    ),
    (
        "resume schedules",
        SCHEDULES,
        {"action": "resume_schedules", "_selected_action": "paused_schedule"},
        OPERATORS,
    ),
    (
        "cancel schedules",
        SCHEDULES,
        {"action": "cancel_schedules", "_selected_action": "schedule"},
        OPERATORS,
    ),
    ("pause all", CONTROLS, {"op": "pause_all"}, CONTROLLERS),
    ("cluster cap", CONTROLS, {"op": "max_concurrency", "limit": "5"}, CONTROLLERS),
    ("pause domain", CONTROLS, {"op": "pause_domain", "domain": "tests"}, CONTROLLERS),
    ("domain cap", CONTROLS, {"op": "domain_limit", "domain": "tests", "limit": "2"}, CONTROLLERS),
    ("pause group", CONTROLS, {"op": "pause_group", "group": "g1"}, CONTROLLERS),
    ("group cap", CONTROLS, {"op": "group_limit", "group": "g1", "limit": "2"}, CONTROLLERS),
    ("group weight", CONTROLS, {"op": "group_weight", "group": "g1", "weight": "2"}, CONTROLLERS),
    ("group rate", CONTROLS, {"op": "group_rate", "group": "g1", "rate": "5"}, CONTROLLERS),
    (
        "type rate",
        CONTROLS,
        {"op": "type_rate", "task_type": "tests::record", "rate": "5"},
        CONTROLLERS,
    ),
    ("prune history", PRUNE, {"mode": "count", "amount": "0"}, {"superuser"}),
]


@pytest.fixture
def world(history_factory) -> dict[str, int]:
    """A pending task, one paused by hand, a dead letter, a schedule and a paused one."""
    task = record.using(tags={"env": "prod"}, group="g1").submit(n=1)
    paused = record.submit(n=2)
    Task.objects.filter(id=paused.id).update(status="paused", pause_reason="manual")
    dead = history_factory(task_type="tests::record", status="dead_letter", payload={"n": 3})
    later = RecurringSchedule(interval=3600, initial_delay=3600)
    schedule = record.using(key="hourly", recurring=later).submit(n=4)
    paused_schedule = record.using(key="paused", recurring=later).submit(n=5)
    Schedule.objects.filter(id=paused_schedule.schedule_id).update(is_paused=True)
    return {
        "task": task.id,
        "paused": paused.id,
        "dead": dead.id,
        "schedule": schedule.schedule_id,
        "paused_schedule": paused_schedule.schedule_id,
    }


@pytest.fixture
def client_for(admin_client_for):
    return admin_client_for


def _post_data(data: dict[str, str], world: dict[str, int]) -> dict[str, Any]:
    filled: dict[str, Any] = {"index": 0, **data}
    if "_selected_action" in data:
        filled["_selected_action"] = [world[data["_selected_action"]]]
    return filled


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("page", PAGES, ids=lambda p: f"{p[0].split(':')[1]}{p[2]}")
def test_admin_pages__each_role_gets_what_the_table_says(client_for, world, role, page):
    name, obj, query, allowed = page
    url = reverse(name, args=[world[obj]] if obj else []) + query
    response = client_for(role).get(url)
    if role == "anonymous":
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))
    elif role in allowed:
        assert response.status_code == 200, url
    else:
        assert response.status_code == 403, url


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("entry", ACTIONS, ids=lambda a: a[0])
def test_admin_actions__each_role_gets_what_the_table_says(client_for, world, role, entry):
    _, name, data, allowed = entry
    before = db_state()
    response = client_for(role).post(reverse(name), _post_data(data, world))
    if role in allowed:
        assert response.status_code == 302
        assert db_state() != before
    else:
        assert response.status_code in (200, 302, 403)
        assert db_state() == before


@pytest.mark.parametrize("role", ["staff", "viewer"])
def test_admin_app_index__needs_a_permission_of_the_app(client_for, world, role):
    response = client_for(role).get(reverse("admin:app_list", args=["taskmill_django"]))
    assert response.status_code == (404 if role == "staff" else 200)


def test_admin_change_priority__a_preempting_priority_needs_submit_urgent(client_for, world):
    data = {"action": "change_priority", "_selected_action": "task", "priority": "0", "apply": "1"}
    response = client_for("operator").post(reverse(TASKS), _post_data(data, world))
    assert Task.objects.get(id=world["task"]).priority == 128
    assert "submit_urgent" in " ".join(str(m) for m in get_messages(response.wsgi_request))
    client_for("operator", ("submit_urgent",)).post(reverse(TASKS), _post_data(data, world))
    assert Task.objects.get(id=world["task"]).priority == 0


def test_admin_retry__an_urgent_entry_needs_submit_urgent(client_for, history_factory):
    entry = history_factory(task_type="tests::record", status="dead_letter", priority=0)
    data = {"action": "retry_entries", "_selected_action": [entry.id], "index": 0}
    client_for("operator").post(reverse(DEAD), data)
    assert TaskHistory.objects.get(id=entry.id).retried_at is None
    assert not Task.objects.exists()
    client_for("operator", ("submit_urgent",)).post(reverse(DEAD), data)
    assert TaskHistory.objects.get(id=entry.id).retried_as_id is not None
