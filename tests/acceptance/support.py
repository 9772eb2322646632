"""Helpers shared by the acceptance tests: worker identities, stopping a worker safely, and the
environment for plain Python subprocesses that share the test database."""

from __future__ import annotations

import os
import signal
import sqlite3
import uuid
from datetime import timedelta
from typing import Any

from django.db import connection

from taskmill_django.models import TaskHistory, Worker
from tests.conftest import ROOT, WorkerProcess, wait_until

# SQLite stamps started_at with millisecond precision while history stamps finished_at with
# microseconds: intervals that merely touch may seem to overlap by under a millisecond.
STAMP_SLACK = timedelta(milliseconds=5)


def finished(ids: list[int]) -> bool:
    """Every task of ``ids`` has reached history."""
    return TaskHistory.objects.filter(id__in=ids).count() == len(ids)


def worker_id_of(worker: WorkerProcess, timeout: float = 30.0) -> uuid.UUID:
    """The id of the (first) worker row registered by this process."""
    return wait_until(
        lambda: Worker.objects.filter(pid=worker.pid).values_list("id", flat=True).first(),
        timeout=timeout,
    )


def sqlite_write_lock_is_free() -> bool:
    """True when nobody holds the SQLite write lock (always True on other databases)."""
    if connection.vendor != "sqlite":
        return True
    probe = sqlite3.connect(
        str(connection.settings_dict["NAME"]), timeout=0.2, isolation_level=None
    )
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        probe.close()


def freeze(worker: WorkerProcess, attempts: int = 50) -> None:
    """SIGSTOP ``worker`` at a moment it holds no SQLite write lock.

    A process stopped inside a write transaction blocks every other SQLite writer until it is
    resumed: that is SQLite's single-writer design, not the scenario under test, so the test
    resumes and stops again until the worker is frozen outside a transaction.
    """
    for _ in range(attempts):
        worker.send(signal.SIGSTOP)
        if sqlite_write_lock_is_free():
            return
        worker.send(signal.SIGCONT)
        wait_until(sqlite_write_lock_is_free, timeout=30, interval=0.01)
    raise AssertionError("worker never paused outside a write transaction")


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for a plain ``python -c`` process using tests.settings and the test DB."""
    env = dict(os.environ)
    env["TASKMILL_TEST_DB_NAME"] = str(connection.settings_dict["NAME"])
    env["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


def counts(values: list[Any]) -> dict[Any, int]:
    result: dict[Any, int] = {}
    for value in values:
        result[value] = result.get(value, 0) + 1
    return result
