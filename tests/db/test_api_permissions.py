"""REST API access: the permission table of docs/howto/security.md, role by role, opt-in
submission (API_SUBMIT_TYPES), urgency, API_PERMISSION_CLASSES and the submit throttle."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from rest_framework.test import APIClient

from taskmill_django import Domain, RecurringSchedule
from taskmill_django.api.schema import TaskmillSchemaGenerator
from taskmill_django.api.urls import api_patterns
from taskmill_django.models import Schedule, Task, TaskHistory
from tests.db.conftest import ROLES, db_state
from tests.settings import TASKMILL
from tests.testapp.tasks import record

pytestmark = pytest.mark.django_db

API = "/taskmill/api/"
SUBMIT = {"task_type": "tests::record", "payload": {"n": 1}}
OPEN = {**TASKMILL, "API_SUBMIT_TYPES": ["tests::*", "flows::*"]}

READERS = {"viewer", "operator", "controller", "superuser"}
OPERATORS = {"operator", "superuser"}
CONTROLLERS = {"controller", "superuser"}

# (method, path, body, roles allowed), paths as the schema spells them: ``{id}`` and ``{name}``
# are the objects of the ``world`` fixture the path's first segment names (see ``url``).
TABLE = [
    ("get", "", None, READERS),
    ("get", "schema/", None, READERS),
    ("get", "snapshot/", None, READERS),
    ("get", "stats/", None, READERS),
    ("get", "tags/keys/", None, READERS),
    ("get", "tags/values/?key=env", None, READERS),
    ("get", "tags/counts/?key=env", None, READERS),
    ("get", "tasks/", None, READERS),
    ("get", "tasks/{id}/", None, READERS),
    ("get", "tasks/{id}/dependencies/", None, READERS),
    ("get", "tasks/{id}/dependents/", None, READERS),
    ("get", "tasks/{id}/explain/", None, READERS),
    ("get", "history/", None, READERS),
    ("get", "history/{id}/", None, READERS),
    ("get", "dead-letter/", None, READERS),
    ("get", "dead-letter/{id}/", None, READERS),
    ("get", "recurring/", None, READERS),
    ("get", "recurring/{id}/", None, READERS),
    ("get", "groups/", None, READERS),
    ("get", "groups/{name}/", None, READERS),
    ("get", "workers/", None, READERS),
    ("get", "domains/", None, READERS),
    ("get", "domains/{name}/", None, READERS),
    ("get", "domains/{name}/snapshot/", None, READERS),
    ("post", "tasks/", SUBMIT, OPERATORS),
    ("post", "tasks/{id}/cancel/", None, OPERATORS),
    ("post", "tasks/{id}/pause/", None, OPERATORS),
    ("post", "tasks/{id}/resume/", None, OPERATORS),
    ("post", "tasks/{id}/priority/", {"priority": 100}, OPERATORS),
    ("post", "dead-letter/{id}/retry/", None, OPERATORS),
    ("post", "dead-letter/retry/", {"ids": "{id}"}, OPERATORS),
    ("post", "recurring/{id}/pause/", None, OPERATORS),
    ("post", "recurring/{id}/resume/", None, OPERATORS),
    ("post", "recurring/{id}/cancel/", None, OPERATORS),
    ("post", "groups/{name}/pause/", {}, CONTROLLERS),
    ("post", "groups/{name}/resume/", None, CONTROLLERS),
    ("post", "groups/{name}/limit/", {"limit": 2}, CONTROLLERS),
    ("delete", "groups/{name}/limit/", None, CONTROLLERS),
    ("post", "groups/{name}/rate-limit/", {"rate": 5}, CONTROLLERS),
    ("delete", "groups/{name}/rate-limit/", None, CONTROLLERS),
    ("post", "groups/{name}/weight/", {"weight": 2}, CONTROLLERS),
    ("delete", "groups/{name}/weight/", None, CONTROLLERS),
]


@pytest.fixture(autouse=True)
def clear_throttle_history():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def world(history_factory) -> dict[str, int]:
    """A tagged, grouped pending task, a dead-letter entry and a schedule to act on."""
    task = record.using(tags={"env": "prod"}, group="g1").submit(n=1)
    dead = history_factory(task_type="tests::record", status="dead_letter", payload={"n": 2})
    schedule = record.using(
        key="nightly", recurring=RecurringSchedule(interval=3600, initial_delay=3600)
    ).submit(n=3)
    return {"task": task.id, "dead": dead.id, "schedule": schedule.schedule_id}


@pytest.fixture
def client_for(api_client_for):
    return api_client_for


OBJECTS = {"tasks": "task", "history": "dead", "dead-letter": "dead", "recurring": "schedule"}
NAMES = {"groups": "g1", "domains": "tests"}


def url(path: str, world: dict[str, int]) -> str:
    first = path.split("/")[0]
    return API + path.format(id=world.get(OBJECTS.get(first, ""), 0), name=NAMES.get(first))


def call(client: APIClient, method: str, path: str, body, world: dict[str, int]):  # type: ignore[no-untyped-def]
    if body is not None and body.get("ids") == "{id}":
        body = {"ids": [world["dead"]]}
    return getattr(client, method)(url(path, world), body, format="json")


def _label(entry: tuple) -> str:  # type: ignore[type-arg]
    return f"{entry[0].upper()} {entry[1] or '/'}"


@override_settings(TASKMILL=OPEN)
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("entry", TABLE, ids=_label)
def test_permission_table__each_role_gets_what_the_table_says(client_for, world, role, entry):
    method, path, body, allowed = entry
    before = db_state()
    response = call(client_for(role), method, path, body, world)
    if role in allowed:
        assert response.status_code < 400, response.content
    else:
        refused = (401, 403) if role == "anonymous" else (403,)
        assert response.status_code in refused, response.content
        assert response.json()["errors"]["detail"]
        assert db_state() == before


def test_permission_table__covers_every_operation_of_the_schema():
    schema = TaskmillSchemaGenerator(patterns=api_patterns, url=API).get_schema()
    published = {
        (method, path.removeprefix(API))
        for path, operations in schema["paths"].items()
        for method in operations
    }
    assert published <= {(method, path.split("?")[0]) for method, path, _, _ in TABLE}


def test_refusal__names_the_permission_needed(client_for, world):
    response = client_for("viewer").post(f"{API}tasks/{world['task']}/cancel/")
    assert response.status_code == 403
    assert "taskmill_django.change_task" in response.json()["errors"]["detail"][0]


# --- submission over HTTP is opt-in per type ---------------------------------------------------


def test_submit__type_outside_api_submit_types_is_403_and_queues_nothing(client_for):
    response = client_for("operator").post(f"{API}tasks/", SUBMIT, format="json")
    assert response.status_code == 403
    assert "API_SUBMIT_TYPES" in response.json()["errors"]["task_type"][0]
    assert not Task.objects.exists()


@override_settings(TASKMILL={**TASKMILL, "API_SUBMIT_TYPES": ["tests::record"]})
def test_submit__listed_type_is_accepted_and_others_are_not(client_for):
    client = client_for("operator")
    assert client.post(f"{API}tasks/", SUBMIT, format="json").status_code == 201
    echo = {"task_type": "tests::echo", "payload": {}}
    assert client.post(f"{API}tasks/", echo, format="json").status_code == 403
    assert list(Task.objects.values_list("task_type", flat=True)) == ["tests::record"]


@override_settings(TASKMILL={**TASKMILL, "API_SUBMIT_TYPES": ["*"]})
def test_submit__unknown_type_stays_400(client_for):
    body = {"task_type": "tests::nope", "payload": {}}
    response = client_for("operator").post(f"{API}tasks/", body, format="json")
    assert response.status_code == 400
    assert "task_type" in response.json()["errors"]
    assert not Task.objects.exists()


@override_settings(TASKMILL={**TASKMILL, "API_SUBMIT_TYPES": ["*"]})
def test_submit__internal_type_is_refused_whatever_the_setting(client_for, isolated_registry):
    @Domain("internal_probe").task("t")
    def t(ctx, **payload): ...

    t.internal = True
    body = {"task_type": "internal_probe::t", "payload": {}}
    response = client_for("superuser").post(f"{API}tasks/", body, format="json")
    assert response.status_code == 403
    assert "internal" in response.json()["errors"]["task_type"][0]
    assert not Task.objects.exists()


# --- urgency is a privilege ------------------------------------------------------------------


@override_settings(TASKMILL=OPEN)
def test_submit__preempting_priority_needs_submit_urgent(client_for):
    urgent = {**SUBMIT, "priority": 0}
    response = client_for("operator").post(f"{API}tasks/", urgent, format="json")
    assert response.status_code == 403
    assert "submit_urgent" in response.json()["errors"]["priority"][0]
    assert not Task.objects.exists()
    allowed = client_for("operator", ("submit_urgent",))
    assert allowed.post(f"{API}tasks/", urgent, format="json").status_code == 201


@override_settings(TASKMILL={**TASKMILL, "PREEMPT_PRIORITY": 64, "API_SUBMIT_TYPES": ["*"]})
def test_submit__a_type_whose_default_priority_preempts_needs_submit_urgent(client_for):
    body = {"task_type": "other::noop", "payload": {}}  # declared at HIGH (64)
    response = client_for("operator").post(f"{API}tasks/", body, format="json")
    assert response.status_code == 403
    assert not Task.objects.exists()


def test_priority__moving_a_task_to_a_preempting_priority_needs_submit_urgent(client_for, world):
    url = f"{API}tasks/{world['task']}/priority/"
    response = client_for("operator").post(url, {"priority": 0}, format="json")
    assert response.status_code == 403
    assert Task.objects.get(id=world["task"]).priority == 128
    allowed = client_for("operator", ("submit_urgent",))
    assert allowed.post(url, {"priority": 0}, format="json").json()["changed"] is True
    assert Task.objects.get(id=world["task"]).priority == 0


def test_dead_letter_retry__an_urgent_entry_needs_submit_urgent(client_for, history_factory):
    entry = history_factory(task_type="tests::record", status="dead_letter", priority=0)
    client = client_for("operator")
    assert client.post(f"{API}dead-letter/{entry.id}/retry/").status_code == 403
    bulk = client.post(f"{API}dead-letter/retry/", {"ids": [entry.id]}, format="json").json()
    assert (bulk["retried"], bulk["failed"]) == (0, 1)
    assert "submit_urgent" in bulk["results"][0]["error"]
    assert not Task.objects.exists()
    assert TaskHistory.objects.get(id=entry.id).retried_at is None


# --- recurring submissions over HTTP are idempotent by name -------------------------------------


@override_settings(TASKMILL=OPEN)
def test_submit__recurring_needs_a_key_naming_the_schedule(client_for):
    body = {**SUBMIT, "recurring": {"interval": 60}}
    response = client_for("operator").post(f"{API}tasks/", body, format="json")
    assert response.status_code == 400
    assert "key" in response.json()["errors"]
    assert not Schedule.objects.exists()


@override_settings(TASKMILL=OPEN)
def test_submit__recurring_twice_with_one_key_is_one_schedule(client_for):
    body = {**SUBMIT, "key": "every-minute", "recurring": {"interval": 60, "initial_delay": 60}}
    client = client_for("operator")
    first = client.post(f"{API}tasks/", body, format="json")
    second = client.post(f"{API}tasks/", body, format="json")
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json()["schedule_id"] == first.json()["schedule_id"]
    assert Schedule.objects.count() == 1


# --- API_PERMISSION_CLASSES replaces the policy wholesale --------------------------------------


@override_settings(
    TASKMILL={
        **OPEN,
        "API_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    }
)
def test_allow_any_setting__opens_the_api_to_anonymous_clients():
    client = APIClient()
    assert client.get(f"{API}tasks/").status_code == 200
    response = client.post(f"{API}tasks/", {**SUBMIT, "priority": 0}, format="json")
    assert response.status_code == 201
    assert Task.objects.filter(id=response.json()["id"]).exists()
    assert client.get(f"{API}schema/").status_code == 200


@override_settings(
    TASKMILL={**TASKMILL, "API_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"]}
)
def test_is_authenticated_setting__lets_any_user_in(client_for):
    assert client_for("staff").get(f"{API}tasks/").status_code == 200
    assert APIClient().get(f"{API}tasks/").status_code in (401, 403)


@override_settings(TASKMILL={**TASKMILL, "API_PERMISSION_CLASSES": ["no.such.Permission"]})
def test_unimportable_permission_class__is_a_configuration_error(client_for):
    with pytest.raises(ImproperlyConfigured, match="API_PERMISSION_CLASSES"):
        client_for("superuser").get(f"{API}tasks/")


# --- the submit throttle ---------------------------------------------------------------------


@override_settings(TASKMILL={**OPEN, "API_SUBMIT_THROTTLE_RATE": "2/min"})
def test_submit_throttle__third_submission_in_a_minute_is_429(client_for):
    client = client_for("operator")
    for n in range(2):
        body = {"task_type": "tests::record", "payload": {"n": n}}
        assert client.post(f"{API}tasks/", body, format="json").status_code == 201
    response = client.post(f"{API}tasks/", {**SUBMIT, "payload": {"n": 9}}, format="json")
    assert response.status_code == 429
    assert "Retry-After" in response.headers
    assert response.json()["errors"]["detail"]
    assert Task.objects.count() == 2
    # Only submissions are throttled.
    assert client.get(f"{API}tasks/").status_code == 200


@override_settings(TASKMILL=OPEN)
def test_submit_throttle__off_by_default(client_for):
    client = client_for("operator")
    for n in range(20):
        body = {"task_type": "tests::record", "payload": {"n": n}}
        assert client.post(f"{API}tasks/", body, format="json").status_code == 201


@override_settings(TASKMILL={**OPEN, "API_SUBMIT_THROTTLE_RATE": "lots"})
def test_submit_throttle__bad_rate_is_a_configuration_error(client_for):
    with pytest.raises(ImproperlyConfigured, match="API_SUBMIT_THROTTLE_RATE"):
        client_for("operator").post(f"{API}tasks/", SUBMIT, format="json")


@override_settings(TASKMILL=OPEN)
def test_session_client__must_send_the_csrf_token(user_factory):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(user_factory("operator"))
    assert client.post(f"{API}tasks/", SUBMIT, format="json").status_code == 403
    assert not Task.objects.exists()
