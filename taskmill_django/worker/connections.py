"""Bounded waits for the worker's own database connections (RELIABILITY G13).

A worker thread that waits on the database without limit can hold leases it cannot renew, or
keep outcomes unwritten forever: a statement stuck behind an operator's long transaction, a lock
never granted, a network path dropped without a reset (TCP keeps retransmitting for ~15
minutes). So every connection a worker thread opens (the claim loop, the heartbeat, maintenance,
the listener) is bounded:

- PostgreSQL: ``statement_timeout`` and ``lock_timeout`` for the session (and
  ``idle_in_transaction_session_timeout``, at the statement timeout), a connect timeout,
  TCP keepalives and ``tcp_user_timeout`` on the socket. Behind a transaction-mode pooler
  (``TRANSACTION_POOLING``) a session setting would stick to whichever server connection ran it
  and leak to that connection's other clients: there both are set with ``set_config(...,
  true)`` (``SET LOCAL``) at the start of each transaction a worker thread opens, and vanish at
  its end. A statement run outside a transaction (autocommit) is bounded only by the database
  role's own settings (``ALTER ROLE ... SET statement_timeout``); the socket options apply to
  both.
- MariaDB / MySQL: ``max_statement_time`` (MariaDB) or ``max_execution_time`` (MySQL), and
  ``innodb_lock_wait_timeout``.
- SQLite: the busy timeout (``LOCK_TIMEOUT``) unless the project set its own ``timeout``.

Task code is not bounded by these settings: connections opened by the threads that run task
bodies are left exactly as the project configured them.

A timeout is an ordinary database error: the loop that met it backs off and tries again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from django.db import connections
from django.db.backends.signals import connection_created
from django.db.utils import DEFAULT_DB_ALIAS

from ..conf import app_settings

_thread = threading.local()
# libpq socket options (seconds, except tcp_user_timeout in milliseconds), set unless the
# project already chose its own.
KEEPALIVES = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}


def mark_worker_thread() -> None:
    """Connections opened from now on by the calling thread are the worker's own (bounded)."""
    _thread.bounded = True


def install(aliases: tuple[str, ...] = (DEFAULT_DB_ALIAS,)) -> None:
    """Prepare this worker process: socket options for PostgreSQL aliases, and session limits
    applied to each connection a worker thread opens. Call once, before threads start."""
    for alias in aliases:
        settings_dict = connections[alias].settings_dict
        if connections[alias].vendor == "postgresql":
            options = settings_dict.setdefault("OPTIONS", {})
            for name, value in KEEPALIVES.items():
                options.setdefault(name, value)
    connection_created.connect(_bound_session, dispatch_uid="taskmill-worker-bounds")


def uninstall() -> None:
    connection_created.disconnect(dispatch_uid="taskmill-worker-bounds")


def _bound_session(sender: Any, connection: Any, **kwargs: Any) -> None:
    if not getattr(_thread, "bounded", False):
        return
    if connection.vendor == "postgresql" and app_settings.TRANSACTION_POOLING:
        if transaction_statement() and _bound_transaction not in connection.execute_wrappers:
            connection.execute_wrappers.append(_bound_transaction)
        return
    statements = session_statements(connection)
    if statements:
        with connection.cursor() as cursor:
            for sql in statements:
                cursor.execute(sql)


# libpq's PQTRANS_IDLE (psycopg 2 and 3 alike): connected, no transaction open.
_IDLE = 0


def _bound_transaction(
    execute: Callable[..., Any], sql: Any, params: Any, many: bool, context: dict[str, Any]
) -> Any:
    """Under ``TRANSACTION_POOLING``: the first statement of each transaction (autocommit off,
    none open yet) is preceded by the transaction-local timeouts, in that same transaction."""
    wrapper = context["connection"]
    if not wrapper.get_autocommit():
        raw = wrapper.connection
        if raw is not None and raw.info.transaction_status == _IDLE:
            bounds = transaction_statement()
            if bounds:
                context["cursor"].cursor.execute(bounds)
    return execute(sql, params, many, context)


def transaction_statement() -> str:
    """What bounds one PostgreSQL transaction's waits (its first statement under pooling)."""
    limits = [
        f"set_config('{name}', '{_milliseconds(seconds)}', true)"
        for name, seconds in _postgres_limits()
    ]
    return f"SELECT {', '.join(limits)}" if limits else ""


def _postgres_limits() -> list[tuple[str, Any]]:
    """PostgreSQL's limits and their seconds. A worker thread never leaves a transaction idle
    (no task code runs inside one), so one idle longer than a statement may take belongs to a
    frozen or cut-off worker: the server ends it, and the locks it held stop blocking the
    workers that rescue its tasks."""
    statement, lock = app_settings.STATEMENT_TIMEOUT, app_settings.LOCK_TIMEOUT
    named = (
        ("statement_timeout", statement),
        ("lock_timeout", lock),
        ("idle_in_transaction_session_timeout", statement),
    )
    return [(name, seconds) for name, seconds in named if seconds]


def _milliseconds(seconds: Any) -> int:
    return max(int(float(seconds) * 1000), 1)


def session_statements(connection: Any) -> list[str]:
    """What bounds a new worker connection's waits, for its vendor (none for a pooled one:
    its transactions are bounded one by one, see ``transaction_statement``)."""
    statement, lock = app_settings.STATEMENT_TIMEOUT, app_settings.LOCK_TIMEOUT
    if connection.vendor == "postgresql":
        if app_settings.TRANSACTION_POOLING:
            return []
        return [f"SET {name} = {_milliseconds(seconds)}" for name, seconds in _postgres_limits()]
    if connection.vendor == "mysql":
        found = []
        if statement:
            if connection.mysql_is_mariadb:
                found.append(f"SET SESSION max_statement_time = {float(statement):.3f}")
            else:
                found.append(f"SET SESSION max_execution_time = {_milliseconds(statement)}")
        if lock:
            found.append(f"SET SESSION innodb_lock_wait_timeout = {max(round(float(lock)), 1)}")
        return found
    if connection.vendor == "sqlite" and lock:
        if "timeout" not in (connection.settings_dict.get("OPTIONS") or {}):
            return [f"PRAGMA busy_timeout = {_milliseconds(lock)}"]
    return []
