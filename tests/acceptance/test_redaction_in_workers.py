"""Secrets in payloads reach the task body, and no worker log line."""

from __future__ import annotations

import pytest

from taskmill_django.models import TaskHistory
from tests.testapp.tasks import charge

pytestmark = pytest.mark.django_db(transaction=True)

SECRETS = ("4111111111111111", "9876", "sk_live_abc123")


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
