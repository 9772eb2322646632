"""Secrets in payloads reach the task body, and no worker log line."""

from __future__ import annotations

import pytest

from taskmill_django import scheduler
from taskmill_django.models import TaskHistory
from tests.conftest import wait_until
from tests.testapp.tasks import charge

pytestmark = pytest.mark.django_db(transaction=True)

SECRETS = ("4111111111111111", "pin-4x9z", "sk_live_abc123")


def test_worker_log__failure_echoing_the_payload_shows_no_secret(worker_factory, task_log):
    card = {"number": SECRETS[0], "holder": "Ann Smith"}
    failing = charge.submit(card=card, pin=SECRETS[1], api_key=SECRETS[2], fail=True)
    passing = charge.submit(card=card, pin=SECRETS[1], api_key=SECRETS[2], amount=5)
    worker = worker_factory("--burst", "-v", "2")
    assert worker.wait(60) == 0, worker.output()

    received = {e["task_id"]: e for e in task_log.events("charge")}
    for task_id in (failing.id, passing.id):
        assert received[task_id]["number"] == SECRETS[0]
        assert (received[task_id]["pin"], received[task_id]["api_key"]) == SECRETS[1:]
    row = TaskHistory.objects.get(id=failing.id)
    assert row.status == "dead_letter"
    assert SECRETS[1] in row.last_error  # the database keeps the real text
    output = worker.output()
    assert f"task_id={failing.id}" in output
    assert "card declined" in output
    for secret in SECRETS:
        assert secret not in output


def test_worker_log__failing_on_cancel_hook_shows_no_secret(worker_factory, task_log):
    card = {"number": SECRETS[0], "holder": "Ann Smith"}
    held = charge.submit(card=card, pin=SECRETS[1], api_key=SECRETS[2], hold=True)
    worker = worker_factory()
    wait_until(lambda: task_log.events("charge"), timeout=30)

    assert scheduler.cancel(held.id)

    wait_until(lambda: "refund failed" in worker.output(), timeout=30)
    output = worker.output()
    assert "on_cancel hook failed" in output and f"task_id={held.id}" in output
    for secret in SECRETS:
        assert secret not in output
