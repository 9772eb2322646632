"""The metrics endpoint after real workers ran tasks, one was killed, and history was pruned."""

from __future__ import annotations

import signal
from datetime import timedelta
from typing import Any

import pytest
from django.db.models import Count
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from taskmill_django.models import TaskHistory, Worker
from taskmill_django.store import maintenance
from tests.acceptance.support import worker_id_of
from tests.conftest import wait_until
from tests.testapp.tasks import boom, flaky, record

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "a-long-random-secret-for-the-prometheus-server"  # noqa: S105 - a test secret


def counters() -> dict[tuple[str, str], float]:
    """(metric, task_type) -> value of every counter in a bearer scrape."""
    response = Client().get("/taskmill/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200, response.content
    return {
        (s.name, s.labels["task_type"]): s.value
        for family in text_string_to_metric_families(response.content.decode())
        if family.type == "counter"
        for s in family.samples
    }


def test_metrics__real_workers_counts_survive_a_killed_worker_and_pruning(
    worker_factory: Any, settings: Any
):
    settings.TASKMILL = {"METRICS_TOKEN": TOKEN}
    record.submit_batch([{"n": n} for n in range(5)])
    flaky.submit(fail_times=1)
    flaky.submit(fail_times=2)
    boom.submit()
    # Its counts stay in its memory until it stops (an hour's interval): the stop stores them.
    burst = worker_factory(
        "--burst", "--concurrency", "2", settings={"COUNTER_FLUSH_INTERVAL": 3600}
    )
    assert burst.wait(60) == 0, burst.output()
    # A second worker runs more, stores their counts within its interval (1 s) though it has
    # nothing more to do, and is killed: its counters stay with its id for now.
    killed = worker_factory("--concurrency", "2")
    killed_id = worker_id_of(killed)
    record.submit_batch([{"n": n} for n in range(5, 8)])
    wait_until(lambda: TaskHistory.objects.count() == 11)
    wait_until(lambda: counters().get(("taskmill_tasks_completed_total", "tests::record")) == 8)
    killed.send(signal.SIGKILL)
    killed.wait(30)

    ends = {
        (f"taskmill_tasks_{status}_total".replace("dead_letter", "dead_lettered"), task_type): n
        for task_type, status, n in TaskHistory.objects.values_list("task_type", "status")
        .annotate(n=Count("id"))
        .order_by()
    }
    before = counters()
    assert ends == {
        ("taskmill_tasks_completed_total", "tests::record"): 8,
        ("taskmill_tasks_completed_total", "tests::flaky"): 2,
        ("taskmill_tasks_dead_lettered_total", "tests::boom"): 1,
    }
    for key, n in ends.items():
        assert before[key] == n, key
    assert before["taskmill_tasks_retried_total", "tests::flaky"] == 3
    assert before["taskmill_tasks_retried_total", "tests::boom"] == 1
    assert before["taskmill_tasks_submitted_total", "tests::record"] == 8

    # The killed worker is forgotten (as upkeep does once it has been silent long enough),
    # its counters folded into the shared rows, and all history pruned.
    Worker.objects.filter(id=killed_id).update(heartbeat_at=timezone.now() - timedelta(days=1))
    maintenance.forget_dead_workers()
    assert not Worker.objects.filter(id=killed_id).exists()
    assert maintenance.prune_history_by_count(0) == 11

    assert counters() == before
