"""A worker claims a few tasks ahead of its free threads while tasks are short, and never
while they are long (they would hold leases and slots while they wait)."""

from __future__ import annotations

import time

import pytest

from taskmill_django.models import Task, TaskHistory
from tests.conftest import wait_until
from tests.testapp.tasks import record, sleep

pytestmark = pytest.mark.django_db(transaction=True)


def most_running_while(ids: list[int]) -> int:
    peak = 0
    deadline = time.monotonic() + 60
    while TaskHistory.objects.filter(id__in=ids).count() < len(ids):
        assert time.monotonic() < deadline, "tasks did not finish"
        peak = max(peak, Task.objects.filter(status="running").count())
        time.sleep(0.002)  # sampling pace
    return peak


def test_claim_ahead__short_tasks_are_claimed_beyond_the_free_threads(worker_factory):
    ids = [record.submit(n=n).id for n in range(300)]
    worker_factory("--concurrency", "1")

    assert most_running_while(ids) > 1


def test_claim_ahead__long_tasks_are_never_claimed_ahead(worker_factory):
    ids = [sleep.submit(seconds=0.15, n=n).id for n in range(12)]
    worker_factory("--concurrency", "2")

    assert most_running_while(ids) == 2


def test_claim_ahead__off_with_zero(worker_factory):
    ids = [record.submit(n=n).id for n in range(300)]
    worker_factory("--concurrency", "1", settings={"CLAIM_AHEAD": 0})

    assert most_running_while(ids) == 1
    wait_until(lambda: not Task.objects.exists())
