"""REST API: history/ and dead-letter/ (filters, retrieve, retry single and bulk)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from taskmill_django.models import Task, TaskHistoryTag

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("api_submit_types")]

HISTORY = "/taskmill/api/history/"
DEAD = "/taskmill/api/dead-letter/"


@pytest.fixture
def dead_letter(history_factory):
    """A dead-letter entry of tests::record that can be re-submitted."""

    def make(n: int = 1, **fields):
        defaults = {
            "task_type": "tests::record",
            "status": "dead_letter",
            "payload": {"n": n},
            "key": f"dead-{n}",
            "last_error": "boom",
            "retry_count": 3,
        }
        return history_factory(**{**defaults, **fields})

    return make


def ids(response) -> list[int]:
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


# --- history ---------------------------------------------------------------------------------


def test_history__newest_first_with_tags(api, history_factory):
    now = timezone.now()
    old = history_factory(finished_at=now - timedelta(hours=1))
    new = history_factory(finished_at=now)
    TaskHistoryTag.objects.create(history=old, key="env", value="prod")
    body = api.get(HISTORY).json()
    assert [r["id"] for r in body["results"]] == [new.id, old.id]
    assert body["results"][1]["tags"] == {"env": "prod"}
    assert body["count"] == 2


def test_history__a_long_list_is_counted_up_to_a_bound_then_estimated(
    api, history_factory, monkeypatch
):
    from django.db import connection

    from taskmill_django.read import counting

    monkeypatch.setattr(counting, "EXACT_UP_TO", 5)
    made = [history_factory(key=f"k{n}").id for n in range(12)]
    if connection.vendor == "postgresql":  # the statistics the estimate comes from
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE taskmill_task_history")

    pages = [api.get(HISTORY, {"limit": 5, "offset": o}).json() for o in (0, 5, 10)]
    failed = api.get(HISTORY, {"status": "failed"}).json()

    estimated = connection.vendor == "postgresql"
    assert [(p["count"], p["count_is_estimate"]) for p in pages] == [(12, estimated)] * 3
    assert sorted(r["id"] for p in pages for r in p["results"]) == made
    assert ["offset=5" in pages[0]["next"], "offset=10" in pages[1]["next"]] == [True, True]
    assert pages[2]["next"] is None
    assert (failed["count"], failed["count_is_estimate"], failed["results"]) == (0, False, [])


def test_history__filters(api, history_factory):
    now = timezone.now()
    done = history_factory(status="completed", key="k1", finished_at=now - timedelta(days=3))
    failed = history_factory(status="failed", task_type="tests::boom", key="k2")
    history_factory(status="cancelled", domain="other", task_type="other::noop", key="k3")
    assert ids(api.get(HISTORY, {"status": "failed"})) == [failed.id]
    assert set(ids(api.get(HISTORY, {"status": ["failed", "completed"]}))) == {done.id, failed.id}
    assert ids(api.get(HISTORY, {"task_type": "tests::boom"})) == [failed.id]
    assert ids(api.get(HISTORY, {"key": "k1"})) == [done.id]
    assert len(ids(api.get(HISTORY, {"domain": "other"}))) == 1
    cutoff = (now - timedelta(days=1)).isoformat()
    assert ids(api.get(HISTORY, {"finished_before": cutoff})) == [done.id]
    assert done.id not in ids(api.get(HISTORY, {"finished_after": cutoff}))


def test_history__tag_filter(api, history_factory):
    tagged = history_factory()
    history_factory()
    TaskHistoryTag.objects.create(history=tagged, key="team", value="a")
    assert ids(api.get(HISTORY, {"tag": "team:a"})) == [tagged.id]


def test_history__retrieve_and_404(api, history_factory):
    entry = history_factory(result={"rows": [1, 2]}, last_error="", duration_ms=12)
    body = api.get(f"{HISTORY}{entry.id}/").json()
    assert body["id"] == entry.id
    assert body["result"] == {"rows": [1, 2]}
    assert body["duration_ms"] == 12
    assert api.get(f"{HISTORY}424242/").status_code == 404


def test_history__active_task_404_points_to_tasks(api):
    from tests.testapp.tasks import record

    outcome = record.submit(n=1)
    response = api.get(f"{HISTORY}{outcome.id}/")
    assert response.status_code == 404
    assert f"tasks/{outcome.id}/" in response.json()["errors"]["detail"][0]


def test_history__pagination(api, history_factory):
    for _ in range(5):
        history_factory()
    body = api.get(HISTORY, {"limit": 2, "offset": 4}).json()
    assert body["count"] == 5
    assert len(body["results"]) == 1
    assert body["next"] is None


# --- dead letters ----------------------------------------------------------------------------


def test_dead_letter__lists_only_dead_letters(api, dead_letter, history_factory):
    entry = dead_letter()
    history_factory(status="failed")
    assert ids(api.get(DEAD)) == [entry.id]
    assert api.get(f"{DEAD}{entry.id}/").json()["last_error"] == "boom"


def test_dead_letter__filters(api, dead_letter):
    a = dead_letter(1)
    dead_letter(2, task_type="tests::echo", payload={"value": 2})
    assert ids(api.get(DEAD, {"task_type": "tests::record"})) == [a.id]
    assert ids(api.get(DEAD, {"key": "dead-1"})) == [a.id]


def test_dead_letter__non_dead_letter_entry_is_404(api, history_factory):
    entry = history_factory(status="completed")
    assert api.get(f"{DEAD}{entry.id}/").status_code == 404


def test_dead_letter_retry__resubmits_with_201(api, dead_letter):
    entry = dead_letter(7)
    response = api.post(f"{DEAD}{entry.id}/retry/")
    assert response.status_code == 201
    body = response.json()
    assert body["kind"] == "inserted"
    task = Task.objects.get(id=body["id"])
    assert (task.task_type, task.payload, task.key, task.retry_count) == (
        "tests::record",
        {"n": 7},
        "dead-7",
        0,
    )


def test_dead_letter_retry__records_what_the_entry_became(api, dead_letter):
    entry = dead_letter()
    new_id = api.post(f"{DEAD}{entry.id}/retry/").json()["id"]

    body = api.get(f"{DEAD}{entry.id}/").json()

    assert body["retried_as_id"] == new_id
    assert body["retried_at"] is not None


def test_dead_letter_retry__twice_is_409_and_submits_nothing(api, dead_letter):
    entry = dead_letter()
    first = api.post(f"{DEAD}{entry.id}/retry/").json()
    Task.objects.all().delete()  # the retried task finished (here: gone) meanwhile

    again = api.post(f"{DEAD}{entry.id}/retry/")

    assert again.status_code == 409
    assert again.json()["retried_as_id"] == first["id"]
    assert "already retried" in again.json()["errors"]["status"][0]
    assert not Task.objects.exists()


def test_dead_letter__filter_by_retried(api, dead_letter):
    retried, waiting = dead_letter(1), dead_letter(2)
    api.post(f"{DEAD}{retried.id}/retry/")

    assert ids(api.get(f"{DEAD}?retried=true")) == [retried.id]
    assert ids(api.get(f"{DEAD}?retried=false")) == [waiting.id]
    bad = api.get(f"{DEAD}?retried=maybe")
    assert bad.status_code == 400
    assert "retried" in bad.json()["errors"]


def test_dead_letter_bulk_retry__all_matching_leaves_out_entries_retried_before(api, dead_letter):
    retried, waiting = dead_letter(1), dead_letter(2)
    api.post(f"{DEAD}{retried.id}/retry/")
    Task.objects.all().delete()  # that retry ran and finished

    body = api.post(f"{DEAD}retry/", {"all_matching": True}, format="json").json()

    assert [r["history_id"] for r in body["results"]] == [waiting.id]
    assert list(Task.objects.values_list("key", flat=True)) == ["dead-2"]


def test_dead_letter_bulk_retry__by_ids_reports_each(api, dead_letter):
    a, b = dead_letter(1), dead_letter(2)
    response = api.post(f"{DEAD}retry/", {"ids": [a.id, b.id, 999999]}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert (body["retried"], body["failed"]) == (2, 1)
    assert [r["history_id"] for r in body["results"]] == [a.id, b.id, 999999]
    assert body["results"][0]["kind"] == "inserted"
    assert "no dead-letter entry" in body["results"][2]["error"]
    assert Task.objects.count() == 2


def test_dead_letter_bulk_retry__all_matching_the_filters(api, dead_letter):
    dead_letter(1)
    dead_letter(2)
    echo_entry = dead_letter(3, task_type="tests::echo", payload={"value": 3})
    response = api.post(
        f"{DEAD}retry/?task_type=tests::record", {"all_matching": True}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["retried"] == 2
    assert set(Task.objects.values_list("task_type", flat=True)) == {"tests::record"}
    assert echo_entry.id not in [r["history_id"] for r in response.json()["results"]]


def test_dead_letter_bulk_retry__bad_filter_is_400_and_retries_nothing(api, dead_letter):
    dead_letter(1)
    response = api.post(f"{DEAD}retry/?finished_after=never", {"all_matching": True}, format="json")
    assert response.status_code == 400
    assert "finished_after" in response.json()["errors"]
    assert not Task.objects.exists()


def test_dead_letter_bulk_retry__too_many_matching_is_400(api, dead_letter, monkeypatch):
    from taskmill_django.api import views

    monkeypatch.setattr(views, "MAX_BULK", 2)
    for n in range(3):
        dead_letter(n)
    response = api.post(f"{DEAD}retry/", {"all_matching": True}, format="json")
    assert response.status_code == 400
    assert "all_matching" in response.json()["errors"]
    assert not Task.objects.exists()


def test_dead_letter_retry__unregistered_type_is_400(api, dead_letter):
    entry = dead_letter(1, task_type="gone::away")
    response = api.post(f"{DEAD}{entry.id}/retry/")
    assert response.status_code == 400
    assert "task_type" in response.json()["errors"]
