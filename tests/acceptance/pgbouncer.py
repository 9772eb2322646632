"""A real PgBouncer (Debian's ``pgbouncer`` package) in transaction mode, started for one test.

It listens on a free local port and pools connections to the PostgreSQL the tests use. As root
PgBouncer refuses to run, so it is started with ``-u nobody`` from a directory nobody owns.
Where the binary is missing, the tests that need it are deselected (see conftest.py), never
skipped or passed.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Debian installs it in /usr/sbin, which a non-root PATH may lack.
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])


def pgbouncer_binary() -> str | None:
    """``TASKMILL_PGBOUNCER`` when set, else ``pgbouncer`` on the PATH or in /usr/sbin."""
    return shutil.which(os.environ.get("TASKMILL_PGBOUNCER") or "pgbouncer", path=SEARCH_PATH)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


CONFIG = """\
[databases]
* = host={host} port={port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen}
unix_socket_dir =
auth_type = trust
auth_file = {directory}/userlist.txt
pool_mode = transaction
default_pool_size = 8
max_client_conn = 200
server_reset_query =
ignore_startup_parameters = extra_float_digits
logfile = {directory}/pgbouncer.log
pidfile = {directory}/pgbouncer.pid
"""


class PgBouncer:
    """A running PgBouncer; ``port`` is where clients connect."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, directory: Path) -> None:
        self.process, self.port, self.directory = process, port, directory

    def log(self) -> str:
        path = self.directory / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextmanager
def running_pgbouncer(database: dict[str, Any]) -> Iterator[PgBouncer]:
    """PgBouncer in transaction mode in front of ``database`` (a Django settings dict)."""
    binary = pgbouncer_binary()
    assert binary, "pgbouncer is not installed"
    directory = Path(tempfile.mkdtemp(prefix="taskmill-pgbouncer-"))
    port = free_port()
    user = str(database.get("USER") or "postgres")
    (directory / "userlist.txt").write_text(f'"{user}" ""\n')
    config = directory / "pgbouncer.ini"
    config.write_text(
        CONFIG.format(
            host=database.get("HOST") or "127.0.0.1",
            port=database.get("PORT") or 5432,
            listen=port,
            directory=directory,
        )
    )
    command = [binary]
    if os.geteuid() == 0:  # PgBouncer will not run as root
        nobody = pwd.getpwnam("nobody")
        for path in (directory, *directory.iterdir()):
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
        command += ["-u", "nobody"]
    process = subprocess.Popen(
        [*command, str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    bouncer = PgBouncer(process, port, directory)
    try:
        _wait_ready(bouncer, database, user)
        yield bouncer
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


def _wait_ready(bouncer: PgBouncer, database: dict[str, Any], user: str) -> None:
    import psycopg

    deadline = time.monotonic() + 15
    while True:
        if bouncer.process.poll() is not None:
            raise AssertionError(f"pgbouncer exited: {bouncer.log()}")
        try:
            with psycopg.connect(
                host="127.0.0.1",
                port=bouncer.port,
                user=user,
                dbname=database["NAME"],
                connect_timeout=2,
            ) as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
