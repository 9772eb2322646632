"""History: one row per finished task, keeping the id it had while active."""

from __future__ import annotations

from typing import Self, TypeVar

from django.db import models

from ..enums import HistoryStatus
from .task import TagQuerySet

_H = TypeVar("_H", bound="TaskHistory")


class TaskHistoryQuerySet(models.QuerySet[_H]):
    def dead_letter(self) -> Self:
        return self.filter(status=HistoryStatus.DEAD_LETTER)

    def failures(self) -> Self:
        return self.filter(status__in=[HistoryStatus.FAILED, HistoryStatus.DEAD_LETTER])

    def newest_first(self) -> Self:
        return self.order_by("-finished_at", "-id")


class TaskHistory(models.Model):
    """A task in a terminal state. ``id`` equals the id the task had in the active table."""

    id = models.BigIntegerField(primary_key=True)
    task_type = models.CharField(max_length=200)
    domain = models.CharField(max_length=100)
    key = models.CharField(max_length=64)
    label = models.CharField(max_length=255, blank=True, default="")
    priority = models.PositiveSmallIntegerField()
    status = models.CharField(max_length=20, choices=HistoryStatus.choices)
    payload = models.JSONField(default=dict)
    group_key = models.CharField(max_length=128, null=True, blank=True)  # noqa: DJ001 - NULL = ungrouped
    parent_id = models.BigIntegerField(null=True, blank=True)
    retry_count = models.PositiveIntegerField(default=0)
    max_retries = models.PositiveIntegerField(default=0)
    rescue_count = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    traceback = models.TextField(blank=True, default="")
    result = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField()
    duration_ms = models.BigIntegerField(null=True, blank=True)
    read_bytes = models.BigIntegerField(default=0)
    write_bytes = models.BigIntegerField(default=0)
    net_rx_bytes = models.BigIntegerField(default=0)
    net_tx_bytes = models.BigIntegerField(default=0)
    worker_id = models.UUIDField(null=True, blank=True)
    retried_at = models.DateTimeField(
        null=True, blank=True, help_text="When this dead-letter entry was submitted again."
    )
    retried_as_id = models.BigIntegerField(
        null=True, blank=True, help_text="The task this dead-letter entry was submitted again as."
    )

    objects = TaskHistoryQuerySet.as_manager()

    class Meta:
        db_table = "taskmill_task_history"
        verbose_name_plural = "task history"
        ordering = ("-finished_at", "-id")
        indexes = (
            # Covering (PostgreSQL): duration percentiles per type read the index only.
            models.Index(
                fields=["task_type", "finished_at"],
                name="taskmill_hist_type_time",
                include=["status", "duration_ms"],
            ),
            models.Index(fields=["key"], name="taskmill_hist_key"),
            models.Index(fields=["status", "finished_at"], name="taskmill_hist_status_time"),
            models.Index(fields=["finished_at"], name="taskmill_hist_time"),
            models.Index(fields=["domain", "status"], name="taskmill_hist_domain"),
            # A parent's finished children, for its admin page (few rows have a parent).
            models.Index(
                fields=["parent_id"],
                name="taskmill_hist_parent",
                condition=models.Q(parent_id__isnull=False),
            ),
        )

    def __str__(self) -> str:
        return f"#{self.pk} {self.task_type} [{self.status}]"


class DeadLetterManager(models.Manager["DeadLetter"]):
    def get_queryset(self) -> TaskHistoryQuerySet[DeadLetter]:
        return TaskHistoryQuerySet[DeadLetter](self.model, using=self._db).dead_letter()


class DeadLetter(TaskHistory):
    """History rows whose retries ran out: the dead-letter list, as its own admin page.

    A proxy over ``TaskHistory`` (no table of its own); re-submit an entry with
    ``scheduler.retry_dead_letter(id)``.
    """

    # The base's manager is typed for TaskHistory rows; this one yields DeadLetter rows.
    objects = DeadLetterManager()  # type: ignore[assignment,misc]

    class Meta:
        proxy = True
        verbose_name = "dead-letter entry"
        verbose_name_plural = "dead-letter list"


class TaskHistoryTag(models.Model):
    history = models.ForeignKey(TaskHistory, on_delete=models.DO_NOTHING, related_name="tags")
    key = models.CharField(max_length=64)
    value = models.CharField(max_length=256)

    objects = TagQuerySet.as_manager()

    class Meta:
        db_table = "taskmill_task_history_tag"
        indexes = (
            models.Index(fields=["key", "value"], name="taskmill_hist_tag_kv"),
            models.Index(fields=["history"], name="taskmill_hist_tag_history"),
        )

    def __str__(self) -> str:
        return f"{self.key}={self.value}"
