"""No string a task produces stalls or kills a worker (RELIABILITY G11): text with a NUL byte, a
lone surrogate or megabytes of it, in an error, a progress message or a result, is stored
escaped or cut, and the work queued behind it runs on the same worker."""

from __future__ import annotations

import pytest

from taskmill_django.enums import HistoryStatus
from taskmill_django.models import Task, TaskHistory
from tests.conftest import wait_until
from tests.testapp.tasks import bad_text, huge_io, record

pytestmark = pytest.mark.django_db(transaction=True)


def finished(ids: list[int]) -> bool:
    return TaskHistory.objects.filter(id__in=ids).count() == len(ids)


@pytest.mark.parametrize("kind", ["nul", "surrogate"])
def test_bad_text__in_errors_progress_and_results_never_stalls_the_worker(worker_factory, kind):
    bad = {
        where: bad_text.submit(kind=kind, where=where).id
        for where in ("error", "progress", "result")
    }
    after = [record.submit(n=n).id for n in range(5)]
    worker = worker_factory("--concurrency", "2")

    wait_until(lambda: finished([*bad.values(), *after]), timeout=60)

    assert worker.proc.poll() is None, worker.output()
    rows = {row.id: row for row in TaskHistory.objects.filter(id__in=bad.values())}
    escaped = {"nul": "bad\\x00byte", "surrogate": "bad\\udcffname"}[kind]
    failure = rows[bad["error"]]
    assert failure.status == HistoryStatus.DEAD_LETTER  # retried once, as its policy says
    assert escaped in failure.last_error
    assert escaped in failure.traceback
    assert (rows[bad["progress"]].status, rows[bad["progress"]].result) == ("completed", "done")
    assert (rows[bad["result"]].status, rows[bad["result"]].result) == ("completed", escaped)
    assert set(TaskHistory.objects.filter(id__in=after).values_list("status", flat=True)) == {
        "completed"
    }


def test_bad_text__progress_message_is_stored_escaped_while_the_task_runs(worker_factory):
    outcome = bad_text.submit(kind="surrogate", where="progress")
    worker_factory()

    message = wait_until(
        lambda: (
            Task.objects.filter(id=outcome.id).values_list("progress_message", flat=True).first()
        ),
        timeout=30,
    )

    assert message == "bad\\udcffname"


def test_bad_text__megabytes_of_error_are_cut_with_a_marker(worker_factory):
    outcome = bad_text.submit(kind="huge", where="error")
    after = record.submit(n=1).id
    worker_factory()

    wait_until(lambda: finished([outcome.id, after]), timeout=60)

    row = TaskHistory.objects.get(id=outcome.id)
    assert row.status == HistoryStatus.DEAD_LETTER
    assert len(row.last_error) <= 4000
    assert "[truncated" in row.last_error
    assert len(row.traceback) <= 20000
    assert TaskHistory.objects.get(id=after).status == HistoryStatus.COMPLETED


def test_bad_outcome__refused_by_the_database_fails_alone_and_the_rest_are_written(
    worker_factory,
):
    # No text here: 2**70 bytes read fits no integer column, so the database (or its driver)
    # refuses the whole outcome batch it travels in.
    ids = [record.submit(n=n).id for n in range(3)]
    bad = huge_io.submit().id
    ids += [record.submit(n=n).id for n in range(3, 6)]
    worker = worker_factory("--concurrency", "4")

    wait_until(lambda: finished([*ids, bad]), timeout=60)

    assert worker.proc.poll() is None, worker.output()
    row = TaskHistory.objects.get(id=bad)
    assert row.status == HistoryStatus.FAILED
    assert row.last_error.startswith("the outcome of this attempt could not be stored")
    assert set(TaskHistory.objects.filter(id__in=ids).values_list("status", flat=True)) == {
        "completed"
    }
