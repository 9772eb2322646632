"""Test settings. The database comes from TASKMILL_TEST_DB (sqlite | postgres | mariadb).

SQLite uses a file, not memory, so worker subprocesses share the test database. Subprocesses
get the test database's real name through TASKMILL_TEST_DB_NAME. TASKMILL_TEST_PG_DBNAME and
TASKMILL_TEST_MARIADB_DBNAME name the test database (default test_taskmill), so two suites can
share one server (a checkout and a CI clone, say).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "taskmill-tests"  # noqa: S105 - test only
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "taskmill_django",
    "tests.testapp",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
STATIC_URL = "/static/"

DB = os.environ.get("TASKMILL_TEST_DB", "sqlite")
_name_override = os.environ.get("TASKMILL_TEST_DB_NAME")
_tmp = Path(os.environ.get("TASKMILL_TEST_TMP", "/tmp"))

if DB == "postgres":
    DATABASES: dict[str, dict[str, Any]] = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": _name_override or "taskmill",
            "HOST": os.environ.get("TASKMILL_PG_HOST", "127.0.0.1"),
            "PORT": os.environ.get("TASKMILL_PG_PORT", "5432"),
            "USER": os.environ.get("TASKMILL_PG_USER", "postgres"),
            "PASSWORD": os.environ.get("TASKMILL_PG_PASSWORD", ""),
            "TEST": {"NAME": os.environ.get("TASKMILL_TEST_PG_DBNAME", "test_taskmill")},
        }
    }
    # A process that reaches the default database through a pooler (TASKMILL_PG_PORT) can LISTEN
    # on PostgreSQL itself through "direct" (TASKMILL['LISTEN_DATABASE'] = "direct").
    if os.environ.get("TASKMILL_TEST_POOLED"):  # a transaction-mode pooler keeps no cursor
        DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True
    if os.environ.get("TASKMILL_TEST_DIRECT_PORT"):
        DATABASES["direct"] = {
            **DATABASES["default"],
            "PORT": os.environ["TASKMILL_TEST_DIRECT_PORT"],
        }
elif DB == "mariadb":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.mysql",
            "NAME": _name_override or "taskmill",
            "HOST": "127.0.0.1",
            "PORT": "3306",
            "USER": "root",
            "PASSWORD": "",
            "OPTIONS": {"isolation_level": "read committed", "charset": "utf8mb4"},
            "TEST": {
                "NAME": os.environ.get("TASKMILL_TEST_MARIADB_DBNAME", "test_taskmill"),
                "CHARSET": "utf8mb4",
            },
        }
    }
else:
    _file = _name_override or str(_tmp / f"taskmill-test-{os.getpid()}.sqlite3")
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": _file,
            "OPTIONS": {
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
            "TEST": {"NAME": _name_override or _file.replace(".sqlite3", "-test.sqlite3")},
        }
    }

TASKMILL = {
    "POLL_INTERVAL": 0.1,
    "HEARTBEAT_INTERVAL": 0.5,
    "LEASE_TIMEOUT": 3.0,
    "SHUTDOWN_TIMEOUT": 5.0,
    # Settings a test gives one worker subprocess (JSON), e.g. {"RETENTION": {...}}.
    **json.loads(os.environ.get("TASKMILL_TEST_SETTINGS", "{}")),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"taskmill_django": {"handlers": ["console"], "level": "INFO"}},
}

# The Django Tasks backend needs django.tasks (Django 6+); its tests are collected only there.
import django  # noqa: E402

if django.VERSION >= (6, 0):
    TASKS = {
        "default": {
            "BACKEND": "taskmill_django.backend.TaskmillBackend",
            "QUEUES": ["default", "emails"],
        }
    }
