"""Workflows and schedules with real ``runtaskmill`` workers: finalize with memo, dependencies
across domains served by different workers, an interval schedule raced by three workers,
exactly-once firing from several processes, and requeue / supersede of a running task."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from taskmill_django import RecurringSchedule
from taskmill_django.models import Schedule, ScheduleTick, Task, TaskHistory, Worker
from tests.acceptance.support import subprocess_env
from tests.conftest import ROOT, wait_until
from tests.testapp.tasks import async_fan_out, fan_out, other_wf_step, record, sleep, wf_step

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 60.0


def _finished(*task_ids: int) -> bool:
    return TaskHistory.objects.filter(id__in=task_ids).count() == len(task_ids)


def _wait_registered(*workers) -> None:
    pids = [w.pid for w in workers]
    wait_until(lambda: Worker.objects.filter(pid__in=pids).count() == len(pids), timeout=TIMEOUT)


def test_async_spawn__async_tasks_spawn_children_and_siblings_in_a_worker(worker_factory, task_log):
    parent = async_fan_out.submit()
    worker_factory("--concurrency", "4")
    wait_until(lambda: _finished(parent.id), timeout=TIMEOUT)
    assert sorted(e["part"] for e in task_log.events("part")) == [0, 1, 2, 3]
    children = TaskHistory.objects.filter(parent_id=parent.id)
    assert sorted(children.values_list("status", flat=True)) == ["completed"] * 4
    assert TaskHistory.objects.get(id=parent.id).status == "completed"


def test_fan_out__finalize_runs_in_a_worker_with_the_memo(worker_factory, task_log):
    parent = fan_out.submit(parts=4)
    worker_factory("--concurrency", "4")
    wait_until(lambda: _finished(parent.id), timeout=TIMEOUT)
    row = TaskHistory.objects.get(id=parent.id)
    assert (row.status, row.result) == ("completed", {"finalized": 4})
    events = task_log.events()
    parts = [i for i, e in enumerate(events) if e["event"] == "part"]
    finals = [i for i, e in enumerate(events) if e["event"] == "finalize"]
    assert sorted(events[i]["part"] for i in parts) == [0, 1, 2, 3]
    assert len(finals) == 1
    assert events[finals[0]]["memo"] == {"parts": 4}
    assert finals[0] > max(parts)


def test_fail_fast__failing_child_fails_the_parent_in_a_worker(worker_factory, task_log):
    parent = fan_out.submit(parts=6, fail_part=0)
    worker_factory("--concurrency", "4")
    wait_until(lambda: _finished(parent.id), timeout=TIMEOUT)
    wait_until(lambda: not Task.objects.exists(), timeout=TIMEOUT)
    row = TaskHistory.objects.get(id=parent.id)
    assert row.status == "failed"
    children = {
        h.payload["part"]: h.status for h in TaskHistory.objects.filter(parent_id=parent.id)
    }
    assert sorted(children) == list(range(6))
    assert children[0] == "failed"
    assert set(children.values()) <= {"failed", "completed", "cancelled"}
    assert task_log.events("finalize") == []


def test_depends_on__chain_across_domains_served_by_different_workers(worker_factory, task_log):
    a = other_wf_step.submit(n=1)
    b = wf_step.using(depends_on=[a.id]).submit(n=2)
    c = wf_step.using(depends_on=[a.id, b.id]).submit(n=3)
    flows = worker_factory("--domains", "flows", "--concurrency", "2")
    other = worker_factory("--domains", "other", "--concurrency", "2")
    wait_until(lambda: _finished(a.id, b.id, c.id), timeout=TIMEOUT)
    steps = [(e["n"], e["pid"]) for e in task_log.events("step")]
    assert steps == [(1, other.pid), (2, flows.pid), (3, flows.pid)]
    assert set(TaskHistory.objects.values_list("status", flat=True)) == {"completed"}


def test_interval_schedule__three_workers_fire_exactly_max_occurrences(worker_factory, task_log):
    workers = [worker_factory("--concurrency", "2") for _ in range(3)]
    _wait_registered(*workers)
    outcome = record.using(
        recurring=RecurringSchedule(interval=0.5, initial_delay=0.5, max_occurrences=3)
    ).submit(n=5)

    def done() -> bool:
        schedule = Schedule.objects.get(id=outcome.schedule_id)
        ran = TaskHistory.objects.filter(task_type="tests::record").count()
        return schedule.next_run_at is None and ran >= 3

    wait_until(done, timeout=TIMEOUT)
    time.sleep(1.5)  # three more intervals: a fourth occurrence would show up by now
    assert TaskHistory.objects.filter(task_type="tests::record", status="completed").count() == 3
    assert not Task.objects.filter(task_type="tests::record").exists()
    ticks = ScheduleTick.objects.filter(schedule_id=outcome.schedule_id)
    assert ticks.count() == 3
    assert len(set(ticks.values_list("tick_at", flat=True))) == 3
    assert len(task_log.events("run")) == 3
    assert Schedule.objects.get(id=outcome.schedule_id).occurrence_count == 3


_FIRE_SCRIPT = """
import sys, time
from pathlib import Path
import django
django.setup()
from taskmill_django.store.recurring import fire_due_schedules
ready, go = Path(sys.argv[1]), Path(sys.argv[2])
ready.touch()
while not go.exists():
    time.sleep(0.01)
