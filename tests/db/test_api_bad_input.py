"""REST API bad input: 400 with field errors, nothing written, never a 500 (SPEC §6)."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from taskmill_django.models import Schedule, Task, TaskHistory, TaskTag
from tests.testapp.tasks import record

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("api_submit_types")]

TASKS = "/taskmill/api/tasks/"


@pytest.fixture
def api(api_client_for) -> APIClient:
    """Every permission of the app; a server error is a response to assert on, not raised."""
    return api_client_for("everything", raise_request_exception=False)


def nothing_written() -> bool:
    return not (Task.objects.exists() or TaskTag.objects.exists() or Schedule.objects.exists())


def submit(api: APIClient, **body: object):
    return api.post(TASKS, {"task_type": "tests::record", **body}, format="json")


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        ({"priority": 300}, "priority", "less than or equal to 255"),
        ({"priority": -1}, "priority", "greater than or equal to 0"),
        ({"priority": "high"}, "priority", "valid integer"),
        ({"priority": True}, "priority", "valid integer"),
        ({"task_type": "tests::nope"}, "task_type", "unknown task type"),
        ({"task_type": "nope"}, "task_type", "unknown task type"),
        ({"task_type": 5}, "task_type", "valid string"),
        ({"payload": [1, 2]}, "payload", "dictionary"),
        ({"payload": "x"}, "payload", "dictionary"),
        ({"payload": {"n": "\x00"}}, "payload", "NUL"),
        ({"payload": {"self": 1}}, "payload", "reserved"),
        ({"payload": {"unexpected": 1, "n": 1}}, None, None),  # record takes **payload: fine
        ({"run_after": "tomorrow"}, "run_after", "datetime"),
        ({"run_after": -5}, "run_after", "between 0"),
        ({"run_after": 1e20}, "run_after", "between 0"),
        ({"key": ""}, "key", "blank"),
        ({"key": "k" * 2000}, "key", "no more than 1024"),
        ({"tags": {"a": 1}}, "tags.a", "valid string"),
        ({"tags": {"k" * 65: "v"}}, "tags", "over 64"),
        ({"tags": {f"k{i}": "v" for i in range(33)}}, "tags", "at most 32"),
        ({"tags": ["a"]}, "tags", "dictionary"),
        ({"depends_on": [0]}, "depends_on.0", "greater than or equal to 1"),
        ({"depends_on": 5}, "depends_on", "list"),
        ({"depends_on": [123456789]}, "depends_on", "no task with id 123456789"),
        ({"on_dependency_failure": "explode"}, "on_dependency_failure", "valid choice"),
        ({"parent": 987654}, "parent", "no active task"),
        ({"fail_fast": "yes"}, "fail_fast", "valid boolean"),
        ({"group": ""}, "group", "blank"),
        ({"ttl": -1}, "ttl", "greater than or equal to 0"),
        ({"ttl": "soon"}, "ttl", "valid number"),
        ({"ttl_from": "never"}, "ttl_from", "valid choice"),
        ({"duplicate": "merge"}, "duplicate", "valid choice"),
        ({"max_retries": -1}, "max_retries", "greater than or equal to 0"),
        ({"max_retries": 2**40}, "max_retries", "less than or equal to"),
        ({"expected_io": {"read_bytes": -1}}, "expected_io.read_bytes", "greater than"),
        ({"expected_io": {"disk": 1}}, "expected_io.disk", "unknown field"),
        ({"recurring": {"cron": "61 * * * *"}}, "recurring.cron", "not a valid cron"),
        ({"recurring": {"cron": "* * * * * *"}}, "recurring.cron", "five fields"),
        ({"recurring": {}}, "recurring", "exactly one of"),
        ({"recurring": {"interval": 5, "cron": "* * * * *"}}, "recurring", "exactly one of"),
        ({"recurring": {"interval": 0}}, "recurring.interval", "greater than or equal"),
        ({"recurring": {"interval": 60, "timezone": "Mars/Base"}}, "recurring.timezone", "unknown"),
        ({"recurring": {"interval": 60, "max_occurrences": 0}}, "recurring.max_occurrences", ">"),
        (
            {"recurring": {"interval": 60}, "key": "k", "depends_on": [1]},
            "recurring",
            "cannot be combined",
        ),
        ({"recurring": {"interval": 60}}, "key", "names the schedule"),
        ({"prioirty": 3}, "prioirty", "unknown field"),
    ],
)
def test_submit__bad_input_is_400_naming_the_field_and_writes_nothing(api, body, field, fragment):
    response = submit(api, **body)
    if field is None:
        assert response.status_code == 201
        return
    assert response.status_code == 400, response.content
    errors = response.json()["errors"]
    assert field in errors, errors
    assert all(isinstance(m, str) for m in errors[field])
    if fragment != ">":
        assert fragment.lower() in " ".join(errors[field]).lower(), errors
    assert nothing_written()


def test_submit__recurring_with_dependencies_is_rejected_by_the_core(api):
    existing = record.submit(n=1)
    response = submit(api, recurring={"interval": 60}, key="k", depends_on=[existing.id])
    assert response.status_code == 400
    assert "recurring" in response.json()["errors"]
    assert Task.objects.count() == 1
    assert not Schedule.objects.exists()


def test_submit__payload_not_fitting_the_function(api):
    response = api.post(
        TASKS, {"task_type": "tests::keyed", "payload": {"path": "/x"}}, format="json"
    )
    assert response.status_code == 400
    assert "payload" in response.json()["errors"]
    assert nothing_written()


def test_submit__payload_over_one_mib(api):
    response = submit(api, payload={"blob": "x" * (1024 * 1024 + 10)})
    assert response.status_code == 400
    assert "limit" in response.json()["errors"]["payload"][0]
    assert nothing_written()


def test_submit__one_unknown_dependency_among_known_ones(api):
    first = record.submit(n=1)
    response = submit(api, depends_on=[first.id, first.id + 1000])
    assert response.status_code == 400
    assert response.json()["errors"] == {
        "depends_on": [f"no task with id {first.id + 1000} exists"]
    }
    assert Task.objects.count() == 1


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"[1, 2]", b'"text"', b"null", b'{"task_type": NaN}'],
)
def test_submit__malformed_bodies(api, raw):
    response = api.generic("POST", TASKS, raw, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["errors"]
    assert nothing_written()


def test_submit__form_encoded_body_is_415(api):
    response = api.post(TASKS, {"task_type": "tests::record"}, format="multipart")
    assert response.status_code == 415
    assert "detail" in response.json()["errors"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": -1}, "limit"),
        ({"limit": 0}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"offset": -5}, "offset"),
        ({"offset": "1e3"}, "offset"),
        ({"status": "sleeping"}, "status"),
        ({"priority_min": 300}, "priority_min"),
        ({"priority_max": "x"}, "priority_max"),
        ({"tag": "customer=acme"}, "tag"),
        ({"tag": ":value"}, "tag"),
        ({"created_after": "yesterday"}, "created_after"),
        ({"created_before": "9999-12-31T23:59:59-14:00"}, "created_before"),
        ({"parent": 0}, "parent"),
        ({"task_type": "x\x00"}, "task_type"),
    ],
)
def test_task_list__bad_filters_are_400(api, params, field):
    response = api.get(TASKS, params)
    assert response.status_code == 400, response.content
    assert field in response.json()["errors"]


@pytest.mark.parametrize(
    ("url", "params", "field"),
    [
        ("/taskmill/api/history/", {"status": "pending"}, "status"),
        ("/taskmill/api/history/", {"finished_after": "nope"}, "finished_after"),
        ("/taskmill/api/dead-letter/", {"limit": 100000}, "limit"),
        ("/taskmill/api/tags/values/", {}, "key"),
        ("/taskmill/api/tags/counts/", {"key": "k", "status": "done"}, "status"),
        ("/taskmill/api/tags/keys/", {"domain": "nowhere"}, "domain"),
        ("/taskmill/api/recurring/", {"domain": "nowhere"}, "domain"),
        ("/taskmill/api/groups/", {"offset": "-1"}, "offset"),
        ("/taskmill/api/dead-letter/", {"retried": ""}, "retried"),
    ],
)
def test_other_lists__bad_query_parameters_are_400(api, url, params, field):
    response = api.get(url, params)
    assert response.status_code == 400, response.content
    assert field in response.json()["errors"]


@pytest.mark.parametrize(
    ("url", "params"),
    [
        ("/taskmill/api/tasks/", {"stauts": "pending"}),
        ("/taskmill/api/history/", {"status": "failed", "stauts": "failed"}),
        ("/taskmill/api/dead-letter/", {"retired": "true"}),
        ("/taskmill/api/groups/", {"name": "g"}),
        ("/taskmill/api/stats/", {"type": "tests::record"}),
        ("/taskmill/api/snapshot/", {"domain": "tests"}),
        ("/taskmill/api/recurring/", {"paused": "true"}),
    ],
)
def test_lists__unknown_query_parameters_are_400_naming_them(api, url, params):
    record.submit(n=1)
    response = api.get(url, params)
    assert response.status_code == 400, response.content
    errors = response.json()["errors"]
    unknown = (set(params) - {"status"}).pop()
    assert list(errors) == [unknown]
    assert "unknown query parameter" in errors[unknown][0]


def test_lists__format_parameter_stays_allowed(api):
    assert api.get("/taskmill/api/tasks/", {"format": "json", "limit": 5}).status_code == 200


def test_dead_letter_bulk_retry__unknown_query_parameter_is_400_and_retries_nothing(
    api, history_factory
):
    entry = history_factory(task_type="tests::record", status="dead_letter", payload={"n": 1})
    response = api.post(
        "/taskmill/api/dead-letter/retry/?domian=tests", {"all_matching": True}, format="json"
    )
    assert response.status_code == 400
    assert "domian" in response.json()["errors"]
    assert nothing_written()
    assert TaskHistory.objects.get(id=entry.id).retried_at is None


@pytest.mark.parametrize(
    ("url", "body", "field"),
    [
        ("groups/g/limit/", {"limit": -1}, "limit"),
        ("groups/g/limit/", {"limit": 0}, "limit"),
        ("groups/g/limit/", {}, "limit"),
        ("groups/g/limit/", {"limit": "3"}, "limit"),
        ("groups/g/pause/", {"until": "later"}, "until"),
        ("groups/g/rate-limit/", {"rate": 0}, "rate"),
        ("groups/g/rate-limit/", {"rate": 1, "per": "week"}, "per"),
        ("groups/g/rate-limit/", {"rate": 1, "burst": 0.5}, "burst"),
        ("groups/g/weight/", {"weight": -2}, "weight"),
        (f"groups/{'g' * 129}/limit/", {"limit": 2}, "group"),
        ("groups/bad%00name/pause/", {}, "group"),
        ("dead-letter/retry/", {}, "ids"),
        ("dead-letter/retry/", {"ids": []}, "ids"),
        ("dead-letter/retry/", {"ids": [1], "all_matching": True}, "ids"),
        ("dead-letter/retry/", {"ids": ["a"]}, "ids.0"),
        ("dead-letter/retry/", {"ids": list(range(1, 1100))}, "ids"),
    ],
)
def test_actions__bad_bodies_are_400(api, url, body, field):
    response = api.post(f"/taskmill/api/{url}", body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()["errors"], response.json()


def test_group_limit__rejected_body_changes_nothing(api):
    from taskmill_django.models import SchedulerSetting

    api.post("/taskmill/api/groups/g/limit/", {"limit": -1}, format="json")
    assert not SchedulerSetting.objects.filter(name__startswith="group_limit:").exists()


@pytest.mark.parametrize(
    "url",
    [
        "tasks/123/",
        "tasks/123/explain/",
        "history/123/",
        "dead-letter/123/",
        "recurring/123/",
        "domains/nowhere/",
        "domains/nowhere/snapshot/",
    ],
)
def test_unknown_objects_are_404_with_an_error_body(api, url):
    response = api.get(f"/taskmill/api/{url}")
    assert response.status_code == 404
    assert response.json()["errors"]["detail"]


@pytest.mark.parametrize(
    "url",
    [
        "tasks/123/cancel/",
        "dead-letter/123/retry/",
        "recurring/123/pause/",
        "recurring/123/resume/",
        "recurring/123/cancel/",
    ],
)
def test_actions_on_unknown_objects_are_404(api, url):
    assert api.post(f"/taskmill/api/{url}").status_code == 404


def test_dead_letter_retry__non_dead_letter_entry_is_404(api):
    outcome = record.submit(n=1)
    from taskmill_django import scheduler

    scheduler.cancel(outcome.id)
    assert TaskHistory.objects.filter(id=outcome.id).exists()
    assert api.post(f"/taskmill/api/dead-letter/{outcome.id}/retry/").status_code == 404


def test_wrong_method_is_405_with_an_error_body(api):
    response = api.delete(TASKS)
    assert response.status_code == 405
    assert response.json()["errors"]["detail"]
