"""Admin pages render for the people allowed to see them, and show tasks readably."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django.utils.html import strip_tags

from taskmill_django.models import DeadLetter, Schedule, Task
from taskmill_django.store import workers
from tests.db.conftest import claim_one, finish
from tests.testapp.tasks import noop, other_noop, record

pytestmark = pytest.mark.django_db

VIEW_PERMISSIONS = (
    "view_task",
    "view_taskhistory",
    "view_deadletter",
    "view_worker",
    "view_schedule",
)


@pytest.fixture
def admin_client_() -> Client:
    user = User.objects.create_superuser("root", "root@example.com", "pw")
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def viewer_client() -> Client:
    """A staff user who may look at everything but change nothing."""
    user = User.objects.create_user("viewer", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="taskmill_django", codename__in=VIEW_PERMISSIONS
        )
    )
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def family() -> dict[str, int]:
    """A parent, a child, a dependency edge, tags, a finished run with the same key."""
    dep = record.using(tags={"customer": "acme", "region": "eu"}).submit(n=1)
    blocked = record.using(depends_on=[dep.id], label="after dep").submit(n=2)
    parent = record.using(label="parent").submit(n=3)
    child = noop.using(parent=parent.id).submit(x=1)
    return {"dep": dep.id, "blocked": blocked.id, "parent": parent.id, "child": child.id}


@pytest.fixture
def dead_entry(history_factory) -> int:
    row = history_factory(
        task_type="tests::record",
        status="dead_letter",
        payload={"n": 7},
        last_error="relay timed out",
        label="dead one",
    )
    return row.id


def _pages(ids: dict[str, int]) -> list[str]:
    return [
        reverse("admin:app_list", args=["taskmill_django"]),
        reverse("admin:taskmill_django_dashboard"),
        reverse("admin:taskmill_django_dashboard_data"),
        reverse("admin:taskmill_django_tags"),
        reverse("admin:taskmill_django_controls"),
        reverse("admin:taskmill_django_task_changelist"),
        reverse("admin:taskmill_django_task_change", args=[ids["task"]]),
        reverse("admin:taskmill_django_taskhistory_changelist"),
        reverse("admin:taskmill_django_taskhistory_change", args=[ids["history"]]),
        reverse("admin:taskmill_django_deadletter_changelist"),
        reverse("admin:taskmill_django_deadletter_change", args=[ids["history"]]),
        reverse("admin:taskmill_django_worker_changelist"),
        reverse("admin:taskmill_django_schedule_changelist"),
    ]


@pytest.fixture
def page_ids(dead_entry) -> dict[str, int]:
    return {"task": record.submit(n=99).id, "history": dead_entry}


def test_admin_pages__anonymous_is_sent_to_login(client, page_ids):
    for url in _pages(page_ids):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("admin:login")), url


def test_admin_pages__viewer_sees_every_page(viewer_client, page_ids):
    for url in _pages(page_ids):
        assert viewer_client.get(url).status_code == 200, url


def test_admin_pages__superuser_sees_every_page(admin_client_, page_ids):
    for url in _pages(page_ids):
        assert admin_client_.get(url).status_code == 200, url


def test_admin_pages__staff_without_permissions_is_refused(page_ids):
    user = User.objects.create_user("nobody", is_staff=True)
    client = Client()
    client.force_login(user)
    assert client.get(reverse("admin:taskmill_django_dashboard")).status_code == 403
    assert client.get(reverse("admin:taskmill_django_dashboard_data")).status_code == 403
    assert client.get(reverse("admin:taskmill_django_task_changelist")).status_code == 403


def test_admin_app_index__links_the_dashboard(admin_client_):
    page = admin_client_.get(reverse("admin:app_list", args=["taskmill_django"]))
    assert reverse("admin:taskmill_django_dashboard") in page.content.decode()


def test_admin_task_list__shows_filters_and_rows(admin_client_):
    record.using(label="visible task").submit(n=1)
    page = admin_client_.get(reverse("admin:taskmill_django_task_changelist")).content.decode()
    assert "visible task" in page
    for title in ("By status", "By domain", "By task type", "By priority tier", "By tags"):
        assert title in page


def test_admin_task_list__shows_the_aged_priority(admin_client_, settings):
    settings.TASKMILL = {
        **settings.TASKMILL,
        "PRIORITY_AGING": {"grace_period": 10, "interval": 10, "ceiling": 64},
    }
    task_id = record.using(priority=192).submit(n=1).id
    Task.objects.filter(id=task_id).update(created_at=timezone.now() - timedelta(seconds=1000))

    page = admin_client_.get(reverse("admin:taskmill_django_task_changelist")).content.decode()

    assert "192 (background), aged to 93" in page


def _listed(client: Client, url_name: str, query: str) -> set[int]:
    response = client.get(reverse(url_name) + query)
    assert response.status_code == 200
    return {obj.pk for obj in response.context["cl"].result_list}


def test_admin_task_list__filters(admin_client_, family):
    url = "admin:taskmill_django_task_changelist"
    other = other_noop.submit()
    assert _listed(admin_client_, url, "?status=blocked") == {family["blocked"]}
    assert _listed(admin_client_, url, "?domain=other") == {other.id}
    assert _listed(admin_client_, url, "?task_type=tests::noop") == {family["child"]}
    assert other.id in _listed(admin_client_, url, "?tier=high")
    assert family["dep"] not in _listed(admin_client_, url, "?tier=high")


def test_admin_task_list__tag_filters(admin_client_, family):
    url = "admin:taskmill_django_task_changelist"
    assert _listed(admin_client_, url, "?tag=customer%3Aacme") == {family["dep"]}
    assert _listed(admin_client_, url, "?tag=customer%3Aother") == set()
    assert _listed(admin_client_, url, "?tag=region") == {family["dep"]}
    assert _listed(admin_client_, url, "?tag_prefix=cust") == {family["dep"]}
    both = "?tag=customer%3Aacme&tag=region%3Aeu"
    assert _listed(admin_client_, url, both) == {family["dep"]}


def test_admin_task_list__malformed_tag_is_an_invalid_filter(admin_client_, family):
    url = reverse("admin:taskmill_django_task_changelist")
    response = admin_client_.get(url, {"tag": "customer=acme"})
    assert response.status_code == 302
    assert response["Location"].endswith("?e=1")


@pytest.mark.parametrize(
    "name", ["task_changelist", "taskhistory_changelist", "deadletter_changelist"]
)
@pytest.mark.parametrize("query", [{"group": "\x00"}, {"q": "a\x00"}, {"tag_prefix": "\x00"}])
def test_admin_lists__nul_in_a_filter_is_an_invalid_filter(admin_client_, name, query):
    response = admin_client_.get(reverse(f"admin:taskmill_django_{name}"), query)
    assert response.status_code == 302
    assert response["Location"].endswith("?e=1")


def test_admin_task_detail__tag_links_use_the_shared_filter_syntax(admin_client_, family):
    page = admin_client_.get(reverse("admin:taskmill_django_task_change", args=[family["dep"]]))
    assert "?tag=customer%3Aacme" in page.content.decode()


def test_admin_task_list__group_and_error_filters(admin_client_):
    url = "admin:taskmill_django_task_changelist"
    grouped = record.using(group="tenant-1").submit(n=1)
    plain = record.submit(n=2)
    Task.objects.filter(id=plain.id).update(last_error="boom")
    assert _listed(admin_client_, url, "?group=tenant-1") == {grouped.id}
    assert _listed(admin_client_, url, "?group=-") == {plain.id}
    assert _listed(admin_client_, url, "?has_error=yes") == {plain.id}


def test_admin_task_list__search_by_key_label_and_id(admin_client_):
    url = "admin:taskmill_django_task_changelist"
    a = record.using(label="nightly export", key="export-1").submit(n=1)
    b = record.submit(n=2)
    key = Task.objects.get(id=a.id).key
    assert _listed(admin_client_, url, f"?q={key}") == {a.id}
    assert _listed(admin_client_, url, "?q=nightly") == {a.id}
    assert _listed(admin_client_, url, f"?q=%23{b.id}") == {b.id}


def test_admin_task_detail__payload_tags_and_links(admin_client_, family):
    page = admin_client_.get(
        reverse("admin:taskmill_django_task_change", args=[family["dep"]])
    ).content.decode()
    assert "&quot;n&quot;: 1" in page  # pretty JSON payload
    assert "customer" in page and "acme" in page
    blocked_url = reverse("admin:taskmill_django_task_change", args=[family["blocked"]])
    assert blocked_url in page  # "needed by"
    parent_page = admin_client_.get(
        reverse("admin:taskmill_django_task_change", args=[family["parent"]])
    ).content.decode()
    assert reverse("admin:taskmill_django_task_change", args=[family["child"]]) in parent_page
    child_page = admin_client_.get(
        reverse("admin:taskmill_django_task_change", args=[family["child"]])
    ).content.decode()
    assert reverse("admin:taskmill_django_task_change", args=[family["parent"]]) in child_page


def test_admin_task_detail__is_read_only_with_action_buttons(admin_client_):
    task = record.submit(n=1)
    page = admin_client_.get(reverse("admin:taskmill_django_task_change", args=[task.id]))
    html = page.content.decode()
    assert 'name="_save"' not in html
    assert 'value="cancel_tasks"' in html
    assert "explanation" in html


def test_admin_task_detail__viewer_gets_no_action_buttons(viewer_client):
    task = record.submit(n=1)
    html = viewer_client.get(
        reverse("admin:taskmill_django_task_change", args=[task.id])
    ).content.decode()
    assert 'value="cancel_tasks"' not in html


def test_admin_task_detail__finished_task_redirects_to_its_history(admin_client_):
    outcome = record.submit(n=1)
    finish(claim_one())
    response = admin_client_.get(reverse("admin:taskmill_django_task_change", args=[outcome.id]))
    assert response.status_code == 302
    assert response["Location"] == reverse(
        "admin:taskmill_django_taskhistory_change", args=[outcome.id]
    )


def test_admin_history_detail__active_task_redirects_to_its_page(admin_client_):
    outcome = record.submit(n=1)
    response = admin_client_.get(
        reverse("admin:taskmill_django_taskhistory_change", args=[outcome.id])
    )
    assert response["Location"] == reverse("admin:taskmill_django_task_change", args=[outcome.id])


def test_admin_history_detail__shows_error_result_and_same_key(admin_client_):
    first = record.using(tags={"batch": "7"}).submit(n=5)
    finish(claim_one(), result={"answer": 42})
    again = record.submit(n=5)  # same key: a new active task
    page = admin_client_.get(
        reverse("admin:taskmill_django_taskhistory_change", args=[first.id])
    ).content.decode()
    assert "&quot;answer&quot;: 42" in page
    assert "batch" in page
    assert reverse("admin:taskmill_django_task_change", args=[again.id]) in page


def test_admin_history_list__filters(admin_client_, history_factory):
    url = "admin:taskmill_django_taskhistory_changelist"
    ok = history_factory(status="completed", group_key="g1")
    bad = history_factory(status="failed", last_error="nope", priority=0)
    assert _listed(admin_client_, url, "?status=failed") == {bad.id}
    assert _listed(admin_client_, url, "?has_error=yes") == {bad.id}
    assert _listed(admin_client_, url, "?group=g1") == {ok.id}
    assert _listed(admin_client_, url, "?tier=realtime") == {bad.id}
    assert _listed(admin_client_, url, f"?q={bad.key}") == {bad.id}


def test_admin_history_list__tag_filter(admin_client_):
    tagged = record.using(tags={"customer": "acme"}).submit(n=1)
    finish(claim_one())
    record.submit(n=2)
    finish(claim_one())
    url = "admin:taskmill_django_taskhistory_changelist"
    assert _listed(admin_client_, url, "?tag=customer%3Aacme") == {tagged.id}
    assert _listed(admin_client_, url, "?tag_prefix=cus") == {tagged.id}


def test_admin_dead_letter_list__only_dead_letters(admin_client_, history_factory, dead_entry):
    history_factory(status="failed")
    assert _listed(admin_client_, "admin:taskmill_django_deadletter_changelist", "") == {dead_entry}
    assert DeadLetter.objects.count() == 1


def test_admin_dead_letter_detail__offers_retry(admin_client_, dead_entry):
    html = admin_client_.get(
        reverse("admin:taskmill_django_deadletter_change", args=[dead_entry])
    ).content.decode()
    assert 'value="retry_entries"' in html
    assert "relay timed out" in html


def test_admin_workers__list_and_detail(admin_client_):
    worker_id = workers.register_worker("w-main", 4242, 4, ["tests"])
    task = record.submit(n=1)
    claim_one(worker_id=worker_id)
    listing = admin_client_.get(reverse("admin:taskmill_django_worker_changelist"))
    assert "w-main" in listing.content.decode()
    assert "alive" in listing.content.decode()
    detail = admin_client_.get(reverse("admin:taskmill_django_worker_change", args=[worker_id]))
    assert reverse("admin:taskmill_django_task_change", args=[task.id]) in detail.content.decode()


def test_admin_schedules__list_and_detail(admin_client_):
    schedule = Schedule.objects.create(
        task_type="tests::record", domain="tests", payload={"n": 1}, interval_seconds=60
    )
    listing = admin_client_.get(reverse("admin:taskmill_django_schedule_changelist"))
    assert "every 1 min" in listing.content.decode()
    detail = admin_client_.get(reverse("admin:taskmill_django_schedule_change", args=[schedule.id]))
    html = detail.content.decode()
    assert 'value="pause_schedules"' in html


def test_admin_tag_browser__keys_values_and_links(admin_client_):
    record.using(tags={"customer": "acme"}).submit(n=1)
    record.using(tags={"customer": "acme"}).submit(n=2)
    record.using(tags={"customer": "globex", "cost_center": "7"}).submit(n=3)
    url = reverse("admin:taskmill_django_tags")
    keys = admin_client_.get(url, {"prefix": "cu"}).context["keys"]
    assert [(k["key"], k["count"]) for k in keys] == [("customer", 3)]
    page = admin_client_.get(url, {"prefix": "c", "key": "customer"})
    values = page.context["values"]
    assert [(v["value"], v["count"]) for v in values] == [("acme", 2), ("globex", 1)]
    assert "tag=customer%3Aacme" in values[0]["tasks_url"]


def test_admin_tag_browser__history_source(admin_client_):
    record.using(tags={"team": "data"}).submit(n=1)
    finish(claim_one())
    page = admin_client_.get(reverse("admin:taskmill_django_tags"), {"source": "history"})
    assert [k["key"] for k in page.context["keys"]] == ["team"]
    assert "taskhistory" in page.context["keys"][0]["tasks_url"]


def test_admin_controls__viewer_sees_no_forms(viewer_client):
    html = viewer_client.get(reverse("admin:taskmill_django_controls")).content.decode()
    assert "can see these settings but not change them" in html
    assert 'name="op"' not in html


def test_admin_dashboard__renders_snapshot_charts_and_running(admin_client_):
    worker_id = workers.register_worker("w-dash", 1, 2, None)
    record.using(group="g-dash").submit(n=1)
    noop.submit(x=1)
    claim_one(worker_id=worker_id)
    Task.objects.filter(status="running").update(progress=0.4, progress_message="halfway")
    finish_one = record.submit(n=2)
    finish(claim_one(), duration_ms=120)
    html = admin_client_.get(reverse("admin:taskmill_django_dashboard")).content.decode()
    assert html.count("<svg") >= 4
    assert 'style="width:40.0%"' in html
    assert "w-dash" in html
    assert "g-dash" in html
    assert "tests::record" in html
    assert reverse("admin:taskmill_django_dashboard_data") in html
    assert "taskmill_django/dashboard.js" in html
    assert finish_one.id


def test_admin_dashboard__shows_a_workers_measured_io(admin_client_):
    worker_id = workers.register_worker("w-io", 1, 2, None)
    io = {
        "disk_write": {"rate": 5_000_000.0, "capacity": 1_000_000.0, "saturated": True},
        "net_rx": {"rate": 0.0, "capacity": None, "saturated": False},
    }
    workers.heartbeat(worker_id, 0, io=io)

    html = admin_client_.get(reverse("admin:taskmill_django_dashboard")).content.decode()

    assert "disk_write 4.8\xa0MB/s of 976.6\xa0KB/s (saturated)" in html
    assert "net_rx" not in html  # nothing moved, no capacity: not worth a line


def test_admin_dashboard_data__json_numbers_and_panels(admin_client_):
    record.submit(n=1)
    record.submit(n=2)
    finish(claim_one(), duration_ms=50)
    response = admin_client_.get(reverse("admin:taskmill_django_dashboard_data"))
    assert response["Content-Type"] == "application/json"
    body = response.json()
    data = body["data"]
    assert data["totals"]["pending"] == 1
    assert data["completed_count"] == 1
    assert len(data["queue_depth"]) == data["window_minutes"] == 60
    # Both were unfinished when the second arrived. Find that minute from the window's start:
    # the request itself may fall in the next minute.
    submitted = Task.objects.get().created_at
    start = datetime.fromisoformat(data["window_start"])
    assert data["queue_depth"][int((submitted - start).total_seconds() // 60)] == 2
    tests_series = next(s for s in data["throughput"] if s["name"] == "tests")
    assert sum(tests_series["completed"]) == 1
    assert set(body["panels"]) == {
        "summary",
        "charts",
        "running",
        "domains",
        "workers",
        "limits",
        "schedules",
        "types",
    }
    assert "<svg" in body["panels"]["charts"]


def test_admin_dashboard__lists_the_longest_running_and_counts_all(admin_client_, monkeypatch):
    from taskmill_django.read import dashboard

    monkeypatch.setattr(dashboard, "RUNNING_SHOWN", 2)
    for n in range(3):
        record.submit(n=n)
    first, second, third = claim_one(), claim_one(), claim_one()

    body = admin_client_.get(reverse("admin:taskmill_django_dashboard_data")).json()

    assert [r["id"] for r in body["data"]["running"]] == [first.id, second.id]
    assert body["data"]["snapshot"]["running_count"] == 3
    panel = body["panels"]["running"]
    assert "Running now (3)" in panel
    assert "?status=running" in panel
    assert f'data-task="{third.id}"' not in panel


def test_admin_dashboard_data__worker_id_is_json(admin_client_):
    worker_id = workers.register_worker("w-json", 1, 1, None)
    record.submit(n=1)
    claim_one(worker_id=worker_id)
    data = admin_client_.get(reverse("admin:taskmill_django_dashboard_data")).json()["data"]
    (running,) = data["running"]
    assert running["worker_name"] == "w-json"
    assert uuid.UUID(running["worker_id"]) == worker_id


def test_admin_history_list__finished_children_by_parent(admin_client_, history_factory):
    child = history_factory(parent_id=4242)
    history_factory()
    url = "admin:taskmill_django_taskhistory_changelist"
    assert _listed(admin_client_, url, "?parent_id=4242") == {child.id}


def test_admin_history_page__lists_finished_children_and_links_none_without(
    admin_client_, history_factory
):
    parent = history_factory()
    child = history_factory(parent_id=parent.id)

    def children_of(row_id: int) -> str:
        page = admin_client_.get(
            reverse("admin:taskmill_django_taskhistory_change", args=[row_id])
        ).content.decode()
        return page.split("field-children_display", 1)[1].split("field-", 1)[0]

    assert f"/taskhistory/{child.id}/change/" in children_of(parent.id)
    assert "href" not in children_of(child.id)


def buttons_on_page(client: Client, task_id: int) -> list[str]:
    page = client.get(reverse("admin:taskmill_django_task_change", args=[task_id]))
    return [label for _, label, _ in page.context["object_actions"]]


@pytest.mark.parametrize(
    ("state", "buttons"),
    [
        ({}, ["Cancel", "Pause", "Change priority…"]),
        ({"status": "paused", "pause_reason": "manual"}, ["Cancel", "Resume", "Change priority…"]),
        ({"status": "paused", "pause_reason": "preempted"}, ["Cancel", "Change priority…"]),
        ({"status": "blocked"}, ["Cancel", "Change priority…"]),
    ],
)
def test_admin_task_page__pause_and_resume_offered_by_state(admin_client_, state, buttons):
    task_id = record.submit(n=1).id
    Task.objects.filter(id=task_id).update(**state)

    assert buttons_on_page(admin_client_, task_id) == buttons


def test_admin_task_page__running_task_asked_to_pause_offers_resume(admin_client_):
    record.submit(n=1)
    task = claim_one()
    assert buttons_on_page(admin_client_, task.id) == ["Cancel", "Pause", "Change priority…"]

    admin_client_.post(
        reverse("admin:taskmill_django_task_changelist"),
        {"action": "pause_tasks", "index": "0", "_selected_action": [task.id]},
    )

    assert buttons_on_page(admin_client_, task.id) == ["Cancel", "Resume", "Change priority…"]


def test_admin_object_pages__times_to_the_second(admin_client_, history_factory):
    finished = timezone.now().replace(microsecond=0) - timedelta(minutes=3, seconds=7)
    row = history_factory(finished_at=finished)

    page = admin_client_.get(
        reverse("admin:taskmill_django_taskhistory_change", args=[row.id])
    ).content.decode()

    assert timezone.localtime(finished).strftime("%Y-%m-%d %H:%M:%S") in page


def test_admin_history_list__a_long_list_is_counted_up_to_a_bound_then_estimated(
    admin_client_, history_factory, monkeypatch
):
    from django.db import connection

    from taskmill_django.read import counting

    monkeypatch.setattr(counting, "EXACT_UP_TO", 5)
    for n in range(12):
        history_factory(key=f"k{n}")
    if connection.vendor == "postgresql":  # the statistics the estimate comes from
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE taskmill_task_history")
    url = reverse("admin:taskmill_django_taskhistory_changelist")

    response = admin_client_.get(url)

    assert response.status_code == 200
    paginator = response.context["cl"].paginator
    estimated = connection.vendor == "postgresql"
    assert (paginator.count, paginator.is_estimate) == (12, estimated)
    assert response.context["cl"].result_count == 12
    # The page says when the number is an estimate, and pages by it all the same.
    page = response.content.decode()
    paginator_line = re.search(r'class="paginator"[^>]*>(.*?)</(?:p|nav)>', page, re.S)
    assert paginator_line is not None
    words = " ".join(strip_tags(paginator_line.group(1)).split())
    assert words.endswith("12 task history") and ("about 12" in words) == estimated, words
