"""Recurring schedules and the per-occurrence tick rows that make firing exactly-once."""

from __future__ import annotations

from django.db import models
from django.db.models.functions import Now


class Schedule(models.Model):
    """A recurring task: what to submit, and when next."""

    name = models.CharField(
        max_length=200, unique=True, null=True, blank=True, help_text="Declarative schedules only."
    )
    task_type = models.CharField(max_length=200)
    domain = models.CharField(max_length=100)
    payload = models.JSONField(default=dict)
    options = models.JSONField(default=dict, help_text="Submission options (priority, tags...).")
    interval_seconds = models.FloatField(null=True, blank=True)
    cron = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001 - NULL = interval
    timezone = models.CharField(max_length=64, default="UTC")
    max_occurrences = models.PositiveIntegerField(null=True, blank=True)
    occurrence_count = models.PositiveIntegerField(default=0)
    skipped_count = models.PositiveIntegerField(default=0)
    catch_up = models.BooleanField(default=False)
    next_run_at = models.DateTimeField(null=True, blank=True)
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_task_id = models.BigIntegerField(null=True, blank=True)
    is_paused = models.BooleanField(default=False)
    is_declarative = models.BooleanField(default=False)
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        db_table = "taskmill_schedule"
        ordering = ("id",)
        indexes = (models.Index(fields=["is_paused", "next_run_at"], name="taskmill_schedule_due"),)

    def __str__(self) -> str:
        when = self.cron or f"every {self.interval_seconds:g}s"
        return f"{self.name or self.task_type} ({when})"

    @property
    def remaining(self) -> int | None:
        if self.max_occurrences is None:
            return None
        return max(self.max_occurrences - self.occurrence_count, 0)


class ScheduleTick(models.Model):
    """One fired occurrence. The unique (schedule, tick_at) pair is what makes an occurrence
    fire once however many workers race for it (RELIABILITY G5)."""

    schedule = models.ForeignKey(Schedule, on_delete=models.CASCADE, related_name="ticks")
    tick_at = models.DateTimeField()
    task_id = models.BigIntegerField(null=True, blank=True)
    fired_at = models.DateTimeField(db_default=Now())

    class Meta:
        db_table = "taskmill_schedule_tick"
        constraints = (
            models.UniqueConstraint(fields=["schedule", "tick_at"], name="taskmill_tick_once"),
        )

    def __str__(self) -> str:
        return f"{self.schedule_id}@{self.tick_at.isoformat()}"
