"""Management commands (``taskmill``, ``runtaskmill`` flag validation) and the migrations check."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from importlib import metadata
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from taskmill_django.models import Task, TaskHistory, Worker
from taskmill_django.store import lifecycle, workers
from tests.conftest import ROOT
from tests.db.conftest import claim_one, finish
from tests.testapp.tasks import other_noop, record

pytestmark = pytest.mark.django_db


def taskmill(*args: str) -> str:
    out = StringIO()
    call_command("taskmill", *args, stdout=out)
    return out.getvalue()


# --- taskmill status -------------------------------------------------------------------------


def test_taskmill_status__prints_totals_per_domain_and_workers():
    record.submit_batch([{"n": 1}, {"n": 2}])
    other_noop.submit()
    claim_one(domains=["tests"])
    workers.register_worker("w-status", os.getpid(), 4, None)
    with CaptureQueriesContext(connection) as queries:
        lines = taskmill("status").splitlines()
    assert lines[0] == "pending=2 running=1 paused=0 blocked=0 waiting=0"
    assert "  other: pending=1" in lines
    assert "  tests: pending=1 running=1" in lines
    assert any(line.startswith("worker w-status alive running=0/4") for line in lines)
    # Counted, not listed: no query reads the running rows themselves.
    assert not any(
        '"started_at" ASC' in q["sql"].replace("`", '"') for q in queries.captured_queries
    )


def test_taskmill_status__empty_queue():
    assert taskmill("status").splitlines() == ["pending=0 running=0 paused=0 blocked=0 waiting=0"]


# --- taskmill prune --------------------------------------------------------------------------


def test_taskmill_prune__keep_newest(history_factory):
    for minutes in (3, 2, 1):
        history_factory(finished_at=timezone.now() - timedelta(minutes=minutes))
    assert taskmill("prune", "--keep", "1") == "deleted 2 history rows\n"
    assert TaskHistory.objects.count() == 1


def test_taskmill_prune__days(history_factory):
    old = history_factory(finished_at=timezone.now() - timedelta(days=10))
    new = history_factory()
    assert taskmill("prune", "--days", "5") == "deleted 1 history rows\n"
    assert list(TaskHistory.objects.values_list("id", flat=True)) == [new.id]
    assert not TaskHistory.objects.filter(id=old.id).exists()


def test_taskmill_prune__keep_and_days_together(history_factory):
    history_factory(finished_at=timezone.now() - timedelta(days=10))
    for minutes in (3, 2, 1):
        history_factory(finished_at=timezone.now() - timedelta(minutes=minutes))
    assert taskmill("prune", "--days", "5", "--keep", "2") == "deleted 2 history rows\n"
    assert TaskHistory.objects.count() == 2


def test_taskmill_prune__without_limits_is_an_error():
    with pytest.raises(CommandError, match="--keep"):
        taskmill("prune")


@pytest.mark.parametrize("args", [["--keep", "-1"], ["--days", "-2"]])
def test_taskmill_prune__negative_limits_are_an_error(args):
    with pytest.raises(CommandError, match=">= 0"):
        taskmill("prune", *args)


def test_taskmill_prune__non_number_is_an_error():
    with pytest.raises(CommandError, match="--keep"):
        taskmill("prune", "--keep", "many")


# --- taskmill retry / cancel -----------------------------------------------------------------


def test_taskmill_retry__resubmits_dead_letter_entries():
    record.submit(n=1)
    task = claim_one()
    finish(task, lifecycle.DEAD_LETTER, error="x")
    out = taskmill("retry", str(task.id))
    new = Task.objects.get()
    assert out == f"{task.id}: inserted as task {new.id}\n"
    assert new.key == task.key


def test_taskmill_retry__unknown_entry_is_a_command_error():
    with pytest.raises(CommandError, match="dead-letter"):
        taskmill("retry", "987654")


def test_taskmill_retry__needs_an_id():
    with pytest.raises(CommandError):
        taskmill("retry")


def test_taskmill_cancel__reports_each_id():
    outcome = record.submit(n=1)
    out = taskmill("cancel", str(outcome.id), "987654")
    assert out == f"{outcome.id}: cancelled\n987654: not active\n"
    assert TaskHistory.objects.get(id=outcome.id).status == "cancelled"


def test_taskmill_cancel__non_integer_id_is_an_error():
    with pytest.raises(CommandError):
        taskmill("cancel", "abc")


def test_taskmill__missing_action_is_an_error():
    with pytest.raises(CommandError, match="action"):
        taskmill()


def test_taskmill__unknown_action_is_an_error():
    with pytest.raises(CommandError, match="invalid choice"):
        taskmill("explode")


# --- runtaskmill flag validation (rejected before any worker starts) --------------------------


def test_runtaskmill__unknown_domain_is_an_error():
    with pytest.raises(CommandError, match="nope") as info:
        call_command("runtaskmill", "--domains", "tests,nope", "--burst")
    assert "tests" in str(info.value)  # lists the known domains
    assert not Worker.objects.exists()


@pytest.mark.parametrize("value", ["0", "-3", "two"])
def test_runtaskmill__concurrency_below_one_is_an_error(value):
    with pytest.raises(CommandError, match="--concurrency"):
        call_command("runtaskmill", "--concurrency", value, "--burst")


def manage(*args: str) -> subprocess.CompletedProcess[str]:
    """``manage.py`` in a subprocess: --help, --version and argument errors exit the process."""
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args, "--settings=tests.settings"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def test_runtaskmill__concurrency_zero_reads_as_a_sentence():
    found = manage("runtaskmill", "--concurrency", "0")
    assert found.returncode == 2
    assert (
        "argument --concurrency: the number of tasks this worker runs at once must be 1 or "
        "more, not 0" in " ".join(found.stderr.split())
    )


def test_runtaskmill__help_shows_the_defaults():
    text = " ".join(manage("runtaskmill", "--help").stdout.split())
    assert "--concurrency N Tasks this process runs at once, its local pool size (default: 4)" in (
        text
    )
    assert "(default: SHUTDOWN_TIMEOUT, 5)" in text  # tests/settings.py sets 5 s
    assert "(default: POLL_INTERVAL, 0.1)" in text


def test_runtaskmill__version_is_this_packages():
    found = manage("runtaskmill", "--version").stdout
    assert found.startswith(f"taskmill-django {metadata.version('taskmill-django')} (Django ")


# --- migrations ------------------------------------------------------------------------------


def test_migrations__models_and_migrations_agree():
    out = StringIO()
    try:
        call_command(
            "makemigrations", "taskmill_django", "--check", "--dry-run", stdout=out, stderr=out
        )
    except SystemExit:  # pragma: no cover - only on failure
        pytest.fail(f"models have changes without a migration:\n{out.getvalue()}")
