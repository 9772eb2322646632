"""REST API: snapshot, domains, stats, tags, recurring schedules, groups, workers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from taskmill_django import RecurringSchedule, scheduler
from taskmill_django.models import PausedGroup, Schedule, Worker
from taskmill_django.store import workers
from tests.db.conftest import claim_one
from tests.testapp.tasks import noop, other_noop, record

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("api_submit_types")]

API = "/taskmill/api/"


# --- snapshot, domains, stats, workers -------------------------------------------------------


def test_snapshot__counts_running_and_workers(api):
    worker_id = workers.register_worker("w1", 10, 4, None)
    record.submit_batch([{"n": n} for n in range(3)])
    other_noop.submit()
    running = claim_one(domains=["tests"], worker_id=worker_id)
    scheduler.pause_group("g1")
    response = api.get(f"{API}snapshot/")
    assert response.status_code == 200
    body = response.json()
    assert (body["pending_count"], body["running_count"]) == (3, 1)
    assert body["counts_by_domain"] == {
        "tests": {"pending": 2, "running": 1},
        "other": {"pending": 1},
    }
    assert [r["id"] for r in body["running"]] == [running.id]
    assert body["running"][0]["worker_id"] == str(worker_id)
    assert [w["name"] for w in body["workers"]] == ["w1"]
    assert body["workers"][0]["is_alive"] is True
    assert [(g["group"], g["paused_until"], g["pending_count"]) for g in body["paused_groups"]] == [
        ("g1", None, 0)
    ]
    assert [(p["task_id"], p["percent"]) for p in body["progress"]] == [(running.id, 0.0)]
    assert body["is_paused"] is False


def test_domain_snapshot__scoped_and_404(api):
    record.submit(n=1)
    other_noop.submit()
    scheduler.domain("other").pause()
    body = api.get(f"{API}domains/other/snapshot/").json()
    assert body["pending_count"] == 1
    assert body["counts_by_domain"] == {"other": {"pending": 1}}
    assert body["is_paused"] is True
    assert api.get(f"{API}domains/nowhere/snapshot/").status_code == 404


def test_domains__list_and_retrieve(api):
    body = api.get(f"{API}domains/").json()
    names = [d["name"] for d in body["results"]]
    assert {"tests", "other"} <= set(names)
    tests = api.get(f"{API}domains/tests/").json()
    assert "tests::record" in tests["task_types"]
    assert tests["default_priority"] == 128


def test_stats__one_type_and_every_type(api, history_factory):
    history_factory(task_type="tests::record", duration_ms=100, read_bytes=10, write_bytes=30)
    history_factory(task_type="tests::record", status="failed")
    body = api.get(f"{API}stats/", {"task_type": "tests::record"}).json()
    (stats,) = body["results"]
    assert stats["task_type"] == "tests::record"
    assert stats["count"] == 2
    assert stats["failure_rate"] == 0.5
    assert stats["avg_duration_ms"] == 100.0
    assert stats["avg_throughput"] == 400.0
    every = api.get(f"{API}stats/").json()["results"]
    assert {"tests::record", "tests::noop"} <= {s["task_type"] for s in every}


def test_workers__list_with_domains_and_liveness(api):
    workers.register_worker("alive", 1, 2, ["tests"], claim_ahead=2)
    dead = workers.register_worker("dead", 2, 1, None)
    Worker.objects.filter(id=dead).update(heartbeat_at=timezone.now() - timedelta(minutes=10))
    body = api.get(f"{API}workers/").json()
    assert body["count"] == 2
    by_name = {w["name"]: w for w in body["results"]}
    assert by_name["alive"]["is_alive"] is True
    assert by_name["alive"]["domains"] == ["tests"]
    assert (by_name["alive"]["concurrency"], by_name["alive"]["claim_ahead"]) == (2, 2)
    assert by_name["dead"]["is_alive"] is False
    assert by_name["dead"]["domains"] is None
    assert by_name["dead"]["heartbeat_age_seconds"] > 500


# --- tags ------------------------------------------------------------------------------------


def test_tags__keys_values_counts(api):
    record.using(tags={"customer": "acme", "env": "prod"}).submit(n=1)
    record.using(tags={"customer": "acme"}).submit(n=2)
    record.using(tags={"customer": "zeta", "cluster": "eu"}).submit(n=3)
    other_noop.using(tags={"customer": "other-domain"}).submit()
    claim_one(domains=["tests"])
    assert api.get(f"{API}tags/keys/", {"prefix": "c"}).json() == {"keys": ["cluster", "customer"]}
    assert api.get(f"{API}tags/keys/").json()["keys"] == ["cluster", "customer", "env"]
    values = api.get(f"{API}tags/values/", {"key": "customer"}).json()
    assert values == {"key": "customer", "values": ["acme", "other-domain", "zeta"]}
    scoped = api.get(f"{API}tags/values/", {"key": "customer", "domain": "tests"}).json()
    assert scoped["values"] == ["acme", "zeta"]
    counts = api.get(f"{API}tags/counts/", {"key": "customer"}).json()
    assert counts == {
        "key": "customer",
        "status": None,
        "counts": {"acme": 2, "other-domain": 1, "zeta": 1},
    }
    pending = api.get(f"{API}tags/counts/", {"key": "customer", "status": "pending"}).json()
    assert pending["counts"] == {"acme": 1, "other-domain": 1, "zeta": 1}


# --- recurring -------------------------------------------------------------------------------


@pytest.fixture
def schedule_id() -> int:
    outcome = noop.using(
        recurring=RecurringSchedule(interval=3600, initial_delay=60), key="hourly"
    ).submit()
    assert outcome.schedule_id is not None
    return outcome.schedule_id


def test_recurring__list_and_retrieve(api, schedule_id):
    body = api.get(f"{API}recurring/").json()
    assert body["count"] == 1
    (info,) = body["results"]
    assert info["id"] == schedule_id
    assert info["interval_seconds"] == 3600.0
    assert info["task_type"] == "tests::noop"
    assert info["is_paused"] is False
    assert api.get(f"{API}recurring/{schedule_id}/").json() == info
    assert api.get(f"{API}recurring/", {"domain": "other"}).json()["count"] == 0
    assert api.get(f"{API}recurring/", {"task_type": "tests::noop"}).json()["count"] == 1


def test_recurring__pause_resume_cancel(api, schedule_id):
    paused = api.post(f"{API}recurring/{schedule_id}/pause/")
    assert paused.status_code == 200
    assert paused.json()["is_paused"] is True
    assert Schedule.objects.get(id=schedule_id).is_paused
    resumed = api.post(f"{API}recurring/{schedule_id}/resume/").json()
    assert resumed["is_paused"] is False
    cancelled = api.post(f"{API}recurring/{schedule_id}/cancel/")
    assert cancelled.json() == {"id": schedule_id, "cancelled": True}
    assert not Schedule.objects.exists()
    assert api.post(f"{API}recurring/{schedule_id}/cancel/").status_code == 404


# --- groups ----------------------------------------------------------------------------------


def test_groups__lists_groups_of_active_tasks_and_of_the_policy(api):
    record.using(group="alpha").submit(n=1)
    record.using(group="alpha").submit(n=2)
    record.using(group="beta").submit(n=3)
    claim_one()
    scheduler.set_group_limit("gamma", 4)
    body = api.get(f"{API}groups/").json()
    assert [g["name"] for g in body["results"]] == ["alpha", "beta", "gamma"]
    alpha = body["results"][0]
    assert alpha["counts"] == {"running": 1, "pending": 1}
    assert alpha["limit"] is None
    assert body["results"][2] == {
        "name": "gamma",
        "counts": {},
        "limit": 4,
        "is_paused": False,
        "paused_until": None,
        "rate_limit": None,
        "weight": None,
    }


def test_groups__pause_until_and_resume(api):
    until = datetime(2099, 5, 1, 12, 0, tzinfo=UTC)
    response = api.post(f"{API}groups/batch/pause/", {"until": until.isoformat()}, format="json")
    assert response.status_code == 200
    assert response.json()["is_paused"] is True
    assert PausedGroup.objects.get(group_key="batch").paused_until == until
    assert api.post(f"{API}groups/batch/pause/", {}, format="json").json()["paused_until"] is None
    resumed = api.post(f"{API}groups/batch/resume/")
    assert resumed.json()["is_paused"] is False
    assert not PausedGroup.objects.exists()


def test_groups__set_and_remove_limit(api):
    body = api.post(f"{API}groups/batch/limit/", {"limit": 3}, format="json").json()
    assert body["limit"] == 3
    assert api.get(f"{API}groups/batch/").json()["limit"] == 3
    removed = api.delete(f"{API}groups/batch/limit/")
    assert removed.status_code == 200
    assert removed.json()["limit"] is None


def test_groups__rate_limit_per_minute_with_burst_and_removal(api):
    body = api.post(
        f"{API}groups/batch/rate-limit/",
        {"rate": 120, "per": "minute", "burst": 5},
        format="json",
    ).json()
    assert body["rate_limit"] == {"rate": 2.0, "burst": 5.0, "tokens": None}
    assert api.delete(f"{API}groups/batch/rate-limit/").json()["rate_limit"] is None


def test_groups__weight(api):
    assert (
        api.post(f"{API}groups/batch/weight/", {"weight": 3}, format="json").json()["weight"] == 3.0
    )
    assert api.delete(f"{API}groups/batch/weight/").json()["weight"] is None


def test_groups__names_with_dots_and_spaces(api):
    record.using(group="tenant.42 eu").submit(n=1)
    body = api.get(f"{API}groups/tenant.42 eu/").json()
    assert body["counts"] == {"pending": 1}


# --- the browsable API -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "",
        "tasks/",
        "tasks/{id}/",
        "tasks/{id}/explain/",
        "history/",
        "dead-letter/",
        "snapshot/",
        "stats/",
        "tags/keys/",
        "groups/",
        "groups/g/",
        "recurring/",
        "workers/",
        "domains/",
        "domains/tests/snapshot/",
    ],
)
def test_browsable_api__pages_render_as_html(api, url):
    task = record.using(group="g", tags={"a": "b"}).submit(n=1)
    # The filtered lists render their filter form too; other endpoints take no "tag".
    query = {"tag": "a:b"} if url in ("tasks/", "history/", "dead-letter/") else {}
    response = api.get(f"{API}{url.format(id=task.id)}", query, HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.parametrize("missing", ["rest_framework", "django_filters"])
def test_browsable_api__without_its_apps_installed_answers_json(api, settings, missing):
    settings.INSTALLED_APPS = [app for app in settings.INSTALLED_APPS if app != missing]
    record.submit(n=1)
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    response = api.get(f"{API}tasks/", HTTP_ACCEPT=browser)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["count"] == 1


def test_unknown_path_under_the_api__json_404(api):
    response = api.get(f"{API}nothing/here/")
    assert response.status_code == 404
    assert "no endpoint" in response.json()["errors"]["detail"][0]
    assert "slash" in api.get(f"{API}tasks").json()["errors"]["detail"][0]
