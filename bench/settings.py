"""Benchmark settings. The database comes from TASKMILL_BENCH_DB (sqlite | postgres).

SQLite: a file named by TASKMILL_BENCH_SQLITE (WAL, IMMEDIATE transactions), shared by the bench
process and its worker subprocesses. PostgreSQL: database ``taskmill_bench`` on 127.0.0.1:5432,
user postgres (TASKMILL_PG_HOST / _PORT / _USER / _PASSWORD override). bench/run.py creates and
drops the database; do not point this at one you care about.

TASKMILL is left at the library defaults so the numbers are what a project gets out of the box;
logging is quiet (WARNING) so workers do not spend time formatting log lines.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

SECRET_KEY = "taskmill-bench"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS: list[str] = []
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "taskmill_django",
    "bench.benchapp",
]

DB = os.environ.get("TASKMILL_BENCH_DB", "sqlite")

if DB == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ.get("TASKMILL_BENCH_PG_NAME", "taskmill_bench"),
            "HOST": os.environ.get("TASKMILL_PG_HOST", "127.0.0.1"),
            "PORT": os.environ.get("TASKMILL_PG_PORT", "5432"),
            "USER": os.environ.get("TASKMILL_PG_USER", "postgres"),
            "PASSWORD": os.environ.get("TASKMILL_PG_PASSWORD", ""),
        }
    }
elif DB == "sqlite":
    _default_file = Path(tempfile.gettempdir()) / "taskmill-bench.sqlite3"
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("TASKMILL_BENCH_SQLITE", str(_default_file)),
            "OPTIONS": {
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    }
else:
    raise RuntimeError(f"TASKMILL_BENCH_DB must be sqlite or postgres, got {DB!r}")

TASKMILL: dict[str, object] = {}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {"taskmill_django": {"handlers": [], "level": "WARNING", "propagate": True}},
}
