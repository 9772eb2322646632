"""Admin actions and controls: they call the core, honour the change permission, and are logged."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from taskmill_django import scheduler
from taskmill_django.admin import history as history_admin
from taskmill_django.models import PausedGroup, Schedule, SchedulerSetting, Task, TaskHistory
from taskmill_django.store import control
from tests.db.conftest import claim_one
from tests.testapp.tasks import record

pytestmark = pytest.mark.django_db

TASKS = "admin:taskmill_django_task_changelist"
DEAD = "admin:taskmill_django_deadletter_changelist"
SCHEDULES = "admin:taskmill_django_schedule_changelist"
CONTROLS = "admin:taskmill_django_controls"


@pytest.fixture
def superuser() -> User:
    return User.objects.create_superuser("root", "root@example.com", "pw")


@pytest.fixture
def operator(superuser) -> Client:
    client = Client()
    client.force_login(superuser)
    return client


@pytest.fixture
def viewer() -> Client:
    user = User.objects.create_user("viewer", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="taskmill_django", codename__startswith="view_"
        )
    )
    client = Client()
    client.force_login(user)
    return client


def act(client: Client, url_name: str, action: str, ids: list[int], **extra: str):
    return client.post(
        reverse(url_name), {"action": action, "_selected_action": ids, "index": 0, **extra}
    )


def texts(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def logged(model: str) -> list[LogEntry]:
    return list(LogEntry.objects.filter(content_type__model=model).order_by("id"))


# --- active tasks ----------------------------------------------------------------------------


def test_admin_cancel__moves_tasks_to_history_and_logs(operator, superuser):
    a, b, keep = (record.submit(n=n).id for n in range(3))
    response = act(operator, TASKS, "cancel_tasks", [a, b])
    assert response.status_code == 302
    assert set(TaskHistory.objects.values_list("id", "status")) == {
        (a, "cancelled"),
        (b, "cancelled"),
    }
    assert Task.objects.filter(id=keep).exists()
    entries = logged("task")
    assert {int(e.object_id) for e in entries} == {a, b}
    assert all(e.user_id == superuser.pk and e.change_message == "Cancelled." for e in entries)


def test_admin_cancel__running_task_gets_a_request(operator):
    task = record.submit(n=1)
    claim_one()
    act(operator, TASKS, "cancel_tasks", [task.id])
    assert Task.objects.get(id=task.id).cancel_reason == "cancelled"


def test_admin_actions__viewer_is_refused(viewer):
    task = record.submit(n=1)
    for action in ("cancel_tasks", "pause_tasks", "change_priority"):
        response = act(viewer, TASKS, action, [task.id], priority="0", apply="1")
        assert response.status_code in (200, 302)
    row = Task.objects.get(id=task.id)
    assert (row.status, row.priority) == ("pending", 128)
    assert not LogEntry.objects.exists()


def test_admin_actions__viewer_sees_no_actions(viewer):
    record.submit(n=1)
    response = viewer.get(reverse(TASKS))
    assert response.context["action_form"] is None or not response.context["cl"].actions


def test_admin_pause_and_resume(operator):
    pending = record.submit(n=1).id
    running = record.submit(n=2).id
    blocked = record.submit(n=3).id
    Task.objects.filter(id=running).update(status="running")
    Task.objects.filter(id=blocked).update(status="blocked")
    response = act(operator, TASKS, "pause_tasks", [pending, running, blocked])
    assert "Paused 2 task(s). 1 left as they were" in texts(response)[0]
    assert "next heartbeat" in texts(response)[1]
    row = Task.objects.get(id=pending)
    assert (row.status, row.pause_reason) == ("paused", "manual")
    row = Task.objects.get(id=running)
    assert (row.status, row.cancel_reason) == ("running", "manual")  # its worker acts on it
    response = act(operator, TASKS, "resume_tasks", [pending, running])
    assert Task.objects.get(id=pending).status == "pending"
    assert Task.objects.get(id=running).cancel_reason == ""  # the request is withdrawn
    assert sorted(e.change_message for e in logged("task")) == [
        "Pause requested (running).",
        "Paused.",
        "Resumed.",
        "Resumed.",
    ]


def test_admin_resume__leaves_preempted_tasks_alone(operator):
    task = record.submit(n=1).id
    Task.objects.filter(id=task).update(status="paused", pause_reason="preempted")
    response = act(operator, TASKS, "resume_tasks", [task])
    assert "preempted" in texts(response)[0]
    assert Task.objects.get(id=task).status == "paused"


def test_admin_change_priority__shows_form_then_applies(operator):
    ids = [record.submit(n=n).id for n in range(2)]
    page = act(operator, TASKS, "change_priority", ids)
    assert page.status_code == 200
    assert "Change priority" in page.content.decode()
    done = operator.post(
        reverse(TASKS),
        {"action": "change_priority", "_selected_action": ids, "priority": "7", "apply": "1"},
    )
    assert done.status_code == 302
    assert set(Task.objects.values_list("priority", flat=True)) == {7}
    assert [e.change_message for e in logged("task")] == ["Priority set to 7."] * 2


def test_admin_change_priority__named_tier(operator):
    task = record.submit(n=1).id
    operator.post(
        reverse(TASKS),
        {"action": "change_priority", "_selected_action": [task], "tier": "192", "apply": "1"},
    )
    assert Task.objects.get(id=task).priority == 192


def test_admin_change_priority__invalid_value_shows_the_form_again(operator):
    task = record.submit(n=1).id
    page = operator.post(
        reverse(TASKS),
        {"action": "change_priority", "_selected_action": [task], "priority": "300", "apply": "1"},
    )
    assert page.status_code == 200
    assert "less than or equal to 255" in page.content.decode()
    assert Task.objects.get(id=task).priority == 128


def test_admin_action_from_detail_page__returns_there(operator):
    task = record.submit(n=1).id
    detail = reverse("admin:taskmill_django_task_change", args=[task])
    response = act(operator, TASKS, "pause_tasks", [task], _next=detail)
    assert response["Location"] == detail


def test_admin_action__select_across_uses_the_filter(operator):
    a = record.using(group="g1").submit(n=1).id
    b = record.using(group="g1").submit(n=2).id
    c = record.using(group="g2").submit(n=3).id
    operator.post(
        reverse(TASKS) + "?group=g1",
        {"action": "pause_tasks", "_selected_action": [a], "index": 0, "select_across": "1"},
    )
    assert set(Task.objects.filter(status="paused").values_list("id", flat=True)) == {a, b}
    assert Task.objects.get(id=c).status == "pending"


# --- dead letters ----------------------------------------------------------------------------


@pytest.fixture
def dead_letters(history_factory):
    return [
        history_factory(
            task_type="tests::record",
            status="dead_letter",
            payload={"n": n},
            key=f"dead-{n}",
            domain="tests",
            group_key="mail" if n < 2 else None,
        )
        for n in range(3)
    ]


def test_admin_retry__single_entry(operator, dead_letters):
    entry = dead_letters[0]
    response = act(operator, DEAD, "retry_entries", [entry.id])
    assert response.status_code == 302
    task = Task.objects.get(key=entry.key)
    assert task.payload == {"n": 0} and task.group_key == "mail"
    assert "1 inserted" in texts(response)[0]
    (entry_log,) = logged("deadletter")
    assert entry_log.object_id == str(entry.id)


def test_admin_retry__bulk(operator, dead_letters):
    act(operator, DEAD, "retry_entries", [d.id for d in dead_letters])
    assert Task.objects.count() == 3


def test_admin_retry__twice_is_refused_and_the_list_shows_what_it_became(operator, dead_letters):
    act(operator, DEAD, "retry_entries", [dead_letters[0].id])
    new_id = Task.objects.get().id
    response = act(operator, DEAD, "retry_entries", [dead_letters[0].id])
    assert "already retried as task" in texts(response)[-1]
    assert Task.objects.count() == 1

    html = operator.get(reverse(DEAD) + "?retried=yes").content.decode()
    assert f">#{new_id}</a>" in html
    assert operator.get(reverse(DEAD) + "?retried=no").context["cl"].result_count == 2


def test_admin_retry__all_matching_leaves_out_entries_retried_before(operator, dead_letters):
    act(operator, DEAD, "retry_entries", [dead_letters[0].id])
    Task.objects.all().delete()  # that retry ran and finished
    url = reverse("admin:taskmill_django_deadletter_retry_all") + "?group=mail"
    assert operator.get(url).context["count"] == 1
    operator.post(url)
    assert set(Task.objects.values_list("key", flat=True)) == {"dead-1"}


def test_admin_retry__all_matching_the_filter(operator, dead_letters):
    url = reverse("admin:taskmill_django_deadletter_retry_all") + "?group=mail"
    page = operator.get(url)
    assert page.status_code == 200
    assert page.context["count"] == 2
    response = operator.post(url)
    assert response.status_code == 302
    assert response["Location"].endswith("?group=mail")
    assert set(Task.objects.values_list("key", flat=True)) == {"dead-0", "dead-1"}
    assert len(logged("deadletter")) == 2


def test_admin_retry__all_matching_is_capped_per_request(operator, dead_letters, monkeypatch):
    monkeypatch.setattr(history_admin, "RETRY_LIMIT", 2)
    monkeypatch.setattr(history_admin, "RETRY_CHUNK", 1)  # read one id at a time
    url = reverse("admin:taskmill_django_deadletter_retry_all")
    page = operator.get(url)
    assert page.context["count"] == 3
    assert "at most 2 entries" in page.content.decode()
    response = operator.post(url)
    assert set(Task.objects.values_list("key", flat=True)) == {"dead-0", "dead-1"}
    assert "retry again for the rest" in texts(response)[-1]
    operator.post(url)
    assert Task.objects.count() == 3


def test_admin_retry__selected_entries_are_capped_too(operator, dead_letters, monkeypatch):
    monkeypatch.setattr(history_admin, "RETRY_LIMIT", 2)
    response = act(operator, DEAD, "retry_entries", [d.id for d in dead_letters])
    assert Task.objects.count() == 2
    assert "retry again for the rest" in texts(response)[-1]


def test_admin_retry__list_links_retry_all_with_filters(operator, dead_letters):
    html = operator.get(reverse(DEAD) + "?group=mail").content.decode()
    assert reverse("admin:taskmill_django_deadletter_retry_all") + "?group=mail" in html


def test_admin_retry__unknown_type_is_reported(operator, history_factory):
    entry = history_factory(task_type="gone::away", domain="gone", status="dead_letter")
    response = act(operator, DEAD, "retry_entries", [entry.id])
    assert "Not retried" in texts(response)[-1]
    assert not Task.objects.exists()


def test_admin_retry__viewer_is_refused(viewer, dead_letters):
    act(viewer, DEAD, "retry_entries", [dead_letters[0].id])
    assert viewer.get(reverse("admin:taskmill_django_deadletter_retry_all")).status_code == 403
    assert viewer.post(reverse("admin:taskmill_django_deadletter_retry_all")).status_code == 403
    assert not Task.objects.exists()


def test_admin_retry__from_the_history_page(operator, dead_letters):
    entry = dead_letters[0]
    html = operator.get(
        reverse("admin:taskmill_django_taskhistory_change", args=[entry.id])
    ).content.decode()
    assert reverse(DEAD) in html and 'value="retry_entries"' in html


# --- prune -----------------------------------------------------------------------------------


def test_admin_prune__by_age(operator, history_factory):
    old = history_factory(finished_at=timezone.now() - timedelta(days=10))
    new = history_factory()
    url = reverse("admin:taskmill_django_taskhistory_prune")
    assert operator.get(url).status_code == 200
    response = operator.post(url, {"mode": "age", "amount": "5", "domain": ""})
    assert response.status_code == 302
    assert list(TaskHistory.objects.values_list("id", flat=True)) == [new.id]
    assert old.id not in TaskHistory.objects.values_list("id", flat=True)
    (entry,) = logged("taskhistory")
    assert "Pruned 1 history row(s)" in entry.change_message


def test_admin_prune__keep_newest_in_one_domain(operator, history_factory):
    now = timezone.now()
    for n in range(3):
        history_factory(domain="tests", finished_at=now - timedelta(minutes=n))
    history_factory(domain="other", task_type="other::noop", finished_at=now - timedelta(days=1))
    url = reverse("admin:taskmill_django_taskhistory_prune")
    operator.post(url, {"mode": "count", "amount": "1", "domain": "tests"})
    assert TaskHistory.objects.filter(domain="tests").count() == 1
    assert TaskHistory.objects.filter(domain="other").count() == 1


def test_admin_prune__invalid_input_changes_nothing(operator, history_factory):
    history_factory()
    url = reverse("admin:taskmill_django_taskhistory_prune")
    page = operator.post(url, {"mode": "count", "amount": "-1"})
    assert page.status_code == 200
    assert TaskHistory.objects.count() == 1


def test_admin_prune__viewer_is_refused(viewer, history_factory):
    history_factory()
    url = reverse("admin:taskmill_django_taskhistory_prune")
    assert viewer.get(url).status_code == 403
    assert viewer.post(url, {"mode": "age", "amount": "0"}).status_code == 403
    assert TaskHistory.objects.count() == 1


# --- schedules -------------------------------------------------------------------------------


@pytest.fixture
def schedule() -> Schedule:
    return Schedule.objects.create(
        task_type="tests::record",
        domain="tests",
        payload={"n": 1},
        interval_seconds=60,
        next_run_at=timezone.now() + timedelta(minutes=1),
    )


def test_admin_schedule__pause_resume_cancel(operator, schedule):
    act(operator, SCHEDULES, "pause_schedules", [schedule.id])
    assert Schedule.objects.get(id=schedule.id).is_paused
    act(operator, SCHEDULES, "resume_schedules", [schedule.id])
    assert not Schedule.objects.get(id=schedule.id).is_paused
    act(operator, SCHEDULES, "cancel_schedules", [schedule.id])
    assert not Schedule.objects.exists()
    assert [e.action_flag for e in logged("schedule")] == [2, 2, 3]


def test_admin_schedule__viewer_is_refused(viewer, schedule):
    act(viewer, SCHEDULES, "pause_schedules", [schedule.id])
    assert not Schedule.objects.get(id=schedule.id).is_paused


# --- controls --------------------------------------------------------------------------------


def control_post(client: Client, **data: str):
    return client.post(reverse(CONTROLS), data)


def test_admin_controls__pause_and_resume_all(operator):
    control_post(operator, op="pause_all")
    assert control.load_policy().is_paused
    control_post(operator, op="resume_all")
    assert not control.load_policy().is_paused
    entries = logged("schedulersetting")
    assert [e.object_id for e in entries] == ["paused", "paused"]


def test_admin_controls__max_concurrency(operator):
    control_post(operator, op="max_concurrency", limit="3")
    assert control.load_policy().max_concurrency == 3
    control_post(operator, op="max_concurrency", limit="")
    assert control.load_policy().max_concurrency is None


def test_admin_controls__domain_pause_and_cap(operator):
    control_post(operator, op="pause_domain", domain="tests")
    assert "tests" in control.load_policy().paused_domains
    control_post(operator, op="resume_domain", domain="tests")
    assert "tests" not in control.load_policy().paused_domains
    control_post(operator, op="domain_limit", domain="tests", limit="2")
    assert control.load_policy().domain_caps["tests"] == 2


def test_admin_controls__group_pause_until_and_resume(operator):
    until = (timezone.localtime() + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    response = control_post(operator, op="pause_group", group="tenant-1", until=until)
    assert response.status_code == 302
    paused = PausedGroup.objects.get(group_key="tenant-1")
    assert paused.paused_until is not None
    control_post(operator, op="resume_group", group="tenant-1")
    assert not PausedGroup.objects.exists()
    assert [e.object_id for e in logged("pausedgroup")] == ["tenant-1", "tenant-1"]


def test_admin_controls__group_limit_weight_and_rate(operator):
    control_post(operator, op="group_limit", group="g", limit="4")
    control_post(operator, op="group_weight", group="g", weight="2.5", minimum_slots="1")
    control_post(operator, op="group_rate", group="g", rate="10", per="minute", burst="3")
    policy = control.load_policy()
    assert policy.group_caps["g"] == 4
    assert policy.group_weights["g"] == 2.5
    assert policy.group_minimum_slots["g"] == 1
    assert policy.group_rate_limits["g"].burst == 3
    assert policy.group_rate_limits["g"].rate == pytest.approx(10 / 60)
    control_post(operator, op="group_limit", group="g", limit="")
    assert "g" not in control.load_policy().group_caps


def test_admin_controls__task_type_rate_limit(operator):
    control_post(operator, op="type_rate", task_type="tests::record", rate="5", per="second")
    assert control.load_policy().rate_limits["tests::record"].rate == 5
    page = operator.get(reverse(CONTROLS)).content.decode()
    assert "5/s" in page
    control_post(operator, op="type_rate", task_type="tests::record", rate="")
    assert "tests::record" not in control.load_policy().rate_limits


def test_admin_controls__bad_input_changes_nothing(operator):
    response = control_post(operator, op="group_limit", group="g", limit="0")
    assert "Nothing changed" in texts(response)[-1]
    response = control_post(operator, op="type_rate", task_type="nope::x", rate="1", per="second")
    assert "Nothing changed" in texts(response)[-1]
    response = control_post(operator, op="explode")
    assert "Unknown operation" in texts(response)[-1]
    assert not SchedulerSetting.objects.exists()
    assert not LogEntry.objects.exists()


def test_admin_controls__viewer_is_refused(viewer):
    assert control_post(viewer, op="pause_all").status_code == 403
    assert not scheduler.snapshot().is_paused


def test_admin_action_from_detail_page__ignores_foreign_next(operator):
    task = record.submit(n=1).id
    response = act(operator, TASKS, "pause_tasks", [task], _next="https://evil.example/")
    assert response["Location"] == reverse(TASKS)