print(sum(fire_due_schedules(limit=2) for _ in range(10)))
"""


def test_fire_due_schedules__concurrent_processes_fire_each_tick_once(tmp_path: Path):
    for n in range(12):
        record.using(recurring=RecurringSchedule(interval=3600, initial_delay=3600)).submit(n=n)
    Schedule.objects.update(next_run_at=timezone.now() - timedelta(minutes=1))
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _FIRE_SCRIPT, str(tmp_path / f"ready-{i}"), str(go)],
            cwd=ROOT,
            env=subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    try:
        wait_until(lambda: len(list(tmp_path.glob("ready-*"))) == 4, timeout=TIMEOUT)
        go.touch()
        results = [p.communicate(timeout=TIMEOUT) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
    assert [p.returncode for p in procs] == [0] * 4, [err for _, err in results]
    assert sum(int(out.split()[-1]) for out, _ in results) == 12
    assert ScheduleTick.objects.count() == 12
    assert Task.objects.count() == 12
    assert set(Schedule.objects.values_list("occurrence_count", flat=True)) == {1}


def test_ttl__expired_task_is_swept_by_a_worker_and_never_runs(worker_factory, task_log):
    expired = record.using(ttl=3600).submit(n=1)
    alive = record.using(ttl=3600).submit(n=2)
    Task.objects.filter(id=expired.id).update(expires_at=timezone.now() - timedelta(minutes=1))
    worker_factory("--concurrency", "2")
    wait_until(lambda: _finished(expired.id, alive.id), timeout=TIMEOUT)
    assert TaskHistory.objects.get(id=expired.id).status == "expired"
    assert TaskHistory.objects.get(id=alive.id).status == "completed"
    assert [e["n"] for e in task_log.events("run")] == [2]


def test_requeue__duplicate_while_running_runs_once_more_with_its_priority(
    worker_factory, task_log
):
    first = sleep.submit(seconds=2.0, n=1)
    worker_factory("--concurrency", "1")
    wait_until(lambda: task_log.events("start"), timeout=TIMEOUT)
    again = sleep.using(priority=10).submit(seconds=2.0, n=1)
    assert (again.kind, again.id) == ("requeued", first.id)
    wait_until(lambda: len(task_log.events("done")) == 2, timeout=TIMEOUT)
    wait_until(lambda: not Task.objects.exists(), timeout=TIMEOUT)
    runs = list(TaskHistory.objects.filter(task_type="tests::sleep").order_by("id"))
    assert [r.status for r in runs] == ["completed", "completed"]
    assert runs[0].id == first.id
    assert runs[1].key == runs[0].key
    assert runs[1].priority == 10
    order = [(e["event"], e["task_id"]) for e in task_log.events() if e["event"] != "on_cancel"]
    assert order == [
        ("start", runs[0].id),
        ("done", runs[0].id),
        ("start", runs[1].id),
        ("done", runs[1].id),
    ]


def test_supersede__running_twin_is_cancelled_and_the_replacement_runs(worker_factory, task_log):
    old = sleep.using(key="nightly-report").submit(seconds=30, n=1)
    worker_factory("--concurrency", "2")
    wait_until(lambda: task_log.events("start"), timeout=TIMEOUT)
    new = sleep.using(key="nightly-report", duplicate="supersede").submit(seconds=0.2, n=2)
    assert (new.kind, new.replaced_id) == ("superseded", old.id)
    assert new.id != old.id
    wait_until(lambda: _finished(old.id, new.id), timeout=TIMEOUT)
    noticed = task_log.events("noticed_cancel")
    assert [(e["task_id"], e["reason"]) for e in noticed] == [(old.id, "superseded")]
    assert TaskHistory.objects.get(id=old.id).status == "superseded"
    assert TaskHistory.objects.get(id=new.id).status == "completed"
    assert [e["n"] for e in task_log.events("done")] == [2]
    assert not Task.objects.exists()
