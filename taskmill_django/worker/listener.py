"""Wake-ups on PostgreSQL: LISTEN on a dedicated session, so an idle worker claims work as
soon as it is submitted instead of at its next poll.

LISTEN needs a session of its own. Behind a pooler in transaction mode (PgBouncer), the pooled
connection cannot hold one: ``LISTEN_DATABASE`` names a database alias that reaches PostgreSQL
directly (or through a session-mode pool) and is used for listening only. Without one there, or
without psycopg 3, the worker wakes by polling every ``POLL_INTERVAL`` and says so at start.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from django.db import connections
from django.db.utils import DEFAULT_DB_ALIAS

from ..conf import app_settings

logger = logging.getLogger(__name__)

CHANNEL = "taskmill"
# A submission statement of at least this many rows (its NOTIFY payload) makes every
# listening worker check the planner statistics at once.
BULK_ROWS = 500


def listen_alias() -> str | None:
    """The alias to LISTEN on, or None when this deployment must poll (and why is logged)."""
    alias = app_settings.LISTEN_DATABASE or DEFAULT_DB_ALIAS
    if connections[alias].vendor != "postgresql":
        return None
    if alias == DEFAULT_DB_ALIAS and app_settings.TRANSACTION_POOLING:
        logger.warning(
            "TRANSACTION_POOLING is on and LISTEN_DATABASE is not set: this worker cannot "
            "LISTEN through the pooler and wakes by polling every %ss; set LISTEN_DATABASE to "
            "an alias that reaches PostgreSQL directly",
            app_settings.POLL_INTERVAL,
        )
        return None
    try:
        import psycopg  # noqa: F401
    except ImportError:
        logger.warning(
            "psycopg 3 is not installed: waking by polling every %ss", app_settings.POLL_INTERVAL
        )
        return None
    return alias


class Listener:
    """A thread holding one LISTEN session; ``wake`` on any notification, ``bulk`` when a
    large batch was submitted. Reconnects after a lost connection, once a second."""

    def __init__(self, alias: str, wake: Callable[[], None], bulk: Callable[[], None]) -> None:
        self.alias = alias
        self._wake = wake
        self._bulk = bulk
        self._stop = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._run, name="taskmill-listen", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        import psycopg

        params = connections[self.alias].get_connection_params()
        params.pop("cursor_factory", None)
        params.pop("context", None)
        while not self._stop.is_set():
            try:
                with psycopg.connect(**params, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    # Anything submitted while we were not listening is found by a claim now.
                    self._wake()
                    while not self._stop.is_set():
                        for notice in conn.notifies(timeout=1.0, stop_after=1):
                            if notice.payload.isdigit() and int(notice.payload) >= BULK_ROWS:
                                self._bulk()
                            self._wake()
            except Exception as exc:
                logger.debug("listen connection lost: %s", exc)
                self._stop.wait(1.0)
