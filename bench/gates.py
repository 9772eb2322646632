"""Issue 4: cluster-wide gates that are configured but not binding must cost < 30% throughput.

A project that configures MAX_CONCURRENCY, a domain cap, group limits, rate limits, group
weights or priority aging moves every claim off the single-statement fast path onto the gated
forms of ``store/claim/paths.py``: a cluster-wide lock row, a count of the running tasks, a
candidate query, the gate checks in Python, token buckets, then the claim.
That price is paid even when every limit is far away, so this scenario drains the processing
scenario's task count with its workers (2 processes, each concurrency of the process scenario)
with nothing configured and with every gate configured so generously that none can bind; at the
highest concurrency also with each gate alone, to tell which one costs. Each rate is reported
against the baseline (target: ratio >= 0.70).

Every variant, the baseline included, spreads the tasks over the same four groups, so the
configuration is the only difference. Settings reach the worker subprocesses as JSON in
TASKMILL_BENCH_SETTINGS (bench/settings.py merges it into TASKMILL); the domain cap has no
setting and is stored as a runtime override (``DomainHandle.set_max_concurrency``), which the
workers load like the others. The baseline runs first and last and its mean is the reference,
so a load change during the sequence shows up as two different baselines instead of skewing the
ratios silently. A gated run that has not drained the queue after ``RUN_SECONDS`` is cut there
(its rate is over what finished, with the queue still deep): the slowest variants would
otherwise take many minutes, and what matters is that they miss the target, not by how much.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

from django.db import connection

from bench.benchapp.tasks import noop
from bench.scenarios import Context, processing
from taskmill_django import scheduler
from taskmill_django.models import RateBucket, SchedulerSetting
from taskmill_django.store.claim import CLAIM_LOCK

WORKERS = 2
RUN_SECONDS = 60.0
GROUPS = ("g0", "g1", "g2", "g3")
HUGE = 10_000
CAPS = {"max_concurrency", "domain_cap", "group_concurrency"}
# Settings per gate; "domain_cap" is applied by ``_setup`` instead (no setting exists for it).
GATES: dict[str, dict[str, Any]] = {
    "max_concurrency": {"MAX_CONCURRENCY": HUGE},
    "domain_cap": {},
    "group_concurrency": {"GROUP_CONCURRENCY": dict.fromkeys(GROUPS, HUGE)},
    "rate_limit": {"RATE_LIMITS": {noop.task_type: {"rate": 1_000_000, "burst": 1_000_000}}},
    "group_weights": {"GROUP_WEIGHTS": {g: i + 1 for i, g in enumerate(GROUPS)}},
    "priority_aging": {"PRIORITY_AGING": {"grace_period": 60, "interval": 60, "ceiling": 64}},
}


def sequence(singles: bool) -> list[tuple[str, tuple[str, ...]]]:
    """(variant name, gates configured), in the order they run."""
    alone = [(gate, (gate,)) for gate in GATES] if singles else []
    return [("baseline", ()), ("all", tuple(GATES)), *alone, ("baseline", ())]


def settings_for(gates: tuple[str, ...]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for gate in gates:
        merged.update(GATES[gate])
    return merged


def _setup(gates: tuple[str, ...]) -> None:
    if "domain_cap" in gates:
        scheduler.domain(noop.domain.name).set_max_concurrency(HUGE)


def run(ctx: Context, results: dict[str, Any]) -> None:
    """Adds ``gates_<workers>w_c<concurrency>`` to ``results`` as each concurrency finishes, so
    a later failure (a database restart by a concurrent test suite) keeps what was measured."""
    for concurrency in ctx.sizes.gate_concurrencies:
        runs: dict[str, list[dict[str, Any]]] = {}
        for name, gates in sequence(singles=concurrency == max(ctx.sizes.gate_concurrencies)):
            r = processing(
                ctx,
                WORKERS,
                concurrency,
                groups=GROUPS,
                worker_env={"TASKMILL_BENCH_SETTINGS": json.dumps(settings_for(gates))},
                setup=partial(_setup, gates),
                time_limit=RUN_SECONDS if gates else None,
            )
            # Claims counting against caps create the lock row, rate-limited ones their
            # bucket: proof the workers took the gated path when those were configured.
            # (Weights and aging leave no such trace.)
            traces = (
                SchedulerSetting.objects.filter(name=CLAIM_LOCK).exists(),
                RateBucket.objects.exists(),
            )
            # (SQLite serialises writers anyway: its claims never take the lock row.)
            locks = connection.vendor != "sqlite"
            expected = (locks and bool(set(gates) & CAPS), "rate_limit" in gates)
            if traces != expected or (r["timed_out"] and not gates):
                raise RuntimeError(f"{name}: traces {traces}, timed out {r['timed_out']}")
            keep = ("rate", "completed", "seconds", "timed_out", "per_worker")
            runs.setdefault(name, []).append({k: r[k] for k in keep})
            cut = f" (cut after {RUN_SECONDS:.0f}s)" if r["timed_out"] else ""
            print(
                f"  2 x {concurrency}, {name}: {r['rate']:,.0f} tasks/s,"
                f" {r['completed']:,} in {r['seconds']:.1f}s{cut}",
                flush=True,
            )
        rate = {name: sum(x["rate"] for x in v) / len(v) for name, v in runs.items()}
        ratio = {name: rate[name] / rate["baseline"] for name in rate if name != "baseline"}
        results[f"gates_{WORKERS}w_c{concurrency}"] = {
            "workers": WORKERS,
            "concurrency": concurrency,
            "n": ctx.sizes.process,
            "groups": list(GROUPS),
            "settings": settings_for(tuple(GATES)),
            "domain_cap": HUGE,
            "run_seconds_limit": RUN_SECONDS,
            "runs": runs,
            "rate": rate,
            "ratio": ratio,
        }
        print(
            f"  2 x {concurrency}: ratio to the baseline: "
            + ", ".join(f"{k} {v:.2f}" for k, v in ratio.items()),
            flush=True,
        )
