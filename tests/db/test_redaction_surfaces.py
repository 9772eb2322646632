"""Secrets of a payload (``sensitive=`` paths and SENSITIVE_KEYS names) appear in no REST
response and no admin page, while the task body receives them and the database keeps them."""

from __future__ import annotations

import pytest
from django.urls import reverse

from taskmill_django import RecurringSchedule, executor
from taskmill_django.models import Task, TaskHistory
from taskmill_django.redaction import MASK
from taskmill_django.testing import run_pending
from tests.db.conftest import claim_one
from tests.testapp.tasks import charge

pytestmark = pytest.mark.django_db

NUMBER, PIN, API_KEY = "4111111111111111", "pin-4x9z", "sk_live_abc123"
SECRETS = (NUMBER, PIN, API_KEY)


def _payload(**extra: object) -> dict[str, object]:
    card = {"number": NUMBER, "holder": "Ann Smith"}
    return {"card": card, "pin": PIN, "api_key": API_KEY, **extra}


@pytest.fixture
def world(task_log) -> dict[str, int]:
    """A failed run (error and traceback echo the payload), a completed one (its result holds
    the key), a pending task whose label names the pin, a running task reporting progress
    with the card number, and a schedule with the secrets in its payload."""
    failed = charge.submit(**_payload(fail=True))
    done = charge.submit(**_payload(amount=5))
    assert run_pending() == 2
    pending = charge.using(label=f"retry pin={PIN}", priority=200).submit(**_payload(amount=6))
    charge.submit(**_payload(amount=7))
    running = claim_one()  # the more urgent one; as a worker reports its progress:
    ctx, _ = executor.build_context(running)
    ctx.progress.report(0.5, f"charging card {NUMBER} with api_key={API_KEY}")
    Task.objects.filter(id=running.id).update(**ctx.progress.take_unsaved())
    schedule = charge.using(
        key="monthly", recurring=RecurringSchedule(interval=86400, initial_delay=86400)
    ).submit(**_payload(amount=8))
    return {
        "failed": failed.id,
        "done": done.id,
        "pending": pending.id,
        "running": running.id,
        "schedule": schedule.schedule_id,
    }


def assert_no_secret(body: bytes, where: str) -> None:
    text = body.decode()
    for secret in SECRETS:
        assert secret not in text, f"{secret} shown by {where}"


def test_task_body__receives_the_real_values(world, task_log):
    received = {e["task_id"]: e for e in task_log.events("charge")}
    assert (received[world["failed"]]["number"], received[world["failed"]]["pin"]) == (
        NUMBER,
        PIN,
    )
    assert received[world["done"]]["api_key"] == API_KEY


def test_database__keeps_the_real_values(world):
    row = TaskHistory.objects.get(id=world["failed"])
    assert row.payload["pin"] == PIN
    assert NUMBER in row.last_error


REST = [
    "tasks/",
    "tasks/{pending}/",
    "tasks/{running}/",
    "tasks/{pending}/explain/",
    "history/",
    "history/{failed}/",
    "history/{done}/",
    "dead-letter/",
    "dead-letter/{failed}/",
    "snapshot/",
    "domains/tests/snapshot/",
    "recurring/",
]


@pytest.mark.parametrize("path", REST)
def test_rest_responses__show_no_secret(world, api, path):
    response = api.get("/taskmill/api/" + path.format(**world))
    assert response.status_code == 200, response.content
    assert_no_secret(response.content, path)


def test_rest_responses__mask_values_and_keep_the_rest(world, api):
    failed = api.get(f"/taskmill/api/history/{world['failed']}/").json()
    assert failed["payload"] == {
        "card": {"number": MASK, "holder": "Ann Smith"},
        "pin": MASK,
        "api_key": MASK,
        "fail": True,
    }
    assert failed["last_error"].startswith("ValueError: card declined")
    assert "Ann Smith" in failed["last_error"]
    assert MASK in failed["traceback"]
    done = api.get(f"/taskmill/api/history/{world['done']}/").json()
    assert done["result"] == {"charged": 5, "receipt": {"api_key": MASK}}


ADMIN = [
    ("admin:taskmill_django_task_changelist", None),
    ("admin:taskmill_django_task_change", "pending"),
    ("admin:taskmill_django_task_change", "running"),
    ("admin:taskmill_django_taskhistory_changelist", None),
    ("admin:taskmill_django_taskhistory_change", "failed"),
    ("admin:taskmill_django_taskhistory_change", "done"),
    ("admin:taskmill_django_deadletter_changelist", None),
    ("admin:taskmill_django_deadletter_change", "failed"),
    ("admin:taskmill_django_deadletter_retry_all", None),
    ("admin:taskmill_django_schedule_change", "schedule"),
    ("admin:taskmill_django_dashboard", None),
    ("admin:taskmill_django_dashboard_data", None),
]


@pytest.mark.parametrize(("name", "obj"), ADMIN)
def test_admin_pages__show_no_secret(world, admin_client_for, name, obj):
    response = admin_client_for("superuser").get(reverse(name, args=[world[obj]] if obj else []))
    assert response.status_code == 200
    assert_no_secret(response.content, name)


def test_admin_change_priority_page__shows_no_secret(world, admin_client_for):
    response = admin_client_for("superuser").post(
        reverse("admin:taskmill_django_task_changelist"),
        {"action": "change_priority", "_selected_action": [world["pending"]], "index": 0},
    )
    assert response.status_code == 200
    assert "retry pin=" in response.content.decode()
    assert_no_secret(response.content, "change priority")
