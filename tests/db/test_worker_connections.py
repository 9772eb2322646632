"""The worker's own connections carry statement and lock timeouts (RELIABILITY G13); task code's
connections, and connections through a transaction-mode pooler, are left as configured."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connection, transaction
from django.test import override_settings

from taskmill_django.worker import connections

pytestmark = pytest.mark.django_db(transaction=True)


def limits_seen(mark: bool) -> tuple[Any, ...]:
    """The session's timeouts as a fresh connection opened in a new thread sees them."""
    seen: list[tuple[Any, ...]] = []

    def probe() -> None:
        if mark:
            connections.mark_worker_thread()
        try:
            with connection.cursor() as cursor:
                if connection.vendor == "postgresql":
                    cursor.execute(
                        "SELECT current_setting('statement_timeout'), "
                        "current_setting('lock_timeout'), "
                        "current_setting('idle_in_transaction_session_timeout')"
                    )
                elif connection.vendor == "mysql":
                    cursor.execute("SELECT @@max_statement_time, @@innodb_lock_wait_timeout")
                else:
                    cursor.execute("PRAGMA busy_timeout")
                seen.append(tuple(cursor.fetchone()))
        finally:
            connection.close()

    connections.install()
    try:
        thread = threading.Thread(target=probe)
        thread.start()
        thread.join(30)
    finally:
        connections.uninstall()
    return seen[0]


@pytest.mark.postgres_only
def test_worker_connection__postgres_session_has_both_timeouts():
    with override_settings(TASKMILL={"STATEMENT_TIMEOUT": 12, "LOCK_TIMEOUT": 1.5}):
        assert limits_seen(mark=True) == ("12s", "1500ms", "12s")


@pytest.mark.postgres_only
def test_worker_connection__task_code_connections_are_left_alone():
    with override_settings(TASKMILL={"STATEMENT_TIMEOUT": 12, "LOCK_TIMEOUT": 1.5}):
        assert limits_seen(mark=False) == ("0", "0", "0")


@pytest.mark.postgres_only
def test_worker_connection__no_session_settings_through_a_transaction_pooler():
    with override_settings(TASKMILL={"TRANSACTION_POOLING": True}):
        assert limits_seen(mark=True) == ("0", "0", "0")


@pytest.mark.postgres_only
def test_worker_connection__each_pooled_transaction_carries_its_own_timeouts():
    """Through a transaction-mode pooler the limits are transaction-local (G13): set in each
    transaction a worker thread opens, gone when it ends, so they never leak to the pooled
    server connection's next client."""
    seen: list[tuple[Any, ...]] = []

    def limits() -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT current_setting('statement_timeout'), current_setting('lock_timeout'), "
                "current_setting('idle_in_transaction_session_timeout')"
            )
            seen.append(tuple(cursor.fetchone()))

    def probe() -> None:
        connections.mark_worker_thread()
        try:
            for _ in range(2):
                with transaction.atomic():
                    limits()
                    limits()
                limits()  # autocommit: the role's settings only
        finally:
            connection.close()

    with override_settings(
        TASKMILL={"TRANSACTION_POOLING": True, "STATEMENT_TIMEOUT": 12, "LOCK_TIMEOUT": 1.5}
    ):
        connections.install()
        try:
            thread = threading.Thread(target=probe)
            thread.start()
            thread.join(30)
        finally:
            connections.uninstall()
    bounded, unbounded = ("12s", "1500ms", "12s"), ("0", "0", "0")
    assert seen == [bounded, bounded, unbounded] * 2


@pytest.mark.postgres_only
def test_worker_connection__postgres_sockets_get_keepalives():
    connections.install()
    connections.uninstall()
    options = connection.settings_dict["OPTIONS"]
    assert options["keepalives"] == 1
    assert options["tcp_user_timeout"] > 0


@pytest.mark.mariadb_only
def test_worker_connection__mariadb_session_has_both_timeouts():
    with override_settings(TASKMILL={"STATEMENT_TIMEOUT": 12, "LOCK_TIMEOUT": 2}):
        statement, lock = limits_seen(mark=True)
    assert (float(statement), int(lock)) == (12.0, 2)
