"""``bench/run.py`` runs end to end with tiny sizes (TASKMILL_BENCH_TINY): enqueue and async
processing with their raw-SQL floors, and growth, so a change to the package or to bench/
cannot leave the benchmark broken until someone needs it. (The sync processing runs share
their code with the async one; each scenario costs a fresh database and worker start-up, so
the rest is left out.) It measures nothing: numbers of a run this small mean nothing, only
that each part produced them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.postgres_only


def test_bench__runs_end_to_end_with_floors_ratios_cpu_and_growth(tmp_path):
    env = {
        **os.environ,
        "TASKMILL_BENCH_TINY": "1",
        "TASKMILL_BENCH_RESULTS_DIR": str(tmp_path),
        # Its own database: the bench drops and creates it per scenario.
        "TASKMILL_BENCH_PG_NAME": os.environ.get("TASKMILL_TEST_PG_DBNAME", "test_taskmill")
        + "_bench",
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    command = [sys.executable, "bench/run.py", "--db", "postgres"]
    command += ["enqueue", "async", "growth", "--pending", "2000", "--history", "0"]
    run = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    results = json.loads((tmp_path / "results-postgres.json").read_text())["results"]
    for floor in ("floor_insert", "floor_copy", "floor_claim"):
        assert results[floor]["rate"] > 0
    assert len(results["floor_claim"]["runs"]) == 2  # before and after the processing runs
    processed = results["process_async_2w_c32"]
    assert processed["completed"] == 200
    assert processed["task"] == "bench::anoop"
    assert processed["cpu"]["worker_us"] > 0
    for key in ("enqueue_single", "enqueue_batch", "process_async_2w_c32"):
        assert results["ratios"][key]["rate"] > 0
    growth = results["growth"]
    assert [r["pending"] for r in growth["pending"]] == [2000]
    assert growth["pending"][0]["rate"] > 0 and growth["pending"][0]["run_ms"]["p50"] > 0
    assert [r["history"] for r in growth["history"]] == [0]
    assert growth["history"][0]["submit_rate"] > 0
    assert "÷ floor" in run.stdout
