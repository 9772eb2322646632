"""The active table: pending, running, paused, blocked and waiting tasks.

Terminal tasks are moved to history in the transaction that finishes them, so this table stays
small and its dispatch index stays hot.
"""

from __future__ import annotations

from django.db import connection, models
from django.db.models import Q
from django.db.models.functions import Now, Substr
from django.db.models.lookups import Exact

from ..enums import DependencyFailurePolicy, TaskStatus, TtlFrom


class TaskQuerySet(models.QuerySet["Task"]):
    def pending(self) -> TaskQuerySet:
        return self.filter(status=TaskStatus.PENDING)

    def running(self) -> TaskQuerySet:
        return self.filter(status=TaskStatus.RUNNING)

    def due(self) -> TaskQuerySet:
        """Rows whose ``run_after`` has come, by the database clock."""
        return self.filter(Q(run_after__isnull=True) | Q(run_after__lte=Now()))

    def claimable(self) -> TaskQuerySet:
        """Pending rows whose ``run_after`` has come, by the database clock."""
        return self.pending().due()

    def in_dispatch_order(self) -> TaskQuerySet:
        """Priority first (lower runs first), then FIFO by id."""
        return self.order_by("priority", "id")

    def for_domain(self, domain: str) -> TaskQuerySet:
        return self.filter(domain=domain)


class Task(models.Model):
    """One unit of work that has not reached a terminal state."""

    task_type = models.CharField(max_length=200, help_text="Qualified type, domain::name.")
    domain = models.CharField(max_length=100)
    key = models.CharField(max_length=64, help_text="Dedup key (SHA-256 hex).")
    released_key = models.CharField(
        max_length=64,
        blank=True,
        default="",
        db_default="",
        help_text="The dedup key of a running task that gave its key up (superseded or "
        "cancelled) so a new submission could take it; history records this one.",
    )
    label = models.CharField(max_length=255, blank=True, default="")
    priority = models.PositiveSmallIntegerField(default=128)
    status = models.CharField(max_length=16, choices=TaskStatus.choices, default=TaskStatus.PENDING)
    payload = models.JSONField(default=dict)
    group_key = models.CharField(max_length=128, null=True, blank=True)  # noqa: DJ001 - NULL = ungrouped
    parent_id = models.BigIntegerField(null=True, blank=True)
    fail_fast = models.BooleanField(default=True)
    on_dependency_failure = models.CharField(
        max_length=8,
        choices=DependencyFailurePolicy.choices,
        default=DependencyFailurePolicy.CANCEL,
    )
    retry_count = models.PositiveIntegerField(default=0, db_default=0)
    max_retries = models.PositiveIntegerField(default=3)
    rescue_count = models.PositiveIntegerField(default=0, db_default=0)
    last_error = models.TextField(blank=True, default="", db_default="")
    run_after = models.DateTimeField(null=True, blank=True)
    ttl_seconds = models.FloatField(null=True, blank=True)
    ttl_from = models.CharField(max_length=16, choices=TtlFrom.choices, default=TtlFrom.SUBMISSION)
    expires_at = models.DateTimeField(null=True, blank=True)
    timeout_seconds = models.FloatField(
        null=True, blank=True, help_text="Time limit of one attempt, in seconds (None = none)."
    )
    trace_context = models.JSONField(
        null=True,
        blank=True,
        help_text="Trace context active at submission (OpenTelemetry), for the run's span.",
    )
    created_at = models.DateTimeField(db_default=Now())
    started_at = models.DateTimeField(null=True, blank=True)
    first_started_at = models.DateTimeField(null=True, blank=True)
    lease_token = models.UUIDField(null=True, blank=True)
    worker_id = models.UUIDField(null=True, blank=True)
    cancel_reason = models.CharField(
        max_length=20,
        blank=True,
        default="",
        db_default="",
        help_text="Set to request cancellation of a running task; the terminal status to record.",
    )
    has_requeue = models.BooleanField(default=False, db_default=False)
    pause_reason = models.CharField(max_length=64, blank=True, default="", db_default="")
    paused_at = models.DateTimeField(null=True, blank=True)
    paused_seconds = models.FloatField(
        default=0.0, db_default=0.0, help_text="Time spent paused; priority aging skips it."
    )
    progress = models.FloatField(null=True, blank=True)
    progress_message = models.CharField(max_length=255, blank=True, default="", db_default="")
    progress_at = models.DateTimeField(null=True, blank=True)
    progress_bytes_done = models.BigIntegerField(null=True, blank=True)
    progress_bytes_total = models.BigIntegerField(null=True, blank=True)
    progress_bytes_per_second = models.FloatField(
        null=True, blank=True, help_text="Smoothed rate of the reported bytes (EWMA)."
    )
    read_bytes = models.BigIntegerField(default=0, db_default=0)
    write_bytes = models.BigIntegerField(default=0, db_default=0)
    net_rx_bytes = models.BigIntegerField(default=0, db_default=0)
    net_tx_bytes = models.BigIntegerField(default=0, db_default=0)
    expected_read_bytes = models.BigIntegerField(default=0, db_default=0)
    expected_write_bytes = models.BigIntegerField(default=0, db_default=0)
    expected_net_rx_bytes = models.BigIntegerField(default=0, db_default=0)
    expected_net_tx_bytes = models.BigIntegerField(default=0, db_default=0)
    memo = models.JSONField(null=True, blank=True)
    has_children = models.BooleanField(default=False, db_default=False)
    is_finalizing = models.BooleanField(default=False, db_default=False)
    has_waiter = models.BooleanField(
        default=False,
        db_default=False,
        help_text="Someone waits for the outcome (PostgreSQL): its terminal write notifies.",
    )

    objects = TaskQuerySet.as_manager()

    class Meta:
        db_table = "taskmill_task"
        ordering = ("priority", "id")
        # Privileges beyond Django's add/change/view/delete, checked by the admin, the REST API
        # and the metrics view alike.
        permissions = (
            ("control_scheduler", "Can change cluster-wide scheduling (pauses, caps, rates)"),
            ("submit_urgent", "Can submit or reprioritize at a preempting priority"),
            ("view_metrics", "Can read the Prometheus metrics"),
        )
        # Every index costs on each insert, claim (a status change is never a HOT update) and
        # move to history, so rows enter an index only while a query needs them there
        # (partial indexes; MySQL/MariaDB build them over all rows).
        constraints = (
            # A constraint, not unique=True: PostgreSQL would add a second, LIKE-only index.
            models.UniqueConstraint(fields=["key"], name="taskmill_task_key_unique"),
        )
        indexes = (
            # The claim query walks this index: WHERE status='pending' ORDER BY priority, id.
            models.Index(
                fields=["status", "priority", "id"],
                name="taskmill_task_dispatch",
                condition=Q(status=TaskStatus.PENDING),
            ),
            models.Index(
                fields=["run_after"],
                name="taskmill_task_run_after",
                condition=Q(run_after__isnull=False),
            ),
            models.Index(
                fields=["expires_at"],
                name="taskmill_task_expires_at",
                condition=Q(expires_at__isnull=False),
            ),
            # Leases, cancel requests and rescue look up running rows by worker.
            models.Index(
                fields=["worker_id", "status"],
                name="taskmill_task_worker",
                condition=Q(status=TaskStatus.RUNNING),
            ),
            models.Index(fields=["task_type", "status"], name="taskmill_task_type"),
            models.Index(fields=["domain", "status"], name="taskmill_task_domain"),
            # Group lookups by status, and fair-share claims, which read each group's pending
            # head in dispatch order straight from this index.
            models.Index(
                fields=["group_key", "status", "priority", "id"],
                name="taskmill_task_group_order",
                condition=Q(group_key__isnull=False),
            ),
            models.Index(
                fields=["parent_id"],
                name="taskmill_task_parent",
                condition=Q(parent_id__isnull=False),
            ),
        )

    def __str__(self) -> str:
        return f"#{self.pk} {self.task_type} [{self.status}]"

    @property
    def short_type(self) -> str:
        return self.task_type.split("::", 1)[-1]

    @property
    def effective_priority(self) -> int:
        """The priority dispatch uses: ``priority`` improved by priority aging, if configured.

        Counted like the claim query counts it (time since submission minus time paused); a
        paused task's clock stopped when it was paused, a running task's when it was claimed.
        """
        from ..policy.aging import configured

        aging = configured()
        if aging is None or self.created_at is None:
            return self.priority
        from django.utils import timezone

        at = self.paused_at or (self.started_at if self.status == TaskStatus.RUNNING else None)
        return aging.effective_at(
            self.priority, self.created_at, self.paused_seconds, at or timezone.now()
        )


