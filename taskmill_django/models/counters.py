"""Stored counters behind the metrics endpoint and ``metrics_snapshot()``."""

from __future__ import annotations

from django.db import models


class TaskCounter(models.Model):
    """One running total: ``metric`` for ``task_type``, as written by ``source``.

    History can be pruned and workers restart; these rows are what the counters of the metrics
    endpoint read, so they survive both. Each worker adds to rows of its own (``source`` is its
    id) so no two workers ever wait on the same counter row while writing outcomes; the rows
    of workers that are gone are folded into the shared ``source=""`` rows by upkeep. A counter
    is the sum of its rows over all sources.
    """

    source = models.CharField(max_length=36, blank=True)
    task_type = models.CharField(max_length=200)
    metric = models.CharField(max_length=40)
    value = models.BigIntegerField(default=0)

    class Meta:
        db_table = "taskmill_counter"
        constraints = (
            models.UniqueConstraint(
                fields=["source", "task_type", "metric"], name="taskmill_counter_key"
            ),
        )

    def __str__(self) -> str:
        return f"{self.task_type} {self.metric}={self.value} ({self.source or 'shared'})"
