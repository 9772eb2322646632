"""TaskContext: what task code receives as its first argument."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async

from . import clock, registry
from .redaction import mask_text
from .storable import storable_text

if TYPE_CHECKING:
    from .domain import Domain
    from .models import Task


BYTE_RATE_ALPHA = 0.3  # EWMA weight of the newest byte rate: about 3 samples to follow a change
BYTE_RATE_SAMPLE = 0.5  # seconds between byte-rate samples: closer reports are too noisy


class Progress:
    """Progress reports kept in memory; the worker persists them on its heartbeat (throttled),
    so reporting is cheap, never blocks on the database, and is safe from async code.

    A message is for people only, so it is masked as it is reported (``mask``, the task's
    ``redaction.mask_text``): every page, snapshot and API response that shows it, including
    those that never load the payload, shows the masked text.

    Byte reports also feed a smoothed rate (an exponentially weighted moving average sampled
    at most every ``BYTE_RATE_SAMPLE`` seconds, the first sample measured from the start of
    the attempt), so a burst does not swing the ETA that ``byte_progress()`` derives from it.
    """

    def __init__(self, mask: Callable[[str], str] | None = None) -> None:
        self._lock = threading.Lock()
        self._mask = mask
        self._reported = ""
        self.fraction: float | None = None
        self.message: str = ""
        self.bytes_done: int | None = None
        self.bytes_total: int | None = None
        self.bytes_per_second: float | None = None
        self._sampled = (0, time.monotonic())  # (bytes done, when) of the last rate sample
        self.changed_at: float = 0.0
        self.saved_at: float = 0.0

    def report(self, fraction: float, message: str | None = None) -> None:
        """Report completion as a fraction in 0..1 (clamped) with an optional message."""
        with self._lock:
            value = float(fraction)
            # NaN is no fraction (and no JSON): report it as no progress rather than store it.
            self.fraction = min(max(value, 0.0), 1.0) if value == value else 0.0
            if message is not None and str(message) != self._reported:
                self._reported = str(message)
                masked = self._mask(self._reported) if self._mask else self._reported
                self.message = storable_text(masked, 255)
            self.changed_at = time.monotonic()

    def report_fraction(self, done: int, total: int, message: str | None = None) -> None:
        self.report(done / total if total else 0.0, message)

    def report_bytes(self, done: int, total: int, message: str | None = None) -> None:
        now = time.monotonic()
        with self._lock:
            self.bytes_done, self.bytes_total = int(done), int(total)
            last_done, last_at = self._sampled
            if now - last_at >= BYTE_RATE_SAMPLE:
                rate = max(self.bytes_done - last_done, 0) / (now - last_at)
                previous = self.bytes_per_second
                self.bytes_per_second = (
                    rate if previous is None else previous + BYTE_RATE_ALPHA * (rate - previous)
                )
                self._sampled = (self.bytes_done, now)
        self.report_fraction(done, total, message)

    def changed_since_save(self) -> None:
        """The last values taken were not saved after all: take them again next time."""
        with self._lock:
            self.saved_at = 0.0

    def take_unsaved(self) -> dict[str, Any] | None:
        """The fields to persist if something changed since the last save, else None."""
        with self._lock:
            if self.changed_at <= self.saved_at:
                return None
            self.saved_at = time.monotonic()
            return {
                "progress": self.fraction,
                "progress_message": self.message,
                "progress_bytes_done": self.bytes_done,
                "progress_bytes_total": self.bytes_total,
                "progress_bytes_per_second": self.bytes_per_second,
            }


class TaskContext:
    """Handed to every task function: the row, cancellation, progress and IO accounting."""

    def __init__(self, record: Task, domain: Domain | None) -> None:
        self.record = record
        self.domain = domain
        self.progress = Progress(mask=self._mask)
        self._cancelled = threading.Event()
        self.cancel_reason: str = ""
        self.io: dict[str, int] = {
            "read_bytes": 0,
            "write_bytes": 0,
            "net_rx_bytes": 0,
            "net_tx_bytes": 0,
        }

    @property
    def task_id(self) -> int:
        return self.record.id

    def _mask(self, text: str) -> str:
        return mask_text(text, self.record.task_type, self.record.payload)

    def is_cancelled(self) -> bool:
        """True once the task was cancelled, preempted, or its worker is shutting down."""
        return self._cancelled.is_set()

    def cancel(self, reason: str) -> None:
        if not self._cancelled.is_set():
            self.cancel_reason = reason
            self._cancelled.set()

    def wait_cancelled(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds, waking early on cancellation; returns is_cancelled()."""
        return self._cancelled.wait(timeout)

    def record_read_bytes(self, n: int) -> None:
        self.io["read_bytes"] += int(n)

    def record_write_bytes(self, n: int) -> None:
        self.io["write_bytes"] += int(n)

    def record_net_rx_bytes(self, n: int) -> None:
        self.io["net_rx_bytes"] += int(n)

    def record_net_tx_bytes(self, n: int) -> None:
        self.io["net_tx_bytes"] += int(n)

    # --- children and siblings ---------------------------------------------------------

    def spawn_child(self, task: Any, **payload: Any) -> Any:
        """Submit a child of this task. This task then waits for all its children before it
        finishes (its ``finalize`` hook, if any, gets this attempt's return value as memo).
        ``task`` is a task definition or a ``task.using(...)`` call."""
        return self._spawn(self.record.id, task, [payload])[0]

    def spawn_sibling(self, task: Any, **payload: Any) -> Any:
        """Submit another child of this task's parent. A root task has no siblings."""
        return self._spawn(self._parent_id(), task, [payload])[0]

    def spawn_siblings(self, task: Any, payloads: list[dict[str, Any]]) -> list[Any]:
        """Submit many siblings in one transaction."""
        return self._spawn(self._parent_id(), task, payloads)

    async def aspawn_child(self, task: Any, **payload: Any) -> Any:
        """``spawn_child`` for ``async def`` tasks (the database work runs in a thread, as
        Django requires outside synchronous code)."""
        return await sync_to_async(self.spawn_child)(task, **payload)

    async def aspawn_sibling(self, task: Any, **payload: Any) -> Any:
        """``spawn_sibling`` for ``async def`` tasks."""
        return await sync_to_async(self.spawn_sibling)(task, **payload)

    async def aspawn_siblings(self, task: Any, payloads: list[dict[str, Any]]) -> list[Any]:
        """``spawn_siblings`` for ``async def`` tasks."""
        return await sync_to_async(self.spawn_siblings)(task, payloads)

    def _parent_id(self) -> int:
        if self.record.parent_id is None:
            from .exceptions import ValidationError

            raise ValidationError("spawn_sibling", "this task has no parent; use spawn_child")
        return self.record.parent_id

    def _spawn(self, parent_id: int, task: Any, payloads: list[dict[str, Any]]) -> list[Any]:
        """Children inherit the parent's remaining TTL and the more urgent of the priorities."""
        from .domain import TaskCall, TaskDefinition
        from .store.children import spawn

        call = task if isinstance(task, TaskCall) else task.using()
        if not isinstance(call, TaskCall) or not isinstance(call.definition, TaskDefinition):
            raise TypeError("spawn_* takes a task definition or task.using(...)")
        parent = self.record if parent_id == self.record.id else None
        own_priority = call.options.priority
        if own_priority is None:
            own_priority = call.definition.priority
        priority = min(own_priority, self.record.priority)
        extra: dict[str, Any] = {"parent": parent_id, "priority": priority}
        deadline = (parent or self.record).expires_at
        if deadline is not None:
            remaining = max((deadline - clock.now()).total_seconds(), 0.0)
            own = call.options.ttl if call.options.ttl is not None else call.definition.ttl
            extra["ttl"] = remaining if own is None else min(own, remaining)
        bound = call.using(**extra)
        builder = bound.definition.builder(bound.options)
        new = [builder.build(p) for p in payloads]
        return spawn(self.record.id, self.record.lease_token, parent_id, new)

    def state(self, name: str) -> Any:
        """Shared application state registered with ``scheduler.register_state(name, value)``."""
        return registry.get_state(name)
