"""Benchmark settings. The database comes from TASKMILL_BENCH_DB (sqlite | postgres).

SQLite: a file named by TASKMILL_BENCH_SQLITE (WAL, IMMEDIATE transactions), shared by the bench
process and its worker subprocesses. PostgreSQL: database ``taskmill_bench`` on 127.0.0.1:5432,
user postgres (TASKMILL_PG_HOST / _PORT / _USER / _PASSWORD override). bench/run.py creates and
drops the database; do not point this at one you care about.

TASKMILL is left at the library defaults so the numbers are what a project gets out of the box,
except that TASKMILL_BENCH_SETTINGS (a JSON object, set by bench/gates.py for its worker
subprocesses) is merged into it. Logging is quiet (WARNING) so workers do not spend time
formatting log lines. The admin and the REST API are installed (ROOT_URLCONF ``bench.urls``) so
bench/operator.py can time the operator pages the way a browser reaches them.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

SECRET_KEY = "taskmill-bench"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["testserver"]  # the test Client of bench/operator.py
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "rest_framework",
    "django_filters",
    "taskmill_django",
    "bench.benchapp",
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "bench.urls"
STATIC_URL = "static/"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
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

TASKMILL: dict[str, object] = json.loads(os.environ.get("TASKMILL_BENCH_SETTINGS") or "{}")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {"taskmill_django": {"handlers": [], "level": "WARNING", "propagate": True}},
}
