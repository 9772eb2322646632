"""``python3 dev.py demo`` with its output piped (``| tee``; here ``| cat``): Ctrl-C stops the
pipe's reader too, and the demo must still stop its worker, which runs in a session of its own
where the terminal's Ctrl-C does not reach."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.conftest import ROOT, wait_until


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serving(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - local test URL
            return response.status == 200
    except OSError:
        return False


def worker_pid(db: Path) -> int | None:
    """The pid of the demo's worker, from its row in the demo database."""
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            row = conn.execute("SELECT pid FROM taskmill_worker").fetchone()
    except sqlite3.Error:
        return None
    return row[0] if row else None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_demo__ctrl_c_with_piped_output_leaves_no_worker_behind(tmp_path):
    db, port, log_path = tmp_path / "demo.sqlite3", free_port(), tmp_path / "demo.log"
    env = {**os.environ, "TASKMILL_DEMO_SQLITE": str(db)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    # As a user types it: the `python3` on the PATH, not this suite's interpreter (which may be
    # the Django 6 venv's: dev.py would rebuild the project venv with it).
    python = shutil.which("python3") or sys.executable
    with log_path.open("wb") as log:
        pipeline = subprocess.Popen(
            ["bash", "-c", f"{python} dev.py demo --port {port} | cat"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, like a terminal's foreground job
        )
        try:
            wait_until(lambda: serving(f"http://127.0.0.1:{port}/admin/login/"), timeout=120)
            pid = wait_until(lambda: worker_pid(db), timeout=60)

            os.killpg(pipeline.pid, signal.SIGINT)  # Ctrl-C: bash, dev.py, the server and cat
            # The worker logs to stderr, which is not piped: "worker stopping" reaches the log.
            wait_until(lambda: "worker stopping" in log_path.read_text(errors="replace"))
            with contextlib.suppress(ProcessLookupError):  # unless everything is gone already
                os.killpg(pipeline.pid, signal.SIGINT)  # again: the worker releases its tasks

            wait_until(lambda: not alive(pid), timeout=60)
            assert pipeline.wait(30) is not None
        finally:
            if pipeline.poll() is None:
                os.killpg(pipeline.pid, signal.SIGKILL)
    assert "Ctrl-C stops the server and the worker" in log_path.read_text(errors="replace")
