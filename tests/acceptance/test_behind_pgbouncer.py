"""Workers and submitters behind a real PgBouncer in transaction mode (``TRANSACTION_POOLING``).

Every statement of the worker's default database and of the submitting process goes through
the pooler, where consecutive transactions may land on different server connections: nothing
may rely on session state (session ``SET``, prepared statements, ``LISTEN``). Wake-ups come
through a direct ``LISTEN_DATABASE`` alias, or by polling when there is none.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from django.db import connection

from taskmill_django.enums import HistoryStatus
from taskmill_django.models import Task, TaskHistory, Worker
from tests.acceptance.pgbouncer import PgBouncer
from tests.acceptance.support import counts, subprocess_env
from tests.conftest import ROOT, TaskLog, wait_until

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.postgres_only,
    pytest.mark.pgbouncer,
]

POOLED = {"TRANSACTION_POOLING": True}


def pooled_env(bouncer: PgBouncer, direct: bool = False) -> dict[str, str]:
    """The default database through ``bouncer``; ``direct``: PostgreSQL itself as "direct"."""
    env = {"TASKMILL_PG_PORT": str(bouncer.port), "TASKMILL_TEST_POOLED": "1"}
    if direct:
        env["TASKMILL_TEST_DIRECT_PORT"] = str(connection.settings_dict["PORT"] or 5432)
    return env


def submit_through(bouncer: PgBouncer, numbers: range) -> None:
    """Submit ``record`` tasks from another process whose database is the pooler: one with
    ``submit()``, the rest in one ``submit_batch()``."""
    first, *rest = numbers
    script = (
        "import django; django.setup()\n"
        "from tests.testapp.tasks import record\n"
        f"record.submit(n={first})\n"
        f"record.submit_batch([{{'n': n}} for n in {rest!r}])\n"
    )
    settings = json.dumps(POOLED)
    env = subprocess_env(
        **pooled_env(bouncer), TASKMILL_TEST_SETTINGS=settings, TASKMILL_TEST_DB="postgres"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")


def listening_sessions() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query = 'LISTEN taskmill'"
        )
        return int(cursor.fetchone()[0])


def pooled_session_settings(bouncer: PgBouncer) -> set[str]:
    """``statement_timeout`` as other clients of the pooled server connections see it."""
    import psycopg

    settings = connection.settings_dict
    seen = set()
    with psycopg.connect(
        host="127.0.0.1",
        port=bouncer.port,
        user=settings["USER"],
        dbname=settings["NAME"],
        autocommit=True,
    ) as conn:
        for _ in range(20):
            seen.add(conn.execute("SHOW statement_timeout").fetchone()[0])
    return seen


def quiet(worker: Any) -> None:
    """No database error, retry or crash in the worker's log."""
    output = worker.output()
    for sign in ("Traceback", "retrying", "failed", "rror"):
        assert sign not in output, output


def registered(*workers: Any) -> None:
    pids = [w.pid for w in workers]
    wait_until(lambda: Worker.objects.filter(pid__in=pids).count() == len(pids), timeout=60)


def test_pgbouncer__tasks_submitted_through_the_pooler_wake_a_worker_listening_directly(
    pgbouncer: PgBouncer, worker_factory: Any, task_log: TaskLog
) -> None:
    """G1/G13 behind a pooler: a worker whose database is PgBouncer in transaction mode runs
    what another process submitted through it; the wake-up reaches it on its direct LISTEN
    session (it would otherwise poll only every 60 s)."""
    worker = worker_factory(
        "--concurrency",
        "2",
        settings={**POOLED, "LISTEN_DATABASE": "direct", "POLL_INTERVAL": 60},
        environ=pooled_env(pgbouncer, direct=True),
    )
    registered(worker)
    wait_until(lambda: listening_sessions() == 1, timeout=30)

    for numbers in (range(0, 20), range(20, 40)):
        submit_through(pgbouncer, numbers)
        wait_until(
            lambda n=numbers: TaskHistory.objects.filter(payload__n__in=list(n)).count() == 20,
            timeout=20,
        )

    assert "wake=listen" in worker.output()
    assert "login attempt" in pgbouncer.log()  # clients really went through the pooler
    assert sorted(e["n"] for e in task_log.events("run")) == list(range(40))
    assert TaskHistory.objects.filter(status=HistoryStatus.COMPLETED).count() == 40
    quiet(worker)
    # The worker's timeouts were transaction-local: none stuck to a pooled server connection.
    assert pooled_session_settings(pgbouncer) == {"0"}


def test_pgbouncer__without_listen_database_the_worker_polls_and_says_so_once(
    pgbouncer: PgBouncer, worker_factory: Any
) -> None:
    """Behind a transaction-mode pooler LISTEN cannot work: with no LISTEN_DATABASE the worker
    warns once at start, holds no LISTEN session, and still picks up work by polling."""
    worker = worker_factory(
        settings={**POOLED, "POLL_INTERVAL": 0.3}, environ=pooled_env(pgbouncer)
    )
    registered(worker)
    submit_through(pgbouncer, range(5))
    wait_until(lambda: TaskHistory.objects.count() == 5, timeout=20)
    submit_through(pgbouncer, range(5, 10))
    wait_until(lambda: TaskHistory.objects.count() == 10, timeout=20)

    output = worker.output()
    assert output.count("LISTEN_DATABASE is not set") == 1, output
    assert "wake=poll every 0.3s" in output
    assert listening_sessions() == 0
    quiet(worker)


def test_pgbouncer__several_pooled_workers_run_each_task_exactly_once(
    pgbouncer: PgBouncer, worker_factory: Any, task_log: TaskLog
) -> None:
    """G2/G3 behind a pooler: claims of three workers whose statements share a few pooled
    server connections never overlap; every task runs and completes exactly once."""
    settings = {**POOLED, "LISTEN_DATABASE": "direct"}
    workers = [
        worker_factory(
            "--concurrency", "4", settings=settings, environ=pooled_env(pgbouncer, direct=True)
        )
        for _ in range(3)
    ]
    registered(*workers)
    submit_through(pgbouncer, range(300))
    wait_until(lambda: TaskHistory.objects.count() == 300, timeout=60)
    for worker in workers:
        worker.terminate()
    for worker in workers:
        assert worker.wait(30) == 0, worker.output()
        quiet(worker)

    runs = counts([e["n"] for e in task_log.events("run")])
    rescued = set(
        TaskHistory.objects.filter(rescue_count__gt=0).values_list("payload__n", flat=True)
    )
    twice = {n for n, k in runs.items() if k != 1}
    assert twice <= rescued, f"run twice without a rescue: {sorted(twice - rescued)}"
    assert set(runs) == set(range(300))
    assert len({e["pid"] for e in task_log.events("run")}) > 1  # the work really was shared
    assert TaskHistory.objects.filter(status=HistoryStatus.COMPLETED).count() == 300
    assert not Task.objects.exists()
