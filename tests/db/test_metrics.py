"""The metrics endpoint and the stored counters behind it, read as Prometheus reads them."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import pytest
from django.core.management import call_command
from django.db import transaction
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from taskmill_django import scheduler
from taskmill_django.models import TaskCounter, TaskHistory
from taskmill_django.store import counters, lifecycle, maintenance, workers
from taskmill_django.store.counters import SHARED
from tests.db.conftest import claim_one, finish
from tests.testapp.tasks import echo, record

pytestmark = pytest.mark.django_db

URL = "/taskmill/metrics"
TOKEN = "s3cret-token-for-the-prometheus-server-0123456789"  # noqa: S105 - a test secret


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, parsed by prometheus_client's own parser."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(token: str = TOKEN) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = Client().get(URL, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return samples(response.content.decode())


def of(task_type: str) -> tuple[tuple[str, str], ...]:
    return (("task_type", task_type),)


@pytest.fixture(autouse=True)
def metrics_token(settings: Any) -> None:
    settings.TASKMILL = {"METRICS_TOKEN": TOKEN}


def run(kind: str = lifecycle.COMPLETED, task: Any = record, **fields: Any) -> None:
    task.submit()
    finish(claim_one(), kind, duration_ms=40, **fields)


def test_metrics__counts_outcomes_by_task_type():
    run()
    run()
    run(lifecycle.DEAD_LETTER, error="gave up")
    run(lifecycle.RETRY, task=echo, error="again")
    record.submit()

    got = scrape()

    assert got["taskmill_tasks_completed_total", of("tests::record")] == 2
    assert got["taskmill_tasks_dead_lettered_total", of("tests::record")] == 1
    assert got["taskmill_tasks_retried_total", of("tests::echo")] == 1
    assert got["taskmill_tasks_submitted_total", of("tests::record")] == 4
    assert got["taskmill_tasks_submitted_total", of("tests::echo")] == 1
    assert got["taskmill_tasks_pending", (("domain", "tests"),)] == 2
    # Three ends and one retry ran for 40 ms each: the 0.05 s bucket holds them all.
    assert got["taskmill_task_duration_seconds_count", of("tests::record")] == 3
    assert got["taskmill_task_duration_seconds_sum", of("tests::record")] == pytest.approx(0.12)
    duration_le = (("le", "0.025"), ("task_type", "tests::record"))
    assert got["taskmill_task_duration_seconds_bucket", duration_le] == 0
    duration_le = (("le", "0.05"), ("task_type", "tests::record"))
    assert got["taskmill_task_duration_seconds_bucket", duration_le] == 3
    assert got["taskmill_task_queue_wait_seconds_count", of("tests::echo")] == 1


def test_metrics__counters_survive_pruning_history():
    for _ in range(3):
        run()
    before = scheduler.metrics_snapshot().counters

    assert maintenance.prune_history_by_count(0) == 3
    assert not TaskHistory.objects.exists()

    assert scrape()["taskmill_tasks_completed_total", of("tests::record")] == 3
    assert scheduler.metrics_snapshot().counters == before
    assert before["tasks_completed_total"] == 3
    assert before["tasks_submitted_total"] == 3


@pytest.mark.django_db(transaction=True)
def test_metrics__a_workers_buffered_counts_are_stored_only_with_a_commit():
    buffered = counters.Buffered(interval=3600)
    record.submit()
    task = claim_one()

    # A cycle that fails: its counts neither reach the database nor stay in the buffer.
    with pytest.raises(RuntimeError), transaction.atomic(), buffered.gathering():
        finish(task, duration_ms=40)
        raise RuntimeError("the cycle's commit never happens")
    assert not buffered.tally.counts
    assert not TaskCounter.objects.exists()

    # The same outcome written again: counted once, held in memory until the buffer is due.
    with transaction.atomic(), buffered.gathering():
        finish(task, duration_ms=40)
    assert not TaskCounter.objects.exists()
    assert buffered.tally.counts[(str(task.worker_id), "tests::record", "completed")] == 1

    buffered.flush()
    assert not buffered.tally.counts
    assert scrape()["taskmill_tasks_completed_total", of("tests::record")] == 1
    assert scrape()["taskmill_task_duration_seconds_count", of("tests::record")] == 1


def test_metrics__counters_of_a_removed_worker_survive_folding():
    gone = workers.register_worker("gone", 1, 1, None)
    stays = workers.register_worker("stays", 2, 1, None)
    for worker_id in (gone, gone, stays):
        record.submit()
        finish(claim_one(worker_id=worker_id), duration_ms=5)
    assert set(TaskCounter.objects.values_list("source", flat=True)) == {str(gone), str(stays)}

    workers.deregister_worker(gone)
    maintenance.forget_dead_workers()

    assert set(TaskCounter.objects.values_list("source", flat=True)) == {SHARED, str(stays)}
    assert scrape()["taskmill_tasks_completed_total", of("tests::record")] == 3
    # Folding twice moves nothing twice.
    maintenance.forget_dead_workers()
    assert scrape()["taskmill_tasks_completed_total", of("tests::record")] == 3


def test_metrics__rescued_and_preempted_are_counted():
    record.submit()
    claim_one()  # by a worker that never registered: an orphan
    rescuer = workers.register_worker("rescuer", 1, 1, None)

    assert maintenance.rescue_orphans(rescuer=rescuer) == 1

    assert scrape()["taskmill_tasks_rescued_total", of("tests::record")] == 1


def test_metrics__refuses_anonymous_scrapes():
    response = Client().get(URL)

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert b"taskmill_" not in response.content


@pytest.mark.parametrize("header", ["Bearer wrong-token", "Bearer ", f"Basic {TOKEN}"])
def test_metrics__refuses_a_wrong_token(header: str):
    response = Client().get(URL, HTTP_AUTHORIZATION=header)

    assert response.status_code == 401
    assert b"taskmill_" not in response.content


def test_metrics__no_token_configured_refuses_every_bearer(settings: Any):
    settings.TASKMILL = {"METRICS_TOKEN": ""}

    assert Client().get(URL, HTTP_AUTHORIZATION="Bearer ").status_code == 401


def test_metrics__accepts_a_user_with_view_metrics(
    admin_client_for: Callable[..., Client],
):
    run()

    allowed = admin_client_for("staff", ("view_metrics",)).get(URL)
    refused = admin_client_for("viewer").get(URL)

    assert allowed.status_code == 200
    assert (
        samples(allowed.content.decode())["taskmill_tasks_completed_total", of("tests::record")]
        == 1
    )
    assert refused.status_code == 403


def test_metrics__without_prometheus_client_says_what_to_install(monkeypatch: Any):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import fails as if absent

    response = Client().get(URL, HTTP_AUTHORIZATION=f"Bearer {TOKEN}")

    assert response.status_code == 503
    assert b"pip install 'taskmill-django[prometheus]'" in response.content
    with pytest.raises(Exception, match=r"taskmill\.E073"):
        call_command("check", "--tag", "taskmill")


def test_metrics__a_short_token_is_flagged(settings: Any, capsys: Any):
    settings.TASKMILL = {"METRICS_TOKEN": "short"}

    call_command("check", "--tag", "taskmill")

    assert "taskmill.W033" in capsys.readouterr().err


def test_metrics__a_run_on_a_bucket_bound_counts_in_that_bucket():
    record.submit()
    finish(claim_one(), duration_ms=50)  # exactly 0.05 s: le="0.05" holds it (Prometheus' <=)

    got = scrape()

    le = (("le", "0.025"), ("task_type", "tests::record"))
    assert got["taskmill_task_duration_seconds_bucket", le] == 0
    le = (("le", "0.05"), ("task_type", "tests::record"))
    assert got["taskmill_task_duration_seconds_bucket", le] == 1
