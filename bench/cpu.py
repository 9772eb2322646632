"""CPU time per task: the worker processes' and the PostgreSQL server's, over one measurement.

Read from ``/proc/<pid>/stat`` (utime + stime, every thread of the process, in clock ticks of
``SC_CLK_TCK``, 10 ms on Linux). The workers are the bench's own subprocesses. The server side
is the sum over the backends serving the bench database (``pg_stat_activity`` rows of that
database, the bench process's own connection left out): the processes that parse, plan and run
the workers' statements. Shared server processes (WAL writer, checkpointer, autovacuum
launcher) serve every database on the server, which other users share on this machine, so they
are not counted; their part (mostly flushing WAL) is small next to the backends'. A backend
that appears during the measurement counts in full; one that ends before it is over is lost,
and ``backends_lost`` says how many were. Only meaningful when PostgreSQL runs on this machine
(``server`` is None otherwise, or on SQLite, where the server is the workers themselves).

Both are wall-clock independent: on a machine shared with other work, CPU seconds per task
move far less than tasks per second do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

TICK = 1.0 / os.sysconf("SC_CLK_TCK")


def process_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` so far, or None when it is gone or not readable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read().decode(errors="replace")
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) * TICK  # utime, stime (fields 14 and 15)


def server_backends(connection: Any, exclude: frozenset[int] = frozenset()) -> list[int] | None:
    """Pids of the PostgreSQL backends serving this database, not counting ``connection``'s
    nor ``exclude``; None on other databases or when the server's processes are not visible
    here."""
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        pids = [row[0] for row in cursor.fetchall() if row[0] not in exclude]
    if not any(_is_postgres(pid) for pid in pids):
        return None
    return pids


def _is_postgres(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/comm", "rb") as handle:
            return handle.read().startswith(b"postgres")
    except OSError:
        return False


@dataclass
class Sample:
    """CPU seconds per process at one moment."""

    workers: dict[int, float | None]
    server: dict[int, float | None] | None


@dataclass
class CpuMeter:
    """``start()`` before the clock runs and ``stop()`` after it, then ``per_task(n)``."""

    worker_pids: list[int]
    connection: Any
    exclude: frozenset[int] = frozenset()  # backends of the bench's own connections
    first: Sample | None = None
    last: Sample | None = None
    notes: list[str] = field(default_factory=list)

    def _sample(self) -> Sample:
        server_pids = server_backends(self.connection, self.exclude)
        return Sample(
            workers={pid: process_seconds(pid) for pid in self.worker_pids},
            server=None
            if server_pids is None
            else {pid: process_seconds(pid) for pid in server_pids},
        )

    def start(self) -> None:
        self.first = self._sample()

    def stop(self) -> None:
        self.last = self._sample()

    def per_task(self, tasks: int) -> dict[str, Any]:
        """Microseconds of CPU per task: workers, server and their sum."""
        assert self.first is not None and self.last is not None
        workers = _delta(self.first.workers, self.last.workers)
        server = None
        lost = 0
        if self.first.server is not None and self.last.server is not None:
            server = _delta(self.first.server, self.last.server)
            lost = len(set(self.first.server) - set(self.last.server))
        per = 1e6 / tasks if tasks else 0.0
        return {
            "worker_us": None if workers is None else workers * per,
            "server_us": None if server is None else server * per,
            "total_us": None if workers is None or server is None else (workers + server) * per,
            "worker_seconds": workers,
            "server_seconds": server,
            "backends_lost": lost,
        }


def _delta(before: dict[int, float | None], after: dict[int, float | None]) -> float | None:
    total = 0.0
    for pid, end in after.items():
        if end is None:
            continue
        start = before.get(pid)
        total += end - (start or 0.0)
    return total if any(v is not None for v in after.values()) else None
