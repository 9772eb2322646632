"""Dedup while workers drain (G4, and the ``skip`` strategy of the contract): several processes
keep submitting the same few keys while workers run and complete the tasks holding them.

Every submission is answered (``inserted``, ``duplicate`` for a twin not started yet, ``requeued``
for a running twin), never with an error. A key is never run by two attempts at once. No
submission is lost: after each one, a run of its key begins (a pending twin runs later, a running
twin runs once more, a new task runs). And no run comes from nowhere: a key runs at most as often
as submissions inserted it or asked for a rerun.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import pytest

from taskmill_django.enums import HistoryStatus
from taskmill_django.models import Task, TaskHistory
from tests.acceptance.support import subprocess_env
from tests.conftest import ROOT, TaskLog, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

# One submitting process. argv: seconds to keep submitting, number of keys, index.
# Prints a JSON list of [key, time the call began, kind, id].
SUBMITTER = """
import json, random, sys, time
import django
django.setup()
from tests.testapp.tasks import ledger

seconds, keys, index = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(index)
calls = []
stop = time.time() + seconds
while time.time() < stop:
    key = f"hot-{rng.randrange(keys)}"
    began = time.time()
    outcome = ledger.using(key=key).submit(seconds=0.15)
    calls.append([key, began, outcome.kind, outcome.id])
    time.sleep(rng.uniform(0, 0.03))
print(json.dumps(calls))
"""


def submit_for(seconds: float, keys: int, processes: int) -> list[list]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SUBMITTER, str(seconds), str(keys), str(index)],
            cwd=ROOT,
            env=subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in range(processes)
    ]
    try:
        results = [proc.communicate(timeout=seconds + 120) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    failed = [err for proc, (_, err) in zip(procs, results, strict=True) if proc.returncode]
    assert not failed, "submissions raised:\n" + "\n".join(failed)
    return [call for out, _ in results for call in json.loads(out)]


def run_dedup_drain(worker_factory, task_log: TaskLog, seconds: float, keys: int) -> None:
    workers = [worker_factory("--concurrency", "2") for _ in range(2)]
    calls = submit_for(seconds, keys, processes=3)
    wait_until(lambda: not Task.objects.exists(), timeout=60)
    assert all(w.proc.poll() is None for w in workers)

    kinds = {kind for _, _, kind, _ in calls}
    assert kinds <= {"inserted", "duplicate", "requeued"}, kinds
    assert {"inserted", "duplicate", "requeued"} <= kinds, f"not every case was raced: {kinds}"

    ends = {e["task_id"]: e["at"] for e in task_log.events("end")}
    runs: dict[str, list[tuple[float, float]]] = {}
    for begin in task_log.events("begin"):
        runs.setdefault(begin["key"], []).append((begin["at"], ends[begin["task_id"]]))
    # Explicit keys are stored hashed: the history row a submission named gives the stored one.
    stored = dict(TaskHistory.objects.values_list("id", "key"))
    keyed = {name: stored[task_id] for name, _, _, task_id in calls}
    problems = []
    for name in {key for key, _, _, _ in calls}:
        spans = sorted(runs.get(keyed[name], []))
        mine = [c for c in calls if c[0] == name]
        overlaps = [(a, b) for a, b in itertools.pairwise(spans) if b[0] < a[1]]
        if overlaps:
            problems.append(f"{name}: two runs at once {overlaps[:3]}")
        last_call = max(began for _, began, _, _ in mine)
        if not spans or spans[-1][0] < last_call:
            problems.append(f"{name}: no run began after the submission of {last_call}")
        asked = sum(kind in ("inserted", "requeued") for _, _, kind, _ in mine)
        if len(spans) > asked:
            problems.append(f"{name}: {len(spans)} runs for {asked} insertions and reruns")
    assert not problems, "\n".join(problems)
    assert set(TaskHistory.objects.values_list("status", flat=True)) == {HistoryStatus.COMPLETED}
    assert TaskHistory.objects.count() == sum(len(spans) for spans in runs.values())


def test_dedup__same_keys_submitted_by_three_processes_while_two_workers_drain(
    worker_factory, task_log
):
    run_dedup_drain(worker_factory, task_log, seconds=5.0, keys=4)


@pytest.mark.chaos
def test_dedup__same_keys_submitted_for_a_minute_while_workers_drain(worker_factory, task_log):
    run_dedup_drain(worker_factory, task_log, seconds=60.0, keys=8)
