"""An IO sampler for worker subprocesses: traffic at the rate (bytes per second of disk
writes) written in a file beside the task log, so a test can saturate and calm the "disk"."""

from __future__ import annotations

import os
import time
from pathlib import Path


def rate_file() -> Path:
    return Path(os.environ["TASKMILL_TEST_LOG"]).with_name("io-rate")


class FileRate:
    def __init__(self) -> None:
        self.total = 0.0
        self.last = time.monotonic()

    def counters(self) -> dict[str, int]:
        now = time.monotonic()
        try:
            rate = float(rate_file().read_text() or 0)
        except (OSError, ValueError):
            rate = 0.0
        self.total += rate * (now - self.last)
        self.last = now
        return {"disk_write": int(self.total)}
