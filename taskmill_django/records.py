"""Small frozen dataclasses passed across layers and returned by the query API."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .models import Task, TaskHistory


def _bytes(field_name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        from .exceptions import ValidationError

        raise ValidationError(field_name, f"must be a non-negative integer, got {value!r}")
    return value


@dataclass(frozen=True)
class IoBudget:
    """Expected IO of one run, used by backpressure to avoid saturating disks and links."""

    read_bytes: int = 0
    write_bytes: int = 0
    net_rx_bytes: int = 0
    net_tx_bytes: int = 0

    @classmethod
    def disk(cls, read: int, write: int) -> IoBudget:
        return cls(read_bytes=_bytes("read", read), write_bytes=_bytes("write", write))

    @classmethod
    def net(cls, rx: int, tx: int) -> IoBudget:
        return cls(net_rx_bytes=_bytes("rx", rx), net_tx_bytes=_bytes("tx", tx))


@dataclass(frozen=True)
class SubmitOutcome:
    """What one submission did. ``id`` is the active task that now holds the key.

    For ``using(recurring=...)``, ``schedule_id`` names the schedule and ``id`` the occurrence
    submitted at once (None when the first run lies in the future).
    """

    kind: str
    id: int | None
    group_paused: bool = False
    replaced_id: int | None = None
    schedule_id: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", str(self.kind))  # plain str, not the enum member

    @property
    def inserted(self) -> bool:
        return self.kind == "inserted"

    def wait(self, timeout: float | timedelta | None = None, poll: float = 0.05) -> TaskHistory:
        """Block until task ``id`` is terminal; return its history record (``status``,
        ``result``, ``last_error``).

        A deduplicated submission waits for the task that holds the key (``id``). Raises
        ``ResultTimeout`` (a ``TimeoutError``) after ``timeout`` seconds, ``TaskNotFound`` when
        the task finished and its history row was pruned. PostgreSQL wakes the waiter by
        notification; other databases are polled, first after ``poll`` seconds and then at a
        growing interval of up to a second.

        >>> outcome = thumbnail.submit(path="a.png")
        >>> record = outcome.wait(timeout=30)
        >>> record.status, record.result
        ('completed', {'width': 64})
        """
        from .read.results import wait  # upward import: a record that can wait for its task

        return wait(self.id, timeout, poll)

    async def await_result(
        self, timeout: float | timedelta | None = None, poll: float = 0.05
    ) -> TaskHistory:
        """``wait()`` for async code: ``record = await outcome.await_result(timeout=30)``."""
        from .read.results import await_result

        return await await_result(self.id, timeout, poll)


@dataclass(frozen=True)
class NewTask:
    """A validated task ready for insertion; built by the front doors, consumed by store.submit."""

    task_type: str
    domain: str
    key: str
    label: str
    priority: int
    payload: dict[str, Any]
    max_retries: int
    group_key: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    run_after: datetime | timedelta | None = None
    ttl_seconds: float | None = None
    ttl_from: str = "submission"
    timeout_seconds: float | None = None
    expected_io: IoBudget = IoBudget()
    duplicate: str = "skip"
    parent_id: int | None = None
    depends_on: tuple[int, ...] = ()
    on_dependency_failure: str = "cancel"
    fail_fast: bool = True
    # The payload's canonical JSON text, kept from validation so a bulk load does not
    # serialise every payload twice (None: serialise ``payload`` when writing).
    payload_json: str | None = None


@dataclass(frozen=True)
class TaskLookup:
    """Where a (type, key) pair lives now: ``active``, ``history`` or ``not_found``."""

    state: str
    record: Task | TaskHistory | None = None


@dataclass(frozen=True)
class RecurringInfo:
    """A schedule as operators see it."""

    id: int
    name: str | None
    task_type: str
    interval_seconds: float | None
    cron: str | None
    timezone: str
    next_run_at: datetime | None
    occurrences: int
    remaining: int | None
    skipped: int
    is_paused: bool
    is_declarative: bool


@dataclass(frozen=True)
class Metrics:
    """Cluster-wide numbers for monitoring: ``counters`` only grow (they are stored, so pruning
    history does not lower them), ``gauges`` are current levels."""

    counters: dict[str, int]
    gauges: dict[str, float]


@dataclass(frozen=True)
class TypeStats:
    count: int
    avg_duration_ms: float
    avg_read_bytes: float
    avg_write_bytes: float
    failure_rate: float


@dataclass(frozen=True)
class IoTotals:
    read_bytes: int
    write_bytes: int
    net_rx_bytes: int
    net_tx_bytes: int


@dataclass(frozen=True)
class RunningTask:
    id: int
    task_type: str
    label: str
    priority: int
    worker_id: str | None
    started_at: datetime | None
    progress: float | None
    progress_message: str
    effective_priority: int | None = None  # priority after aging, when it is configured


@dataclass(frozen=True)
class EstimatedProgress:
    """How far a running task has come (``estimated_progress()``, snapshots, the admin).

    Fractions in 0..1, named ``percent`` as in taskmill. ``reported_percent`` is the task's
    own last report (None before its first), ``extrapolated_percent`` carries it on to now
    with the task's reported rate blended with its type's history (None when neither is
    known; at most 0.99), ``percent`` is the best figure (the report, else the
    extrapolation, else 0). ``is_overdue``: the task has run longer than that estimate gave it
    in all, so the extrapolation stopped at 0.99 and means "any moment now, or stuck".
    """

    task_id: int
    task_type: str
    reported_percent: float | None
    extrapolated_percent: float | None
    percent: float
    is_overdue: bool = False


@dataclass(frozen=True)
class ByteProgress:
    """Byte counts of a running task that reported them (``ctx.progress.report_bytes``).

    ``throughput_bps``: bytes per second, an exponentially weighted moving average the worker
    keeps of the task's reports; ``eta``: the bytes left at that rate (None while either is
    unknown)."""

    task_id: int
    task_type: str
    bytes_completed: int
    bytes_total: int | None
    throughput_bps: float
    elapsed: timedelta
    eta: timedelta | None


@dataclass(frozen=True)
class PausedGroupInfo:
    """A paused group in a snapshot: until when (None: until resumed) and its tasks held back
    (``paused_count`` parked by the pause, ``pending_count`` waiting to be claimed)."""

    group: str
    paused_at: datetime
    paused_until: datetime | None
    paused_count: int
    pending_count: int


@dataclass(frozen=True)
class WorkerInfo:
    id: str
    name: str
    hostname: str
    pid: int
    concurrency: int
    running_count: int
    heartbeat_age_seconds: float
    is_alive: bool
    io: dict[str, Any] | None = None  # measured IO per direction (RESOURCE_MONITORING)
    claim_ahead: int = 0  # most tasks it claims beyond its threads (CLAIM_AHEAD)


@dataclass(frozen=True)
class Snapshot:
    """Point-in-time view of the cluster (or of one domain)."""

    running: list[RunningTask]
    pending_count: int
    running_count: int
    paused_count: int
    blocked_count: int
    waiting_count: int
    max_concurrency: int | None
    is_paused: bool
    counts_by_domain: dict[str, dict[str, int]]
    workers: list[WorkerInfo]
    paused_groups: list[PausedGroupInfo] = field(default_factory=list)
    pressure: float = 0.0
    pressure_breakdown: dict[str, float] = field(default_factory=dict)
    recurring: list[Any] = field(default_factory=list)
    aging: dict[str, Any] | None = None
    group_allocations: dict[str, int] = field(default_factory=dict)
    rate_limits: dict[str, Any] = field(default_factory=dict)
    progress: list[EstimatedProgress] = field(default_factory=list)  # of the tasks in running
