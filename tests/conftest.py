"""Shared fixtures: waiting, JSON-lines task logs, and real ``runtaskmill`` worker processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import django
import pytest
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent

# The Django Tasks backend exists only where django.tasks does (Django 6+); on older Django its
# tests are not collected at all (neither run nor counted).
collect_ignore = [] if django.VERSION >= (6, 0) else ["db/test_django_tasks_backend.py"]


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s: {predicate}")
        time.sleep(interval)


class TaskLog:
    """Events written by tests/testapp/tasks.py from any process (one JSON object per line)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def events(self, event: str | None = None) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        rows = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
        return [r for r in rows if event is None or r["event"] == event]


@pytest.fixture
def task_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TaskLog:
    path = tmp_path / "tasks.jsonl"
    monkeypatch.setenv("TASKMILL_TEST_LOG", str(path))
    return TaskLog(path)


class WorkerProcess:
    """A real ``manage.py runtaskmill`` subprocess sharing the test database."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "manage.py"),
                "runtaskmill",
                "--settings=tests.settings",
                *args,
            ],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def terminate(self) -> None:
        self.send(signal.SIGTERM)

    def kill(self) -> None:
        self.send(signal.SIGKILL)

    def wait(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout)

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            if self.proc.poll() is None:
                os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


@pytest.fixture
def worker_factory(
    transactional_db: None, tmp_path: Path, task_log: TaskLog
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start workers with ``worker_factory("--concurrency", "4")``; all are killed at teardown
    (before the test database is flushed, so no lock is left behind)."""
    started: list[WorkerProcess] = []
    env = dict(os.environ)
    env["TASKMILL_TEST_DB_NAME"] = str(connection.settings_dict["NAME"])
    env["TASKMILL_TEST_LOG"] = str(task_log.path)
    env.pop("DJANGO_SETTINGS_MODULE", None)

    def start(
        *args: str, settings: dict[str, Any] | None = None, environ: dict[str, str] | None = None
    ) -> WorkerProcess:
        """``settings``: TASKMILL entries for this worker only (see tests/settings.py);
        ``environ``: extra environment variables (e.g. ``TASKMILL_PG_PORT``, a faked clock)."""
        own = {**env, "TASKMILL_TEST_SETTINGS": json.dumps(settings)} if settings else env
        own = {**own, **environ} if environ else own
        worker = WorkerProcess(list(args), own, tmp_path / f"worker-{len(started)}.log")
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.close()
    connection.close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``postgres_only`` (``mariadb_only``) are deselected, not skipped, on other
    databases, so a run never counts them as passing there."""
    foreign = {"postgresql": "mariadb_only", "mysql": "postgres_only"}.get(connection.vendor)
    markers = [foreign] if foreign else ["postgres_only", "mariadb_only"]
    keep, drop = [], []
    for item in items:
        (drop if any(item.get_closest_marker(m) for m in markers) else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
