"""The task lifecycle as a Hypothesis state machine over the store layer, on a real database.

Rules drive the functions a worker and an operator call: submit, register a worker, claim,
heartbeat, complete / fail / retry / release (fenced by lease), a worker going silent, rescue,
cancel, preemption and its end, expiry. Outcomes are also sent with stale leases, as a zombie
worker would. After every step the invariants of the contract hold:

- every submitted task is in exactly one of the active table and history, nothing else is;
- a running task holds one lease and one worker, a waiting one holds none;
- a fenced write lands exactly when its lease is the row's current one (G3);
- history only grows: no terminal record disappears or changes status, counts never decrease;
- retries never exceed ``max_retries``, rescues never exceed ``MAX_RESCUES``.

CI runs a few short examples; ``-m chaos`` runs many long ones.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.db.models import Q
from django.db.models.functions import Now

from taskmill_django.conf import app_settings
from taskmill_django.enums import HistoryStatus, TaskStatus
from taskmill_django.models import Task, TaskHistory, Worker
from taskmill_django.store import claim, control, lifecycle, maintenance, workers
from taskmill_django.store.cancel import cancel_matching
from tests.testapp.tasks import record

hypothesis = pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.stateful import (  # noqa: E402
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

pytestmark = pytest.mark.django_db(transaction=True)

MAX_RETRIES = 2
PRIORITIES = [0, 64, 128, 192]  # 0 is at PREEMPT_PRIORITY: it preempts what runs below it
TERMINAL = {
    HistoryStatus.COMPLETED,
    HistoryStatus.FAILED,
    HistoryStatus.DEAD_LETTER,
    HistoryStatus.CANCELLED,
    HistoryStatus.EXPIRED,
}
WAITING = {TaskStatus.PENDING, TaskStatus.PAUSED}


def clear() -> None:
    Task.objects.all().delete()
    TaskHistory.objects.all().delete()
    Worker.objects.all().delete()
    control.resume_preempted()


class Lifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        clear()
        self.submitted: set[int] = set()
        self.n = 0
        self.live: list[uuid.UUID] = []
        self.silent: list[uuid.UUID] = []
        # Every lease the machine was ever handed, current or not: (task id, token, worker).
        self.leases: list[tuple[int, uuid.UUID, uuid.UUID]] = []
        self.history: dict[int, str] = {}

    def teardown(self) -> None:
        clear()

    @initialize()
    def cluster(self) -> None:
        """Start with work and workers, so short runs reach deep states."""
        for _ in range(2):
            self.register()
        for priority in (64, 128, 128, 192, 192):
            self.submit(priority, ttl=False)

    # --- producers --------------------------------------------------------------------------

    @rule(priority=st.sampled_from(PRIORITIES), ttl=st.booleans())
    def submit(self, priority: int, ttl: bool) -> None:
        self.n += 1
        options = {"priority": priority, "max_retries": MAX_RETRIES}
        if ttl:
            options["ttl"] = timedelta(hours=1)
        outcome = record.using(**options).submit(n=self.n)
        assert outcome.kind == "inserted"
        self.submitted.add(outcome.id)

    @rule()
    def register(self) -> None:
        self.live.append(workers.register_worker("machine", 1, 4, None))

    # --- a worker's side ---------------------------------------------------------------------

    @precondition(lambda self: self.live)
    @rule(data=st.data(), limit=st.integers(1, 3))
    def claim(self, data: st.DataObject, limit: int) -> None:
        worker_id = data.draw(st.sampled_from(self.live))
        waiting_before = set(
            Task.objects.filter(status=TaskStatus.PENDING).values_list("id", flat=True)
        )
        rows = claim.claim_batch(worker_id, limit)
        assert len(rows) <= limit
        for row in rows:
            assert row.id in waiting_before, f"claimed {row.id}, which was not pending"
            assert row.status == TaskStatus.RUNNING and row.lease_token is not None
            self.leases.append((row.id, row.lease_token, worker_id))

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def heartbeat(self, data: st.DataObject) -> None:
        worker_id = data.draw(st.sampled_from(self.live))
        mine = [task_id for task_id, _, owner in self.leases if owner == worker_id]
        beat = workers.beat(worker_id, "running", mine)
        assert beat.renewed, "a live worker's heartbeat renewed nothing"

    @precondition(lambda self: self.leases)
    @rule(data=st.data(), kind=st.sampled_from(["completed", "failed", "retry", "release"]))
    def finish(self, data: st.DataObject, kind: str) -> None:
        """An attempt ends, as its worker reports it: with a current lease or a stale one."""
        task_id, token, _ = data.draw(st.sampled_from(self.leases))
        row = Task.objects.filter(id=task_id, status=TaskStatus.RUNNING, lease_token=token)
        current = row.first()
        if kind == "retry" and current is not None and current.retry_count >= MAX_RETRIES:
            kind = lifecycle.DEAD_LETTER  # what the executor does when retries are spent
        outcome = lifecycle.Outcome(task_id, token, kind, task_type=record.task_type)
        applied = lifecycle.apply_outcomes([outcome])
        assert bool(applied.written) == (current is not None), (
            f"outcome {kind} of task {task_id}: written={applied.written} "
            f"but the lease was {'current' if current else 'stale'}"
        )

    # --- faults and operators ----------------------------------------------------------------

    @precondition(lambda self: self.live)
    @rule(data=st.data(), gone=st.booleans())
    def worker_goes_silent(self, data: st.DataObject, gone: bool) -> None:
        """A worker is killed: its row stops beating (or vanishes); its leases become stale."""
        worker_id = data.draw(st.sampled_from(self.live))
        self.live.remove(worker_id)
        self.silent.append(worker_id)
        rows = Worker.objects.filter(id=worker_id)
        if gone:
            rows.delete()
        else:
            rows.update(heartbeat_at=Now() - timedelta(hours=1))

    @rule()
    def rescue(self) -> None:
        maintenance.rescue_orphans()
        orphaned = Task.objects.filter(status=TaskStatus.RUNNING).exclude(worker_id__in=self.live)
        assert not orphaned.exists(), f"left running after rescue: {list(orphaned.values())}"

    @precondition(lambda self: self.submitted)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        task_id = data.draw(st.sampled_from(sorted(self.submitted)))
        cancel_matching(Q(id=task_id))

    @rule(priority=st.sampled_from(PRIORITIES))
    def preempt(self, priority: int) -> None:
        control.preempt_below(priority)

    @rule()
    def end_preemption(self) -> None:
        control.resume_preempted()

    @precondition(lambda self: self.submitted)
    @rule(data=st.data())
    def expire(self, data: st.DataObject) -> None:
        """Time passes for one task: its deadline is now past; the sweep runs."""
        task_id = data.draw(st.sampled_from(sorted(self.submitted)))
        Task.objects.filter(id=task_id).update(expires_at=Now() - timedelta(seconds=1))
        maintenance.expire_due()
        row = Task.objects.filter(id=task_id).first()
        if row is not None:
            assert row.status == TaskStatus.RUNNING, "a waiting task outlived its deadline"

    # --- invariants --------------------------------------------------------------------------

    @invariant()
    def each_task_in_exactly_one_place(self) -> None:
        active = set(Task.objects.values_list("id", flat=True))
        finished = set(TaskHistory.objects.values_list("id", flat=True))
        assert not active & finished, f"both active and finished: {active & finished}"
        assert active | finished == self.submitted

    @invariant()
    def leases_match_status(self) -> None:
        for task_id, status, token, worker_id in Task.objects.values_list(
            "id", "status", "lease_token", "worker_id"
        ):
            if status == TaskStatus.RUNNING:
                assert token is not None and worker_id is not None, task_id
            else:
                assert status in WAITING, (task_id, status)
                assert token is None and worker_id is None, (task_id, status, token)

    @invariant()
    def history_only_grows(self) -> None:
        now = dict(TaskHistory.objects.values_list("id", "status"))
        for task_id, status in self.history.items():
            assert now.get(task_id) == status, (
                f"history of {task_id}: {status} -> {now.get(task_id)}"
            )
        assert set(now.values()) <= TERMINAL, set(now.values())
        self.history = now

    @invariant()
    def counts_within_limits(self) -> None:
        for model in (Task, TaskHistory):
            worst = model.objects.filter(
                Q(retry_count__gt=MAX_RETRIES) | Q(rescue_count__gt=app_settings.MAX_RESCUES)
            )
            assert not worst.exists(), list(worst.values("id", "retry_count", "rescue_count"))


def run_machine(examples: int, steps: int) -> None:
    run_state_machine_as_test(
        Lifecycle,
        settings=settings(
            max_examples=examples,
            stateful_step_count=steps,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        ),
    )


def test_lifecycle__invariants_hold_after_every_step():
    run_machine(examples=20, steps=40)


@pytest.mark.chaos
def test_lifecycle__invariants_hold_over_many_long_runs():
    run_machine(examples=300, steps=60)
