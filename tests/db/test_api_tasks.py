"""REST API: tasks/ (list, filters, pagination, retrieve, submit, actions, explain)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from taskmill_django import scheduler
from taskmill_django.models import Schedule, Task, TaskDependency, TaskTag
from taskmill_django.store import workers
from taskmill_django.validation import dedup_key
from tests.db.conftest import claim_one
from tests.testapp.tasks import echo, keyed, noop, other_noop, record

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("api_submit_types")]

URL = "/taskmill/api/tasks/"


def ids(response) -> list[int]:
    return [row["id"] for row in response.json()["results"]]


# --- list, filters, pagination ---------------------------------------------------------------


def test_list__dispatch_order_with_tags_and_count(api):
    low = record.using(priority=200, tags={"env": "prod"}).submit(n=1)
    high = record.using(priority=10).submit(n=2)
    response = api.get(URL)
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    assert ids(response) == [high.id, low.id]
    assert body["results"][1]["tags"] == {"env": "prod"}
    assert body["results"][1]["task_type"] == "tests::record"
    assert "lease_token" not in body["results"][0]


def test_list__filter_by_status_domain_type_group(api):
    a = record.using(group="g1").submit(n=1)
    b = other_noop.submit()
    c = echo.submit(value=1)
    record.submit(n=2)
    claim_one(domains=["tests"])  # a is running now (priority tie: lowest id)
    assert ids(api.get(URL, {"status": "running"})) == [a.id]
    assert set(ids(api.get(URL, {"status": ["running", "pending"]}))) == {
        a.id,
        b.id,
        c.id,
        a.id + 3,
    }
    assert ids(api.get(URL, {"domain": "other"})) == [b.id]
    assert ids(api.get(URL, {"task_type": "tests::echo"})) == [c.id]
    assert ids(api.get(URL, {"group": "g1"})) == [a.id]


def test_list__filter_by_priority_range(api):
    record.using(priority=10).submit(n=1)
    mid = record.using(priority=100).submit(n=2)
    record.using(priority=200).submit(n=3)
    assert ids(api.get(URL, {"priority_min": 50, "priority_max": 150})) == [mid.id]


def test_list__filter_by_repeated_tags_and_prefix(api):
    both = record.using(tags={"env": "prod", "team": "a"}).submit(n=1)
    record.using(tags={"env": "prod", "team": "b"}).submit(n=2)
    record.using(tags={"owner:x": "1"}).submit(n=3)
    assert len(ids(api.get(URL, {"tag": "env:prod"}))) == 2
    assert ids(api.get(URL, {"tag": ["env:prod", "team:a"]})) == [both.id]
    assert ids(api.get(URL, {"tag": "env:prod:x"})) == []  # value "prod:x"
    assert len(ids(api.get(URL, {"tag_prefix": "ow"}))) == 1


def test_list__tag_without_a_value_matches_the_key(api):
    tagged = record.using(tags={"team": "a"}).submit(n=1)
    record.using(tags={"teams": "a"}).submit(n=2)
    assert ids(api.get(URL, {"tag": "team"})) == [tagged.id]


def test_list__filter_by_created_range(api):
    old = record.submit(n=1)
    new = record.submit(n=2)
    Task.objects.filter(id=old.id).update(created_at=timezone.now() - timedelta(days=2))
    cutoff = (timezone.now() - timedelta(days=1)).isoformat()
    assert ids(api.get(URL, {"created_after": cutoff})) == [new.id]
    assert ids(api.get(URL, {"created_before": cutoff})) == [old.id]


def test_list__limit_offset_pagination(api):
    record.submit_batch([{"n": n} for n in range(7)])
    page = api.get(URL, {"limit": 3, "offset": 3}).json()
    assert page["count"] == 7
    assert len(page["results"]) == 3
    assert "offset=6" in page["next"]
    assert "limit=3" in page["previous"]
    assert len(api.get(URL).json()["results"]) == 7  # default limit 50


def test_list__limit_above_maximum_is_rejected(api):
    response = api.get(URL, {"limit": 501})
    assert response.status_code == 400
    assert response.json() == {"errors": {"limit": ["must be between 1 and 500, got 501"]}}


# --- retrieve --------------------------------------------------------------------------------


def test_retrieve__active_task(api):
    outcome = keyed.using(tags={"a": "b"}).submit(path="/x", size=3)
    body = api.get(f"{URL}{outcome.id}/").json()
    assert body["id"] == outcome.id
    assert body["payload"] == {"path": "/x", "size": 3}
    assert body["status"] == "pending"
    assert body["tags"] == {"a": "b"}


@pytest.mark.parametrize("aging", [None, {"grace_period": 10, "interval": 10, "ceiling": 64}])
def test_retrieve__effective_priority_follows_priority_aging(api, settings, aging):
    settings.TASKMILL = {**settings.TASKMILL, "PRIORITY_AGING": aging}
    task_id = record.using(priority=192).submit(n=1).id
    Task.objects.filter(id=task_id).update(created_at=timezone.now() - timedelta(seconds=1000))

    body = api.get(f"{URL}{task_id}/").json()

    assert body["priority"] == 192
    assert body["effective_priority"] == (192 if aging is None else 93)


def test_retrieve__finished_task_is_404_with_a_hint(api):
    outcome = record.submit(n=1)
    scheduler.cancel(outcome.id)
    response = api.get(f"{URL}{outcome.id}/")
    assert response.status_code == 404
    (message,) = response.json()["errors"]["detail"]
    assert f"history/{outcome.id}/" in message


@pytest.mark.parametrize("bad", ["999999", "abc", "0", "99999999999999999999"])
def test_retrieve__unknown_or_malformed_id_is_404(api, bad):
    response = api.get(f"{URL}{bad}/")
    assert response.status_code == 404
    assert list(response.json()["errors"]) == ["detail"]


# --- submit ----------------------------------------------------------------------------------


def test_submit__inserts_and_returns_the_outcome(api):
    response = api.post(URL, {"task_type": "tests::record", "payload": {"n": 5}}, format="json")
    assert response.status_code == 201
    body = response.json()
    assert body["kind"] == "inserted"
    task = Task.objects.get(id=body["id"])
    assert (task.task_type, task.payload, task.priority) == ("tests::record", {"n": 5}, 128)
    assert body == {
        "kind": "inserted",
        "id": task.id,
        "group_paused": False,
        "replaced_id": None,
        "schedule_id": None,
    }


def test_submit__every_using_option(api):
    dep = record.submit(n=0)
    parent = record.submit(n=-1)
    run_after = datetime(2099, 1, 1, tzinfo=UTC)
    body = {
        "task_type": "tests::record",
        "payload": {"n": 1},
        "priority": 40,
        "run_after": run_after.isoformat(),
        "key": "my-key",
        "label": "nightly",
        "tags": {"env": "prod"},
        "depends_on": [dep.id],
        "on_dependency_failure": "ignore",
        "parent": parent.id,
        "fail_fast": False,
        "group": "g1",
        "ttl": 7200,
        "ttl_from": "submission",
        "duplicate": "reject",
        "max_retries": 7,
        "expected_io": {"read_bytes": 10, "write_bytes": 20},
    }
    response = api.post(URL, body, format="json")
    assert response.status_code == 201, response.json()
    task = Task.objects.get(id=response.json()["id"])
    assert task.priority == 40
    assert task.run_after == run_after
    assert task.label == "nightly"
    assert task.group_key == "g1"
    assert task.parent_id == parent.id
    assert task.fail_fast is False
    assert task.on_dependency_failure == "ignore"
    assert task.max_retries == 7
    assert task.ttl_seconds == 7200
    assert (task.expected_read_bytes, task.expected_write_bytes) == (10, 20)
    assert task.status == "blocked"
    assert dict(TaskTag.objects.filter(task=task).values_list("key", "value")) == {"env": "prod"}
    assert list(
        TaskDependency.objects.filter(task=task).values_list("depends_on_id", flat=True)
    ) == [dep.id]
    assert task.key == dedup_key(f"tests::record\x00parent:{parent.id}", None, "my-key")


def test_submit__run_after_in_seconds(api):
    response = api.post(URL, {"task_type": "tests::record", "run_after": 90}, format="json")
    assert response.status_code == 201
    task = Task.objects.get(id=response.json()["id"])
    assert timedelta(seconds=80) < task.run_after - timezone.now() < timedelta(seconds=100)


def test_submit__duplicate_is_200_and_upgrade_is_reported(api):
    first = api.post(URL, {"task_type": "tests::record", "payload": {"n": 1}}, format="json")
    again = api.post(URL, {"task_type": "tests::record", "payload": {"n": 1}}, format="json")
    upgraded = api.post(
        URL, {"task_type": "tests::record", "payload": {"n": 1}, "priority": 5}, format="json"
    )
    assert (first.status_code, again.status_code, upgraded.status_code) == (201, 200, 200)
    assert again.json()["kind"] == "duplicate"
    assert upgraded.json() == {**first.json(), "kind": "upgraded"}
    assert Task.objects.count() == 1


def test_submit__requeue_of_a_running_twin_is_200(api):
    record.submit(n=1)
    running = claim_one()
    response = api.post(URL, {"task_type": "tests::record", "payload": {"n": 1}}, format="json")
    assert response.status_code == 200
    assert response.json()["kind"] == "requeued"
    assert response.json()["id"] == running.id


def test_submit__supersede_is_201_with_replaced_id(api):
    old = record.submit(n=1)
    response = api.post(
        URL,
        {"task_type": "tests::record", "payload": {"n": 1}, "duplicate": "supersede"},
        format="json",
    )
    assert response.status_code == 201
    assert response.json()["kind"] == "superseded"
    assert response.json()["replaced_id"] == old.id


def test_submit__reject_duplicate_is_409(api):
    old = record.submit(n=1)
    response = api.post(
        URL,
        {"task_type": "tests::record", "payload": {"n": 1}, "duplicate": "reject"},
        format="json",
    )
    assert response.status_code == 409
    assert response.json()["existing_id"] == old.id
    assert list(response.json()["errors"]) == ["key"]


def test_submit__reports_a_paused_group(api):
    scheduler.pause_group("g9")
    response = api.post(URL, {"task_type": "tests::noop", "group": "g9"}, format="json")
    assert response.status_code == 201
    assert response.json()["group_paused"] is True


def test_submit__recurring_interval_creates_a_schedule(api):
    response = api.post(
        URL,
        {
            "task_type": "tests::noop",
            "key": "every-minute",
            "priority": 100,
            "recurring": {"interval": 60, "initial_delay": 30, "max_occurrences": 3},
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    schedule = Schedule.objects.get(id=body["schedule_id"])
    assert body["id"] is None  # the first run lies 30 seconds ahead
    assert (schedule.interval_seconds, schedule.max_occurrences) == (60.0, 3)
    assert schedule.options["priority"] == 100
    again = api.post(
        URL,
        {"task_type": "tests::noop", "key": "every-minute", "recurring": {"interval": 60}},
        format="json",
    )
    assert again.status_code == 200
    assert again.json()["kind"] == "duplicate"


def test_submit__recurring_cron_with_timezone(api):
    response = api.post(
        URL,
        {
            "task_type": "tests::noop",
            "key": "nightly",
            "recurring": {"cron": "0 3 * * *", "timezone": "Europe/Paris"},
        },
        format="json",
    )
    assert response.status_code == 201
    schedule = Schedule.objects.get(id=response.json()["schedule_id"])
    assert (schedule.cron, schedule.timezone) == ("0 3 * * *", "Europe/Paris")


# --- actions ---------------------------------------------------------------------------------


def test_cancel__pending_task_goes_to_history(api):
    outcome = record.submit(n=1)
    response = api.post(f"{URL}{outcome.id}/cancel/")
    assert response.status_code == 200
    assert response.json() == {
        "id": outcome.id,
        "changed": True,
        "status": "cancelled",
        "message": "cancelled",
    }
    assert not Task.objects.filter(id=outcome.id).exists()


def test_cancel__running_task_is_asked_to_stop(api):
    record.submit(n=1)
    running = claim_one()
    body = api.post(f"{URL}{running.id}/cancel/").json()
    assert body["changed"] is True
    assert body["status"] == "running"
    assert "next heartbeat" in body["message"]
    assert Task.objects.get(id=running.id).cancel_reason == "cancelled"
    assert api.post(f"{URL}{running.id}/cancel/").json()["changed"] is False


def test_cancel__unknown_task_is_404(api):
    assert api.post(f"{URL}4242/cancel/").status_code == 404


def test_pause_and_resume__round_trip(api):
    outcome = record.submit(n=1)
    paused = api.post(f"{URL}{outcome.id}/pause/")
    assert paused.status_code == 200
    assert paused.json()["status"] == "paused"
    task = Task.objects.get(id=outcome.id)
    assert (task.status, task.pause_reason) == ("paused", "manual")
    assert api.post(f"{URL}{outcome.id}/pause/").json()["changed"] is False
    resumed = api.post(f"{URL}{outcome.id}/resume/")
    assert resumed.json() == {
        "id": outcome.id,
        "changed": True,
        "status": "pending",
        "message": "resumed",
    }
    task.refresh_from_db()
    assert (task.status, task.pause_reason, task.paused_at) == ("pending", "", None)
    assert api.post(f"{URL}{outcome.id}/resume/").json()["changed"] is False


def test_pause__running_task_is_asked_to_pause_and_can_be_let_go(api):
    record.submit(n=1)
    running = claim_one()

    response = api.post(f"{URL}{running.id}/pause/")
    again = api.post(f"{URL}{running.id}/pause/")
    row = Task.objects.get(id=running.id)

    assert (response.status_code, response.json()["changed"]) == (200, True)
    assert response.json()["status"] == "running"
    assert "next heartbeat" in response.json()["message"]
    assert again.json()["changed"] is False
    assert (row.status, row.cancel_reason) == ("running", "manual")

    resumed = api.post(f"{URL}{running.id}/resume/").json()
    assert (resumed["changed"], resumed["status"]) == (True, "running")
    assert Task.objects.get(id=running.id).cancel_reason == ""


def test_pause__blocked_task_is_409(api):
    task_id = record.submit(n=1).id
    Task.objects.filter(id=task_id).update(status="blocked")
    response = api.post(f"{URL}{task_id}/pause/")
    assert response.status_code == 409
    assert "is blocked" in response.json()["errors"]["status"][0]


def test_resume__task_paused_by_the_scheduler_is_409(api):
    outcome = record.submit(n=1)
    Task.objects.filter(id=outcome.id).update(status="paused", pause_reason="preempted")
    response = api.post(f"{URL}{outcome.id}/resume/")
    assert response.status_code == 409
    assert "preempted" in response.json()["errors"]["status"][0]
    assert Task.objects.get(id=outcome.id).status == "paused"


def test_pause__finished_task_is_404(api):
    outcome = record.submit(n=1)
    scheduler.cancel(outcome.id)
    assert api.post(f"{URL}{outcome.id}/pause/").status_code == 404
    assert api.post(f"{URL}{outcome.id}/resume/").status_code == 404


def test_dependencies_and_dependents(api):
    first = record.submit(n=1)
    second = record.submit(n=2)
    scheduler.cancel(second.id)
    child = noop.using(depends_on=[first.id, second.id], on_dependency_failure="ignore").submit()
    deps = api.get(f"{URL}{child.id}/dependencies/")
    assert deps.status_code == 200
    assert deps.json() == [
        {"id": first.id, "task_type": "tests::record", "status": "pending", "is_active": True},
    ]  # the cancelled one was dropped under on_dependency_failure="ignore"
    dependents = api.get(f"{URL}{first.id}/dependents/").json()
    assert dependents == [
        {"id": child.id, "task_type": "tests::noop", "status": "blocked", "is_active": True}
    ]
    assert api.get(f"{URL}777777/dependencies/").status_code == 404


def test_explain__lists_reasons(api):
    workers.register_worker("w", 1, 1, None)
    first = record.submit(n=1)
    blocked = noop.using(depends_on=[first.id], run_after=timedelta(hours=1)).submit()
    response = api.get(f"{URL}{blocked.id}/explain/")
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == blocked.id
    assert body["status"] == "blocked"
    assert [r["code"] for r in body["reasons"]] == ["dependency", "run_after"]
    assert body["reasons"][0]["data"]["task_id"] == first.id
    assert isinstance(body["reasons"][1]["data"]["run_after"], str)


def test_explain__finished_and_unknown(api):
    outcome = record.submit(n=1)
    scheduler.cancel(outcome.id)
    body = api.get(f"{URL}{outcome.id}/explain/").json()
    assert body["status"] == "cancelled"
    assert body["reasons"][0]["code"] == "finished"
    assert api.get(f"{URL}55555/explain/").status_code == 404


def test_resume__task_paused_in_the_admin(api):
    outcome = record.submit(n=1)
    from taskmill_django.store import operator

    operator.pause_tasks([outcome.id])  # what the admin's pause action calls
    response = api.post(f"{URL}{outcome.id}/resume/")
    assert response.json()["changed"] is True
    assert Task.objects.get(id=outcome.id).status == "pending"
