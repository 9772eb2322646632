"""One typed settings object over ``settings.TASKMILL``.

Every module reads configuration through ``app_settings``; it is rebuilt when Django's
``setting_changed`` fires (tests use ``override_settings``), so nothing caches stale values.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

DEFAULTS: dict[str, Any] = {
    # Cluster-wide cap on running tasks (None = unlimited; each worker's --concurrency is local).
    "MAX_CONCURRENCY": None,
    # Retries before a task is dead-lettered, when its RetryPolicy does not say.
    "MAX_RETRIES": 3,
    # Submissions at or above this priority (numerically <=) preempt lower-priority work.
    "PREEMPT_PRIORITY": 0,
    # Seconds an idle worker sleeps between polls (SQLite, or PostgreSQL as a safety net).
    "POLL_INTERVAL": 1.0,
    # Seconds a worker waits for running tasks on SIGTERM before releasing them.
    "SHUTDOWN_TIMEOUT": 30.0,
    # Default TTL in seconds for tasks that set none (None = no expiry).
    "DEFAULT_TTL": None,
    "EXPIRY_SWEEP_INTERVAL": 30.0,
    # History retention: {"max_count": int | None, "max_age_days": float | None} or None.
    "RETENTION": None,
    # Apply RETENTION every N completions seen by a worker.
    "PRUNE_INTERVAL": 1000,
    # Seconds between worker heartbeats; a worker silent for LEASE_TIMEOUT loses its tasks.
    "HEARTBEAT_INTERVAL": 5.0,
    "LEASE_TIMEOUT": 60.0,
    # A task rescued from dead workers this many times is dead-lettered (crash-loop guard).
    "MAX_RESCUES": 5,
    # Tasks claimed per claim transaction at most.
    "CLAIM_BATCH_SIZE": 100,
    # Minimum seconds between persisted progress writes of one task.
    "PROGRESS_INTERVAL": 1.0,
    "GROUP_CONCURRENCY": {},
    "DEFAULT_GROUP_CONCURRENCY": None,
    "RATE_LIMITS": {},
    "GROUP_RATE_LIMITS": {},
    "GROUP_WEIGHTS": {},
    "DEFAULT_GROUP_WEIGHT": 1,
    "GROUP_MINIMUM_SLOTS": {},
    "PRIORITY_AGING": None,
    "PRESSURE_SOURCES": [],
    "THROTTLE_POLICY": None,
    "RESOURCE_MONITORING": False,
    # IO budgets: {"disk_read"|"disk_write"|"net_rx"|"net_tx": bytes per second} this machine
    # can take; with RESOURCE_MONITORING on, tasks declaring IO in a direction wait while its
    # measured throughput is near that capacity.
    "IO_CAPACITY": None,
    # Dotted path of the class whose counters() gives cumulative IO bytes (default: /proc).
    "IO_SAMPLER": None,
    "SCHEDULES": {},
    # Who may do what over HTTP: Django model permissions by default (docs/howto/security.md).
    "API_PERMISSION_CLASSES": ["taskmill_django.api.permissions.TaskmillPermission"],
    # Qualified task types (or shell patterns such as "media::*") the REST API may submit.
    # Empty: the API submits nothing, whatever the user's permissions.
    "API_SUBMIT_TYPES": [],
    # Throttle rate of the REST API's submit endpoint per user, e.g. "100/min" (None = off).
    "API_SUBMIT_THROTTLE_RATE": None,
    # Tasks a worker claims beyond its free threads while tasks are short (under 50 ms on
    # average), so threads never wait for a claim's round trip; None = --concurrency, 0 = off.
    "CLAIM_AHEAD": None,
    # Seconds a busy worker lets finished tasks pile up before writing them and claiming more
    # (one transaction per cycle, however many it carries); 0 = never wait.
    "COALESCE_WINDOW": 0.002,
    # Seconds a worker keeps the counts of written outcomes in memory before storing them with
    # a cycle (a SIGKILL loses at most that much; a graceful stop none); 0 = every cycle.
    "COUNTER_FLUSH_INTERVAL": 1.0,
    # Seconds a task past its time limit may take to stop before it is abandoned (its slot
    # goes to a fresh thread, the attempt is recorded as timed out).
    "TIMEOUT_GRACE": 10.0,
    # Seconds any one statement, and any one lock wait, of a worker's own connections may take
    # (None = no limit); a timeout is an ordinary, retried database error.
    "STATEMENT_TIMEOUT": 30.0,
    "LOCK_TIMEOUT": 5.0,
    # DATABASES["default"] reaches PostgreSQL through a pooler in transaction mode (PgBouncer
    # pool_mode=transaction): workers keep no session state on it.
    "TRANSACTION_POOLING": False,
    # Alias of a database connection that reaches PostgreSQL directly (or in session mode), for
    # LISTEN; None = the default alias, unless TRANSACTION_POOLING (then workers poll).
    "LISTEN_DATABASE": None,
    # Payload key names masked at any depth wherever a person or a log sees a payload (the
    # REST API, the admin, worker logs), on top of each task's own ``sensitive=`` paths. A key
    # is masked when one of these occurs in it, ignoring case ("password" masks "db_password").
    "SENSITIVE_KEYS": [
        "password",
        "passwd",
        "passphrase",
        "secret",
        "token",
        "api_key",
        "apikey",
        "access_key",
        "private_key",
        "authorization",
        "credential",
        "cookie",
    ],
    # Secret a Prometheus server sends as "Authorization: Bearer <token>" to read the metrics
    # endpoint (taskmill_django.metrics.urls); None = only users with view_metrics may read it.
    "METRICS_TOKEN": None,
    # Largest payload accepted, in bytes of its canonical JSON.
    "MAX_PAYLOAD_BYTES": 1024 * 1024,
}


class AppSettings:
    """Attribute access to TASKMILL settings with defaults; unknown names raise AttributeError."""

    def __init__(self) -> None:
        # Read lazily: importing taskmill_django (e.g. from settings.py) must not freeze
        # settings before they are configured.
        self._user: dict[str, Any] | None = None

    def reload(self) -> None:
        self._user = None

    def _values(self) -> dict[str, Any]:
        if self._user is None:
            self._user = dict(getattr(settings, "TASKMILL", None) or {})
        return self._user

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"unknown TASKMILL setting {name!r}")
        return self._values().get(name, DEFAULTS[name])

    def user_keys(self) -> set[str]:
        """Keys the project set, for the system check that flags typos."""
        return set(self._values())

    @property
    def lease_timeout(self) -> timedelta:
        return timedelta(seconds=float(self.LEASE_TIMEOUT))

    def claim_ahead(self, concurrency: int) -> int:
        """The most tasks a worker of ``concurrency`` threads claims beyond them
        (``CLAIM_AHEAD``; ``None`` means as many as its threads)."""
        ahead = self.CLAIM_AHEAD
        return max(concurrency if ahead is None else int(ahead), 0)


app_settings = AppSettings()


@receiver(setting_changed)
def _reload(*, setting: str, **kwargs: Any) -> None:
    if setting == "TASKMILL":
        app_settings.reload()
