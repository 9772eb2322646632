"""Small database helpers shared by the store functions."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction

T = TypeVar("T")
logger = logging.getLogger(__name__)

# Keep IN (...) lists and bulk inserts well below SQLite's 32k variable limit and PostgreSQL's
# 65k parameter limit, whatever the column count.
CHUNK = 500


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def is_postgres() -> bool:
    return connection.vendor == "postgresql"


def qn(name: str) -> str:
    return connection.ops.quote_name(name)


def placeholders(values: Iterable[object]) -> str:
    return ", ".join(["%s"] * len(list(values)))


Statements = Sequence[tuple[str, Sequence[Any]]]


@dataclass
class Ahead:
    """Statements to send ahead of the next ``run_together`` that is handed this object, in
    the same round trip, and their rows once sent (``rows``). ``send`` runs them on their own
    if nothing took them."""

    statements: Statements
    rows: list[list[tuple[Any, ...]]] | None = None
    # Statements sent first whose rows nobody reads (a SET LOCAL, say).
    prelude: Statements = ()
    # Statements sent right after ``statements`` whose rows nobody reads (undoing what the
    # prelude set, say).
    coda: Statements = ()

    def send(self) -> None:
        if self.rows is None:
            run_together([], self)


# Statements worth keeping prepared on PostgreSQL (``preparable``): SQL text -> whether to
# prepare it (False for settings sent with them, which have nothing to plan).
_PREPARABLE: dict[str, bool] = {}


def preparable(sql: str, *, prepare: bool = True) -> str:
    """Mark ``sql`` as a statement of the worker's cycle that ``run_together`` may send as a
    prepared statement: its text is the same at every call and its parameters are plain
    values. Returns ``sql``."""
    _PREPARABLE[sql] = prepare
    return sql


def run_together(statements: Statements, ahead: Ahead | None = None) -> list[list[tuple[Any, ...]]]:
    """Run ``statements`` in order and return the rows of each (none for a statement that
    returns no rows, such as a plain UPDATE). Those of ``ahead``, unless sent already, run
    first (its prelude, its statements, its coda); their rows go to ``ahead.rows``.

    With psycopg 3 they travel in one round trip instead of one each: when every one of them
    is ``preparable``, in a pipeline of prepared statements (the BEGIN that opens the
    transaction goes with them, and PostgreSQL neither parses nor plans them again); otherwise
    as one simple query (client-side binding, Django's default). Each statement still takes
    its own snapshot (READ COMMITTED), so a read placed after a lock sees what was committed
    before the lock was granted. Other drivers and settings run them one by one.
    """
    if ahead is not None and ahead.rows is None:
        sent = [*ahead.prelude, *ahead.statements, *ahead.coda]
        results = run_together([*sent, *statements])
        ahead.rows = results[len(ahead.prelude) : len(ahead.prelude) + len(ahead.statements)]
        return results[len(sent) :]
    if not statements:
        return []
    if all(sql in _PREPARABLE for sql, _ in statements) and pipelines():
        return _run_pipelined(statements)
    with connection.cursor() as cursor:
        if not _sends_many_at_once():
            results = []
            for sql, params in statements:
                cursor.execute(sql, params)
                results.append(_rows(cursor))
            return results
        db = connections[DEFAULT_DB_ALIAS]
        loader = _timestamp_loader(db, db.connection)
        if loader is not None:  # gated claims return their rows here
            cursor.cursor.adapters.register_loader(TIMESTAMPTZ_OID, loader)
        cursor.execute(
            "; ".join(sql for sql, _ in statements),
            [value for _, params in statements for value in params],
        )
        results = [_rows(cursor)]
        while cursor.nextset():
            results.append(_rows(cursor))
    return results


def _rows(cursor: Any) -> list[tuple[Any, ...]]:
    # psycopg 3 builds a Column object per column on every ``description`` access (a claim
    # returns some fifty): its result's field count says the same for nothing.
    result = getattr(cursor, "pgresult", None)
    if result is not None:
        return list(cursor.fetchall()) if result.nfields else []
    return list(cursor.fetchall()) if cursor.description is not None else []


def _sends_many_at_once() -> bool:
    if connection.vendor != "postgresql":
        return False
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    options = connection.settings_dict.get("OPTIONS") or {}
    return is_psycopg3 and not options.get("server_side_binding")


def _run_pipelined(statements: Statements) -> list[list[tuple[Any, ...]]]:
    """``statements`` in one psycopg pipeline, each prepared once per connection (the
    ``preparable`` ones) and run by name after that: one round trip."""
    db = connections[DEFAULT_DB_ALIAS]  # resolved once: the hot path of every cycle
    db.ensure_connection()
    psycopg_connection = _allow_preparing(db)
    loader = _timestamp_loader(db, psycopg_connection)
    cursors = []
    with db.wrap_database_errors:  # errors surface when the pipeline syncs
        with psycopg_connection.pipeline():
            for sql, params in statements:
                cursor = _wrapped(db, psycopg_connection, _PREPARABLE[sql], loader)
                cursor.execute(sql, params)
                cursors.append(cursor)
        return [_rows(cursor) for cursor in cursors]


@functools.cache
def _pipeline_supported() -> bool:
    import psycopg

    return bool(psycopg.Pipeline.is_supported())


def pipelines() -> bool:
    """Prepared statements in a pipeline: PostgreSQL through psycopg 3 with a libpq that
    pipelines, off a transaction-mode pooler, unless the project turned preparing off."""
    if not _prepares():
        return False
    try:
        return _pipeline_supported()
    except (ImportError, AttributeError):
        return False


def _prepares() -> bool:
    """May statements be prepared on this connection? Not off PostgreSQL with psycopg 3, not
    behind a transaction-mode pooler (``TRANSACTION_POOLING``: a prepared statement belongs
    to one server connection), not where ``OPTIONS["prepare_threshold"]`` is set to None."""
    from ..conf import app_settings

    if connection.vendor != "postgresql" or app_settings.TRANSACTION_POOLING:
        return False
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    options = connection.settings_dict.get("OPTIONS") or {}
    if "prepare_threshold" in options and options["prepare_threshold"] is None:
        return False  # the project turned preparation off itself
    return bool(is_psycopg3)


def _allow_preparing(db: Any) -> Any:
    """The psycopg connection of ``db``, set to prepare what a cursor asks it to."""
    psycopg_connection = db.connection
    if psycopg_connection.prepare_threshold is None:
        # Django's default: psycopg then prepares nothing, even when asked. A threshold no
        # statement reaches lets explicit requests through and changes nothing else
        # (Django's own cursors bind on the client and never prepare).
        psycopg_connection.prepare_threshold = 2**31
    return psycopg_connection


TIMESTAMPTZ_OID = 1184


def _timestamp_loader(db: Any, psycopg_connection: Any) -> Any:
    """The loader this connection's cursors need for ``timestamptz`` values, else None.

    Django registers a loader of its own on every connection: psycopg's parser in pure Python
    plus a ``replace(tzinfo=...)``, paid for the timestamps of every claimed row (a claim of
    32 rows took 2.1 to 2.3 ms with it, 1.4 to 1.6 ms without, in a loop on a 2-core
    machine). Where the session's time zone is the one Django wants (with ``USE_TZ``, UTC
    unless the database's ``TIME_ZONE`` says otherwise), psycopg's own loader, compiled when
    psycopg is installed with its C extension, returns the same aware datetimes. Otherwise
    Django's rule applies (what its ``create_cursor`` checks for its own cursors).
    """
    from psycopg.pq import Format
    from psycopg.types.datetime import TimestamptzLoader

    zone = db.timezone  # None without USE_TZ: Django's loader makes the values naive
    if zone is not None and psycopg_connection.info.timezone == zone:
        return TimestamptzLoader
    loader = psycopg_connection.adapters.get_loader(TIMESTAMPTZ_OID, Format.TEXT)
    if zone == getattr(loader, "timezone", None):
        return None
    from django.db.backends.postgresql.psycopg_any import BaseTzLoader

    return type("SpecificTzLoader", (BaseTzLoader,), {"timezone": zone})


def _wrapped(db: Any, psycopg_connection: Any, prepare: bool, loader: Any) -> Any:
    raw = _cursor_class(prepare)(psycopg_connection)
    if loader is not None:
        raw.adapters.register_loader(TIMESTAMPTZ_OID, loader)
    return db._prepare_cursor(raw)


def prepared_cursor() -> Any:
    """A cursor whose statements PostgreSQL keeps prepared, for the few statements run once
    per task (a single submission): parsing and planning them cost more server time than
    executing them.

    Django's PostgreSQL cursors bind parameters on the client and Django turns psycopg's
    automatic preparation off (for transaction-mode poolers). This cursor binds them on the
    server and prepares what it runs, wrapped as Django wraps every cursor (query logging,
    execute wrappers, error translation). Where statements may not be prepared
    (``_prepares``), and on other databases, it is Django's ordinary cursor.
    """
    if not _prepares():
        return connection.cursor()
    db = connections[DEFAULT_DB_ALIAS]
    db.ensure_connection()
    psycopg_connection = _allow_preparing(db)
    with db.wrap_database_errors:
        return _wrapped(db, psycopg_connection, True, _timestamp_loader(db, psycopg_connection))


@functools.cache
def _cursor_class(prepare: bool) -> type:
    from django.db.backends.postgresql.base import ServerBindingCursor

    if not prepare:
        return ServerBindingCursor  # psycopg prepares nothing under the threshold set above

    class PreparingCursor(ServerBindingCursor):
        def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            kwargs.setdefault("prepare", True)
            return super().execute(query, params, **kwargs)  # type: ignore[misc]

        def _send_query_prepared(self, name: Any, pgq: Any, *args: Any, **kwargs: Any) -> Any:
            # psycopg records the query only when it runs it unprepared; Django's query log
            # (DEBUG, CaptureQueriesContext, the debug toolbar) reads it from there.
            self._query = pgq
            return super()._send_query_prepared(name, pgq, *args, **kwargs)  # type: ignore[misc]

    return PreparingCursor


def notify_workers() -> None:
    """Wake idle PostgreSQL workers; delivered when the surrounding transaction commits."""
    if is_postgres():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify('taskmill', '')")


RESULT_CHANNEL = "taskmill_result"
"""PostgreSQL channel of terminal outcomes that someone waits for; the payload is the task id."""


def notify_results(task_ids: Sequence[int]) -> None:
    """Tell waiters (``SubmitOutcome.wait``) that these tasks reached a terminal state;
    delivered when the surrounding transaction commits. Only called for rows with
    ``has_waiter``, so an outcome nobody waits for costs nothing."""
    if task_ids and is_postgres():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_notify(%s, x::text) FROM unnest(%s::bigint[]) AS x",
                [RESULT_CHANNEL, list(task_ids)],
            )


def send_on_commit(signal, task_type: str, **kwargs: object) -> None:  # type: ignore[no-untyped-def]
    """Send a task signal after commit, and skip all work when nobody listens."""
    # ``receivers`` first: it costs nothing, while finding the sender and asking
    # ``has_listeners`` costs microseconds on every outcome of every worker cycle.
    if signal.receivers and signal.has_listeners(_sender(task_type)):
        transaction.on_commit(lambda: send_task_signal(signal, task_type, **kwargs))


def _sender(task_type: str) -> object:
    from ..registry import find_task

    return find_task(task_type) or task_type


def send_task_signal(signal, task_type: str, **kwargs: object) -> None:  # type: ignore[no-untyped-def]
    """Send with the TaskDefinition as sender (so ``connect(sender=thumbnail)`` works) and
    ``task_type`` as a keyword. A failing receiver is logged, never allowed to break the
    transition that already committed or the worker loop that sent it."""
    sender = _sender(task_type)
    for receiver, result in signal.send_robust(sender=sender, task_type=task_type, **kwargs):
        if isinstance(result, Exception):
            logger.error("signal receiver %r failed: %s", receiver, result, exc_info=result)
