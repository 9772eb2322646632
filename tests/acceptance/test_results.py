"""Waiting for results with a real worker: wait(), await_result(), timeouts, workflows."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.db import connection, connections

from taskmill_django import scheduler
from taskmill_django.exceptions import ResultTimeout
from taskmill_django.read import results
from tests.conftest import wait_until
from tests.testapp.tasks import boom, echo, fan_out, sleep

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def no_safety_recheck(monkeypatch: pytest.MonkeyPatch) -> None:
    """On PostgreSQL, make the waiter rely on the notification alone: a waiter that missed it
    would sit until the test's timeout and fail."""
    monkeypatch.setattr(results, "SAFETY_RECHECK", 3600.0)


def test_wait__returns_the_result_and_a_duplicate_waits_for_the_same_task(
    worker_factory, no_safety_recheck
):
    outcome = echo.submit(value={"answer": 42})
    twin = echo.submit(value={"answer": 42})
    assert twin.kind == "duplicate" and twin.id == outcome.id
    worker_factory("--concurrency", "2")
    record = outcome.wait(timeout=60, poll=3600 if connection.vendor == "postgresql" else 0.05)
    assert (record.id, record.status, record.result) == (outcome.id, "completed", {"answer": 42})
    assert twin.wait(timeout=1).result == {"answer": 42}
    assert scheduler.result(outcome.id).result == {"answer": 42}


def test_wait__a_dead_letter_is_returned_with_its_error(worker_factory, no_safety_recheck):
    outcome = boom.submit()  # fails twice (one retry), then is dead-lettered
    worker_factory()
    record = outcome.wait(timeout=60)
    assert (record.status, record.retry_count) == ("dead_letter", 1)
    assert "boom" in record.last_error
    assert record.result is None


def test_wait__a_parent_is_done_once_its_children_and_finalizer_are(
    worker_factory, no_safety_recheck
):
    outcome = fan_out.submit(parts=3)
    worker_factory("--concurrency", "4")
    record = outcome.wait(timeout=60)
    assert (record.status, record.result) == ("completed", {"finalized": 3})


def test_wait__timeout_names_the_task_and_the_time(worker_factory, task_log):
    outcome = sleep.submit(seconds=30)
    worker_factory()
    wait_until(lambda: task_log.events("start"))
    with pytest.raises(TimeoutError) as caught:
        outcome.wait(timeout=0.3)
    assert isinstance(caught.value, ResultTimeout)
    assert str(caught.value).startswith(f"task {outcome.id} did not finish within 0.3 s")
    assert "running" in str(caught.value)
    assert scheduler.result(outcome.id) is None


def test_await_result__waits_in_asyncio_and_times_out(worker_factory, no_safety_recheck):
    done = echo.submit(value="async")
    slow = sleep.submit(seconds=30, n=1)
    worker_factory("--concurrency", "2")

    async def main() -> tuple[object, str]:
        try:
            record = await done.await_result(timeout=60)
            with pytest.raises(ResultTimeout) as caught:
                await slow.await_result(timeout=0.3)
            return record.result, str(caught.value)
        finally:
            await sync_to_async(connections.close_all)()

    value, message = asyncio.run(main())
    assert value == "async"
    assert f"task {slow.id} did not finish within 0.3 s" in message
