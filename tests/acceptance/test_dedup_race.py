"""Dedup under a real race (research §5 T9): several processes submit the same keyed tasks at the
same moment; the unique key decides, so each key ends up with exactly one active task and every
other submission is answered as a duplicate, never with an error (G4)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

from taskmill_django.models import Task
from tests.acceptance.support import subprocess_env
from tests.conftest import ROOT

pytestmark = pytest.mark.django_db(transaction=True)

PROCESSES = 4

# One submitting process. argv: directory, index, processes, mode, rounds, keys per round.
#   mode "one":   submit() each task in turn, every process in the same order, so all of them
#                 fight over each key at once;
#   mode "batch": one submit_batch() per round, each process listing the keys in an order of
#                 its own.
# Every round starts when all processes reached it (a file barrier), and uses fresh keys. The
# first error stops all processes. Prints {"kinds": {outcome kind: count}, "errors": [...]}.
SUBMITTER = """
import json, os, random, sys, time
from pathlib import Path
import django
django.setup()
from tests.testapp.tasks import keyed

directory, index, processes, mode, rounds, keys = sys.argv[1:7]
directory, processes, rounds, keys = Path(directory), int(processes), int(rounds), int(keys)
rng = random.Random(int(index))
failed = directory / "failed"

def barrier(name):
    (directory / f"{name}-{index}").touch()
    while not all((directory / f"{name}-{i}").exists() for i in range(processes)):
        if failed.exists():
            return False
        time.sleep(0.0005)
    return True

kinds, errors = {}, []
barrier("ready")
for round_ in range(rounds):
    if not barrier(f"round{round_}"):
        break
    payloads = [{"path": f"/media/{round_}/{i}.jpg", "size": i} for i in range(keys)]
    try:
        if mode == "one":
            outcomes = [keyed.submit(**payload) for payload in payloads]
        else:
            rng.shuffle(payloads)
            outcomes = keyed.submit_batch(payloads)
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
        failed.touch()
        break
    for outcome in outcomes:
        kinds[outcome.kind] = kinds.get(outcome.kind, 0) + 1
print(json.dumps({"kinds": kinds, "errors": errors}))
"""


def race(directory: Path, mode: str, rounds: int, keys: int) -> dict[str, int]:
    """Run PROCESSES submitters together; fail on any error; return their summed outcomes."""
    args = [str(PROCESSES), mode, str(rounds), str(keys)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SUBMITTER, str(directory), str(index), *args],
            cwd=ROOT,
            env=subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in range(PROCESSES)
    ]
    try:
        results = [proc.communicate(timeout=180) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    crashed = [
        f"exit {p.returncode}: {err}"
        for p, (_, err) in zip(procs, results, strict=True)
        if p.returncode or err
    ]
    assert not crashed, "\n".join(crashed)
    reports = [json.loads(out) for out, _ in results]
    errors = [error for report in reports for error in report["errors"]]
    assert not errors, "submissions raised:\n" + "\n".join(errors)
    total: dict[str, int] = {}
    for report in reports:
        for kind, count in report["kinds"].items():
            total[kind] = total.get(kind, 0) + count
    return total


def test_dedup__four_processes_submitting_the_same_200_tasks_keep_one_per_key(tmp_path):
    kinds = race(tmp_path, "one", rounds=1, keys=200)

    assert kinds == {"inserted": 200, "duplicate": 200 * (PROCESSES - 1)}
    assert Task.objects.count() == 200
    assert Task.objects.values("key").distinct().count() == 200


def test_dedup__concurrent_batches_in_different_orders_never_raise(tmp_path):
    # SQLite serialises writers, so a few rounds suffice there; PostgreSQL needs many chances.
    rounds, keys = (40 if connection.vendor == "postgresql" else 10), 100
    kinds = race(tmp_path, "batch", rounds=rounds, keys=keys)

    assert kinds == {"inserted": rounds * keys, "duplicate": rounds * keys * (PROCESSES - 1)}
    assert Task.objects.count() == rounds * keys
    assert Task.objects.values("key").distinct().count() == rounds * keys
