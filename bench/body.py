"""The body every bench job runs, in taskmill's tasks and in the raw-SQL floor alike.

One small append to a per-process file: the least a real task body does. Like any I/O it
releases the GIL once, so a worker's claim loop can wake between tasks, as it does under real
workloads (a body that never releases the GIL lets the loop wait for the whole pool and makes
claim batches look bigger than they are). No Django here: bench/rawloop.py imports it too.
"""

from __future__ import annotations

import os
import tempfile
import time

_log: int | None = None
_log_pid: int | None = None


def append_line(n: object) -> None:
    """Append ``n`` and the wall-clock time to this process's log (reopened after a fork)."""
    global _log, _log_pid
    if _log is None or _log_pid != os.getpid():
        folder = os.environ.get("TASKMILL_BENCH_LOG_DIR") or tempfile.gettempdir()
        _log = os.open(
            os.path.join(folder, f"taskmill-bench-{os.getpid()}.log"),
            os.O_WRONLY | os.O_APPEND | os.O_CREAT,
            0o644,
        )
        _log_pid = os.getpid()
    os.write(_log, f"{n} {time.time():.6f}\n".encode())