class Dashboard(Task):
    """No table and no permissions of its own: it gives the operator dashboard an entry in
    the admin's index and sidebar, which list models only. Seeing it takes ``view_task``."""

    class Meta:
        proxy = True
        verbose_name = verbose_name_plural = "dashboard"
        default_permissions = ()


def key_starts_with(prefix: str) -> Q:
    """Tags whose key starts with ``prefix``, letter case included, on every database.

    ``startswith`` becomes ``LIKE``, which SQLite compares without regard to ASCII case: there
    the key's first characters are compared exactly as well (the ``LIKE`` still narrows the
    rows through the ``key`` index first).
    """
    found = Q(key__startswith=prefix)
    if connection.vendor == "sqlite" and prefix:
        found &= Q(Exact(Substr("key", 1, len(prefix)), prefix))
    return found


class TagQuerySet(models.QuerySet):
    """Tags of active tasks (TaskTag) or of history (TaskHistoryTag)."""

    def with_key_prefix(self, prefix: str) -> TagQuerySet:
        return self.filter(key_starts_with(prefix))


class TaskTag(models.Model):
    """A key/value tag of an active task (copied to TaskHistoryTag when it finishes)."""

    task = models.ForeignKey(Task, on_delete=models.DO_NOTHING, related_name="tags")
    key = models.CharField(max_length=64)
    value = models.CharField(max_length=256)

    objects = TagQuerySet.as_manager()

    class Meta:
        db_table = "taskmill_task_tag"
        constraints = (
            models.UniqueConstraint(fields=["task", "key"], name="taskmill_task_tag_unique"),
        )
        indexes = (models.Index(fields=["key", "value"], name="taskmill_task_tag_kv"),)

    def __str__(self) -> str:
        return f"{self.key}={self.value}"


class TaskDependency(models.Model):
    """Edge: ``task`` may not run before the task ``depends_on_id`` completes.

    ``depends_on_id`` is a plain id, not a foreign key: the dependency may already have moved to
    history, and history rows keep the id they had while active.
    """

    task = models.ForeignKey(Task, on_delete=models.DO_NOTHING, related_name="dependency_edges")
    depends_on_id = models.BigIntegerField(db_index=True)

    class Meta:
        db_table = "taskmill_task_dependency"
        constraints = (
            models.UniqueConstraint(
                fields=["task", "depends_on_id"], name="taskmill_task_dependency_unique"
            ),
        )

    def __str__(self) -> str:
        return f"#{self.task_id} after #{self.depends_on_id}"
