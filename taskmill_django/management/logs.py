"""How ``runtaskmill`` logs: plain lines for people, or one JSON object per line for shippers.

Lines carry ids, types, counts and durations, never payload values: a payload may hold
credentials or personal data, and logs travel further than the database.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, and the record's ``fields``
    (``extra={"fields": {...}}``) as keys of their own."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update({k: v for k, v in fields.items() if k not in entry})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure(log_format: str, verbosity: int) -> None:
    """Give the ``taskmill_django`` loggers a handler unless the project configured one, and
    turn the per-task lines on at verbosity 2 and above."""
    package = logging.getLogger("taskmill_django")
    if log_format == "json":
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        package.handlers = [handler]
        package.propagate = False
        package.setLevel(logging.INFO)
    elif not package.handlers and not logging.root.handlers:
        logging.basicConfig(level=logging.INFO, format=TEXT_FORMAT)
    if verbosity == 0:
        package.setLevel(logging.WARNING)
    tasks = logging.getLogger("taskmill_django.tasks")
    tasks.setLevel(logging.INFO if verbosity >= 2 else logging.WARNING)
