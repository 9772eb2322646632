"""Lifecycle signals. Sent after the transaction that made the change commits, in the process
that made it (a worker for dispatch/outcomes, the submitting process for submissions).

Task signals pass ``sender`` = the TaskDefinition (so ``task_completed.connect(handler,
sender=thumbnail)`` filters by task; the type string when the type is not registered in this
process), ``task_type`` = the qualified type name, and:

- ``task_submitted``: task_id, outcome (SubmitOutcome)
- ``task_dispatched``: task_id, worker_id, priority, effective_priority (after aging)
- ``task_completed``: task_id, duration_ms
- ``task_failed``: task_id, error, will_retry, retry_after (datetime | None)
- ``task_dead_lettered``: task_id, error
- ``task_cancelled``: task_id
- ``task_progress``: task_id, fraction, message
- ``task_rescued``: task_id, rescue_count (sent by the worker that rescued it)
- ``task_preempted``, ``task_waiting``, ``task_expired``, ``task_unblocked``,
  ``task_dependency_failed``, ``task_paused``, ``task_resumed``: task_id
- ``recurring_skipped``, ``recurring_completed``: schedule_id
- ``group_paused``, ``group_resumed``, ``group_weight_changed``: sender = group key
"""

from __future__ import annotations

from django.dispatch import Signal

task_submitted = Signal()
task_dispatched = Signal()
task_completed = Signal()
task_failed = Signal()
task_dead_lettered = Signal()
task_cancelled = Signal()
task_progress = Signal()
task_rescued = Signal()
task_preempted = Signal()
task_waiting = Signal()
task_expired = Signal()
task_unblocked = Signal()
task_dependency_failed = Signal()
task_paused = Signal()
task_resumed = Signal()
recurring_skipped = Signal()
recurring_completed = Signal()
group_paused = Signal()
group_resumed = Signal()
group_weight_changed = Signal()
