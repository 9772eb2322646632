"""Named values shared by every layer: priorities, statuses and policies."""

from __future__ import annotations

from django.db import models


class Priority(models.IntegerChoices):
    """Priority tiers (0..255, lower runs first). Any integer in range is valid."""

    REALTIME = 0, "realtime"
    HIGH = 64, "high"
    NORMAL = 128, "normal"
    BACKGROUND = 192, "background"
    IDLE = 255, "idle"

    @classmethod
    def tier_of(cls, value: int) -> Priority:
        """The named tier a raw priority falls in (the highest tier not above it)."""
        tier = cls.REALTIME
        for member in cls:
            if value >= member.value:
                tier = member
        return tier


MIN_PRIORITY = 0
MAX_PRIORITY = 255


class TaskStatus(models.TextChoices):
    """Statuses of a row in the active table."""

    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    BLOCKED = "blocked"
    WAITING = "waiting"


class WorkerStatus(models.TextChoices):
    """States of a worker row."""

    RUNNING = "running"
    STOPPING = "stopping"
    # Silent past its lease: its tasks were rescued, and it may never renew again (a frozen
    # worker that wakes up learns from this that its tasks are gone).
    DEAD = "dead"


class HistoryStatus(models.TextChoices):
    """Terminal statuses; rows with these live only in history."""

    COMPLETED = "completed"
    FAILED = "failed"
    DEAD_LETTER = "dead_letter"
    CANCELLED = "cancelled"
    SUPERSEDED = "superseded"
    EXPIRED = "expired"
    DEPENDENCY_FAILED = "dependency_failed"


class DuplicateStrategy(models.TextChoices):
    """What a submission does when its dedup key is already occupied."""

    SKIP = "skip"
    SUPERSEDE = "supersede"
    REJECT = "reject"


class DependencyFailurePolicy(models.TextChoices):
    """What happens to a blocked task when one of its dependencies fails."""

    CANCEL = "cancel"
    FAIL = "fail"
    IGNORE = "ignore"


class TtlFrom(models.TextChoices):
    """Which clock a task's TTL runs from."""

    SUBMISSION = "submission"
    FIRST_ATTEMPT = "first_attempt"


class OutcomeKind(models.TextChoices):
    """The result of one submission (see SubmitOutcome)."""

    INSERTED = "inserted"
    DUPLICATE = "duplicate"
    UPGRADED = "upgraded"
    REQUEUED = "requeued"
    SUPERSEDED = "superseded"


class InterruptReason(models.TextChoices):
    """Why a running attempt is asked to stop without its task failing or ending.

    A request is stored in ``Task.cancel_reason`` (which otherwise holds the terminal status a
    cancellation records) and carried to the attempt as ``ctx.cancel_reason``; the last three
    never reach the database: the worker decides them itself.
    """

    PREEMPTED = "preempted", "preempted by more urgent work"
    DOMAIN_PAUSED = "domain_paused", "its domain was paused"
    GROUP_PAUSED = "group_paused", "its group was paused"
    ALL_PAUSED = "all_paused", "the scheduler was paused"
    MANUAL = "manual", "paused by hand"
    SHUTDOWN = "shutdown", "its worker is shutting down"
    LEASE_LOST = "lease_lost", "its worker lost the lease"
    TIMEOUT = "timeout", "it ran past its time limit"


# Requests that park a running task as ``paused`` (no retry spent); it runs again once the
# pause is lifted. The value becomes the row's ``pause_reason``.
PARKING_REASONS = frozenset(
    {
        InterruptReason.PREEMPTED,
        InterruptReason.DOMAIN_PAUSED,
        InterruptReason.GROUP_PAUSED,
        InterruptReason.ALL_PAUSED,
        InterruptReason.MANUAL,
    }
)
# Interruptions that end an attempt without failing or ending its task: parked, released to
# pending (shutdown), or dropped because the lease is no longer ours.
INTERRUPTIONS = PARKING_REASONS | {InterruptReason.SHUTDOWN, InterruptReason.LEASE_LOST}
