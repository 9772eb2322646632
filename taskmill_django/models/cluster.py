"""Cluster state shared by every worker: worker heartbeats, paused groups, runtime settings."""

from __future__ import annotations

from django.db import models
from django.db.models.functions import Now


class Worker(models.Model):
    """One ``runtaskmill`` process. A fresh id per process start, so a restarted worker never
    inherits the leases of its previous life."""

    id = models.UUIDField(primary_key=True)
    name = models.CharField(max_length=200)
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    domains = models.JSONField(null=True, blank=True, help_text="Served domains; null = all.")
    concurrency = models.PositiveIntegerField()
    claim_ahead = models.PositiveIntegerField(
        db_default=0,
        help_text="Most tasks the worker claims beyond its threads (CLAIM_AHEAD): they count "
        "among the slots that could claim while another worker checks a cap.",
    )
    running_count = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=16, default="running")
    started_at = models.DateTimeField(db_default=Now())
    heartbeat_at = models.DateTimeField(db_default=Now())
    io = models.JSONField(
        null=True,
        blank=True,
        help_text="IO throughput measured on the worker's machine (RESOURCE_MONITORING): "
        "{direction: {rate, capacity, saturated}}.",
    )

    class Meta:
        db_table = "taskmill_worker"
        ordering = ("name",)

    def __str__(self) -> str:
        return f"{self.name} ({self.hostname}:{self.pid})"


class PausedGroup(models.Model):
    group_key = models.CharField(max_length=128, unique=True)
    paused_at = models.DateTimeField(db_default=Now())
    paused_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "taskmill_paused_group"

    def __str__(self) -> str:
        return self.group_key


class SchedulerSetting(models.Model):
    """A runtime override (``set_max_concurrency`` and friends) that every worker reads."""

    name = models.CharField(max_length=100, primary_key=True)
    value = models.JSONField(null=True)
    updated_at = models.DateTimeField(db_default=Now())

    class Meta:
        db_table = "taskmill_scheduler_setting"

    def __str__(self) -> str:
        return self.name


class RateBucket(models.Model):
    """A token bucket shared by every worker (per task type or per group)."""

    name = models.CharField(max_length=250, primary_key=True)
    tokens = models.FloatField()
    refreshed_at = models.DateTimeField()

    class Meta:
        db_table = "taskmill_rate_bucket"

    def __str__(self) -> str:
        return f"{self.name}: {self.tokens:.2f}"
