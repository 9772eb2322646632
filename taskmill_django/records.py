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
    """Cluster-wide numbers for monitoring: ``counters`` only grow (until history is pruned),
    ``gauges`` are current levels."""

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
    paused_groups: list[str] = field(default_factory=list)
    pressure: float = 0.0
    pressure_breakdown: dict[str, float] = field(default_factory=dict)
    recurring: list[Any] = field(default_factory=list)
    aging: dict[str, Any] | None = None
    group_allocations: dict[str, int] = field(default_factory=dict)
    rate_limits: dict[str, Any] = field(default_factory=dict)
