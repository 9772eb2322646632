"""taskmill_django benchmark: enqueue, processing, pickup latency, against a same-sitting floor.

    python3 dev.py bench [SCENARIO ...] [--db sqlite|postgres|all] [--quick] [--rev REV]
                         [--pending 10000,100000] [--history 0,1000000]
                         [--operator-history 10000000]
    .venv/bin/python bench/run.py ...                 (the same, without the venv check)

Scenarios (default: enqueue, process, async, latency; about two minutes): ``enqueue``,
``process`` (2 workers at concurrency 4 and 32), ``async`` (async bodies on the workers' event
loops), ``latency``, and on request ``operator``, ``gates`` and ``growth`` (bench/growth.py).
On PostgreSQL, enqueue and processing come with their same-sitting floor (raw SQL: the
reference every rate is divided by, bench/floor.py) unless ``--no-floor``.
Each database runs in its own child process (Django is configured once per process) with
``bench.settings``; every scenario gets a freshly created and migrated database. Results are
printed as a table (each rate with its ratio to the floor, and CPU time per task) and written
to bench/results-<db>.json. This is a benchmark, not a test: it never fails on a missed
target, only on a broken run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
# Python put this script's directory first on sys.path: take it out, so bench/operator.py can
# never stand in for the standard library's operator module. bench.* is imported from ROOT.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DATABASES = ("sqlite", "postgres")
SCENARIOS = ("enqueue", "process", "async", "latency", "operator", "gates", "growth")
DEFAULT_SCENARIOS = ("enqueue", "process", "async", "latency")
GROWTH_PENDING = (10_000, 100_000)
GROWTH_HISTORY = (0, 1_000_000)
GROWTH_QUICK = ((1_000, 10_000), (0, 10_000))

# Absolute targets, where a ratio does not apply.
TARGETS: dict[str, Any] = {
    "latency_p99_ms": 20,
    "operator_p95_ms": 300,
    "gates_ratio": 0.70,
}

# Which floor (bench/floor.py) each measurement is divided by.
FLOORS = {"enqueue_single": "floor_insert", "enqueue_batch": "floor_copy"}

# SQLite has no LISTEN/NOTIFY: idle workers find new work by polling (POLL_INTERVAL, default
# 1 s), so latency is measured with the default and with a short poll interval.
LATENCY_POLLS: dict[str, tuple[float | None, ...]] = {
    "sqlite": (None, 0.05),
    "postgres": (None,),
}


SLOW_POLL_PROBES = 20


def results_path(db: str) -> Path:
    """bench/results-<db>.json, or in TASKMILL_BENCH_RESULTS_DIR (the smoke test's)."""
    folder = os.environ.get("TASKMILL_BENCH_RESULTS_DIR")
    return (Path(folder) if folder else BENCH) / f"results-{db}.json"


# --- child: one database --------------------------------------------------------------------


def run_child(
    db: str,
    quick: bool,
    only: set[str],
    analyze: bool = False,
    growth_sizes: tuple[list[int], list[int]] = ([], []),
    floors: bool = True,
    operator_history: int | None = None,
) -> int:
    workdir = Path(tempfile.mkdtemp(prefix=f"taskmill-bench-{db}-"))
    os.environ["TASKMILL_BENCH_DB"] = db
    os.environ["TASKMILL_BENCH_LOG_DIR"] = str(workdir)  # the bodies' lines (bench/body.py)
    os.environ.setdefault("TASKMILL_BENCH_SQLITE", str(workdir / "bench.sqlite3"))
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    import django

    django.setup()
    import taskmill_django
    from bench import floor, gates, operator, scenarios

    sizes = scenarios.Sizes.quick() if quick else scenarios.Sizes()
    if os.environ.get("TASKMILL_BENCH_TINY"):  # the smoke test: every path, in seconds
        sizes = scenarios.Sizes.tiny()
    if operator_history is not None:
        sizes = dataclasses.replace(sizes, operator_history=operator_history)
    ctx = scenarios.Context(db=db, workdir=workdir, sizes=sizes, analyze_after_fill=analyze)
    results: dict[str, Any] = {}
    meta = {
        "db": db,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "django": django.get_version(),
        "host": socket.gethostname(),
        "load_before": _loadavg(),
        "revision": _revision(),
        "analyze_after_fill": analyze,
        "package": str(Path(taskmill_django.__file__).resolve().parent),
    }
    if Path(taskmill_django.__file__).resolve().parent != ROOT / "taskmill_django":
        _log(f"WARNING: measuring {taskmill_django.__file__}, not this tree")
    failed = False
    try:
        scenarios.fresh_database()
        meta["server"] = scenarios.server_version()
        _log(f"== {db}: {meta['server']}, {'quick' if quick else 'full'} run, workdir {workdir}")
        with_floor = floors and db == "postgres"
        if "enqueue" in only and with_floor:
            _log("enqueue: submit() and submit_batch(), alternating with raw INSERT and COPY ...")
            results.update(floor.enqueue(ctx))
            for key, other in (("enqueue_single", "floor_insert"), ("enqueue_batch", "floor_copy")):
                _log(
                    f"  {key}: {results[key]['rate']:,.0f} tasks/s,"
                    f" {other}: {results[other]['rate']:,.0f}/s"
                )
        elif "enqueue" in only:
            _log("enqueue: single submit() ...")
            results["enqueue_single"] = scenarios.enqueue_single(ctx)
            _log(f"  {results['enqueue_single']['rate']:,.0f} tasks/s")
            _log("enqueue: submit_batch() ...")
            results["enqueue_batch"] = scenarios.enqueue_batch(ctx)
            _log(f"  {results['enqueue_batch']['rate']:,.0f} tasks/s")
        claims: list[dict[str, Any]] = []
        if with_floor and {"process", "async"} & only:
            claims.append(_floor_claim(ctx))
        if "process" in only:
            for concurrency in sizes.concurrencies:
                for count in sizes.worker_counts:
                    name = f"process_{count}w_c{concurrency}"
                    _log(f"processing: {count} worker(s) x concurrency {concurrency} ...")
                    results[name] = scenarios.processing(ctx, count, concurrency)
                    r = results[name]
                    _log(
                        f"  {r['rate']:,.0f} tasks/s ({r['completed']} in {r['seconds']:.2f}s;"
                        f" insert {r['insert_seconds']:.2f}s; per worker {r['per_worker']})"
                        + _fmt_cpu_log(r)
                    )
        if "async" in only:
            from bench.benchapp.tasks import anoop

            concurrency = sizes.async_concurrency
            _log(f"processing async bodies: 2 workers x concurrency {concurrency} ...")
            r = scenarios.processing(ctx, 2, concurrency, task=anoop)
            results[f"process_async_2w_c{concurrency}"] = r
            _log(
                f"  {r['rate']:,.0f} tasks/s ({r['completed']} in {r['seconds']:.2f}s)"
                + _fmt_cpu_log(r)
            )
        if claims:
            claims.append(_floor_claim(ctx))
            results["floor_claim"] = floor.mean_claim(claims)
        if "latency" in only:
            for poll in LATENCY_POLLS[db]:
                name = "latency" if poll is None else f"latency_poll{poll:g}"
                label = "default poll" if poll is None else f"--poll-interval {poll:g}"
                _log(f"pickup latency ({label}) ...")
                # Each probe waits out a poll interval when there is no wake-up: a few suffice.
                probes = SLOW_POLL_PROBES if db == "sqlite" and poll is None else None
                results[name] = scenarios.pickup_latency(ctx, poll, n=probes)
                r = results[name]
                _log(
                    f"  db p50 {r['db_ms']['p50']:.1f} ms, p99 {r['db_ms']['p99']:.1f} ms;"
                    f" end-to-end p50 {r['e2e_ms']['p50']:.1f} ms, p99 {r['e2e_ms']['p99']:.1f} ms"
                    f" (p50 submit {r['submit_ms']['p50']:.1f} ms, claim to body"
                    f" {r['start_ms']['p50']:.1f} ms)"
                )
        if "operator" in only:
            _log("operator views over a filled database ...")
            results["operator"] = operator.run(ctx)
        if "gates" in only:
            _log("processing with cluster-wide gates configured but not binding ...")
            gates.run(ctx, results)
        if "growth" in only and db == "postgres":
            from bench import growth

            _log("growth: processing and claim latency by pending tasks and history rows ...")
            results["growth"] = growth.run(ctx, *growth_sizes)
    except Exception as exc:
        failed = True
        _log(f"ERROR on {db}: {type(exc).__name__}: {exc}")
        for log_path in ctx.worker_logs[-2:]:
            if log_path.exists():
                tail = log_path.read_text(errors="replace")[-2000:]
                _log(f"--- {log_path.name} (tail) ---\n{tail}")
    finally:
        try:
            scenarios.drop_database()
        except Exception as exc:
            _log(f"could not drop the bench database: {exc}")
        for path in sorted(workdir.glob("*"), reverse=True):
            path.unlink(missing_ok=True)
        workdir.rmdir()
    meta["load_after"] = _loadavg()
    results["ratios"] = ratios(results)
    results_path(db).write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    return 1 if failed else 0


def _floor_claim(ctx: Any) -> dict[str, Any]:
    from bench import floor

    _log("floor: raw SKIP LOCKED claim loop, 2 processes x 100 per claim ...")
    r = floor.claim(ctx)
    _log(f"  {_best_rate(r):,.0f} tasks/s{_fmt_cpu_log(r)}")
    return r


def _log(message: str) -> None:
    print(message, flush=True)


def _revision() -> str:
    """The commit measured, with "-dirty" when the working tree has changes."""
    if os.environ.get("TASKMILL_BENCH_REVISION"):
        return os.environ["TASKMILL_BENCH_REVISION"]
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# --- parent: run the children, print the table -------------------------------------------------


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _best_rate(r: dict[str, Any]) -> float:
    """Processing rate from the commit to the last finish (database rows), else polled."""
    return float(r.get("rate_by_finished_at") or r["rate"])


def _fmt_cpu_log(r: dict[str, Any]) -> str:
    cpu = r.get("cpu") or {}
    if cpu.get("worker_us") is None:
        return ""
    server = "" if cpu.get("server_us") is None else f" + server {cpu['server_us']:,.0f}"
    return f"; CPU per task: workers {cpu['worker_us']:,.0f}{server} us"


def ratios(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Each rate divided by its floor of the same run, and CPU per task divided by the floor's:
    throughput above 1 is faster than the floor (never, in practice), CPU above 1 costlier."""
    out: dict[str, dict[str, float]] = {}
    for key, floor_key in FLOORS.items():
        if key in results and floor_key in results:
            out[key] = {"rate": results[key]["rate"] / results[floor_key]["rate"]}
    claim = results.get("floor_claim")
    if claim:
        floor_cpu = (claim.get("cpu") or {}).get("total_us")
        for key, r in results.items():
            if not key.startswith("process_"):
                continue
            out[key] = {"rate": _best_rate(r) / _best_rate(claim)}
            cpu = (r.get("cpu") or {}).get("total_us")
            if cpu and floor_cpu:
                out[key]["cpu"] = cpu / floor_cpu
    return out


def _fmt_rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}/s"


def _fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f} ms"


def _fmt_us(value: float | None) -> str:
    return "" if value is None else f"{value:,.0f} us"


def _verdict(value: float | None, target: float | None, higher_is_better: bool = True) -> str:
    if value is None or target is None:
        return ""
    ok = value >= target if higher_is_better else value <= target
    return "ok" if ok else "MISS"


OPERATOR_VIEWS = {
    "dashboard_data": "admin dashboard JSON",
    "api_tasks": "API tasks/",
    "api_history": "API history/",
}
COLUMNS = ("value", "÷ floor or target", "CPU/task w + s", "÷ floor CPU")


def build_rows(all_results: dict[str, dict[str, Any]]) -> list[list[str]]:
    """One row per metric: name, then per database (value, ratio or target, CPU per task
    (workers + server), CPU ratio to the floor's)."""
    rows: list[list[str]] = []

    def row(label: str, cells: dict[str, tuple[str, ...]]) -> None:
        if all(c[0] == "-" for c in cells.values()):
            return  # not measured in this run
        line = [label]
        for db in all_results:
            line.extend(cells.get(db, ("-", "", "", "")))
        rows.append(line)

    def rate_row(label: str, key: str) -> None:
        cells: dict[str, tuple[str, ...]] = {}
        for db, data in all_results.items():
            r = data["results"].get(key)
            ratio = data["results"].get("ratios", {}).get(key, {})
            if not r:
                cells[db] = ("-", "", "", "")
                continue
            cpu = r.get("cpu") or {}
            total = cpu.get("total_us")
            cpu_text = _fmt_us(total if total is not None else cpu.get("worker_us"))
            if total is None and cpu_text:
                cpu_text += " (workers)"
            value = _best_rate(r) if key.startswith(("process_", "floor_claim")) else r["rate"]
            cells[db] = (
                _fmt_rate(value),
                f"{ratio['rate']:.2f}" if "rate" in ratio else "",
                cpu_text,
                f"{ratio['cpu']:.1f}" if "cpu" in ratio else "",
            )
        row(label, cells)

    rate_row("floor: raw INSERT, one per transaction", "floor_insert")
    rate_row("floor: raw COPY, 1000 per transaction", "floor_copy")
    rate_row("floor: raw SKIP LOCKED loop, 2 x 100 per claim", "floor_claim")
    rate_row("enqueue, submit() one at a time", "enqueue_single")
    rate_row("enqueue, submit_batch() x1000", "enqueue_batch")
    process_keys = sorted(
        {k for data in all_results.values() for k in data["results"] if k.startswith("process_")},
        key=lambda k: ("async" in k, int(k.rsplit("_c", 1)[1]), k),
    )
    for key in process_keys:
        r = next(d["results"][key] for d in all_results.values() if key in d["results"])
        what = "async bodies" if "async" in key else "processing"
        rate_row(f"{what}, {r['workers']} worker(s) x {r['concurrency']}", key)
    latency_keys = sorted(
        {k for data in all_results.values() for k in data["results"] if k.startswith("latency")}
    )
    for key in latency_keys:
        suffix = (
            "" if key == "latency" else f" (--poll-interval {key.removeprefix('latency_poll')})"
        )
        for metric, label in (("db_ms", "claimed"), ("e2e_ms", "task body runs")):
            for pct in ("p50", "p99"):
                cells: dict[str, tuple[str, ...]] = {}
                for db, data in all_results.items():
                    r = data["results"].get(key)
                    value = r[metric].get(pct) if r else None
                    target = (
                        TARGETS["latency_p99_ms"] if pct == "p99" and metric == "db_ms" else None
                    )
                    verdict = _verdict(value, target, higher_is_better=False)
                    cells[db] = (
                        _fmt_ms(value),
                        f"<= {target} ms {verdict}" if target else "",
                        "",
                        "",
                    )
                row(f"pickup {pct}, submit -> {label}{suffix}", cells)
    for key, label in OPERATOR_VIEWS.items():
        for pct in ("p50", "p95", "max"):
            cells = {}
            for db, data in all_results.items():
                r = data["results"].get("operator", {}).get("endpoints", {}).get(key)
                value = r["ms"][pct] if r else None
                target = TARGETS["operator_p95_ms"] if pct == "p95" else None
                verdict = _verdict(value, target, higher_is_better=False)
                cells[db] = (_fmt_ms(value), f"<= {target} ms {verdict}" if target else "", "", "")
            row(f"operator view {pct}, {label}", cells)
    gate_runs = {
        k: r
        for data in all_results.values()
        for k, r in data["results"].items()
        if k.startswith("gates_")
    }
    for key in sorted(gate_runs, key=lambda k: gate_runs[k]["concurrency"]):
        r = gate_runs[key]
        for name in r["rate"]:
            cells = {}
            for db, data in all_results.items():
                found = data["results"].get(key)
                if not found or name not in found["rate"]:
                    continue
                ratio = found["ratio"].get(name)
                value = _fmt_rate(found["rate"][name])
                value += "" if ratio is None else f" = {ratio:.2f}x"
                # A gated run cut at its time limit (bench/gates.py RUN_SECONDS).
                value += " cut" if any(x["timed_out"] for x in found["runs"][name]) else ""
                target = None if ratio is None else TARGETS["gates_ratio"]
                verdict = _verdict(ratio, target)
                cells[db] = (value, f">= {target:.2f}x {verdict}" if target else "", "", "")
            what = "baseline, mean of first and last run" if name == "baseline" else name
            row(f"gates, {r['workers']} workers x {r['concurrency']} threads: {what}", cells)
    for data in all_results.values():
        growth = data["results"].get("growth")
        if not growth:
            continue
        floor = data["results"].get("floor_claim")
        first = growth["pending"][0]["rate"] if growth["pending"] else None
        for r in growth["pending"]:
            ratio = f"{r['rate'] / first:.2f} of first" if first else ""
            rows.append(
                [
                    f"growth, {r['pending']:,} pending: processing 2 x 32",
                    _fmt_rate(r["rate"]),
                    ratio,
                    "",
                    "",
                ]
            )
            for key, what in (("claim_ms", "claim"), ("run_ms", "submit -> body")):
                ms = r.get(key, {})
                rows.append(
                    [
                        f"growth, {r['pending']:,} pending: {what} p50 / p99",
                        f"{ms.get('p50', 0):.1f} / {ms.get('p99', 0):.1f} ms",
                        "",
                        "",
                        "",
                    ]
                )
        for r in growth["history"]:
            ratio = f"{r['process_rate'] / _best_rate(floor):.2f}" if floor else ""
            rows.append(
                [
                    f"growth, {r['history']:,} history: processing 2 x 32",
                    _fmt_rate(r["process_rate"]),
                    ratio,
                    "",
                    "",
                ]
            )
            rows.append(
                [
                    f"growth, {r['history']:,} history: submit()",
                    _fmt_rate(r["submit_rate"]),
                    "",
                    "",
                    "",
                ]
            )
            claim = r["claim_ms"]
            rows.append(
                [
                    f"growth, {r['history']:,} history: pickup p50 / p99",
                    f"{claim['p50']:.1f} / {claim['p99']:.1f} ms",
                    "",
                    "",
                    "",
                ]
            )
    width = 1 + len(COLUMNS) * len(all_results)
    return [r + [""] * (width - len(r)) for r in rows]


def print_table(all_results: dict[str, dict[str, Any]]) -> None:
    header = ["metric"]
    for db in all_results:
        header.extend([f"{db} {COLUMNS[0]}", *COLUMNS[1:]])
    rows = [header, *build_rows(all_results)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    print()
    for index, r in enumerate(rows):
        cells = [r[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)
        ]
        print("  ".join(cells).rstrip())
        if index == 0:
            print("  ".join("-" * w for w in widths))
    print()
    print(
        "÷ floor: the rate divided by the raw-SQL floor measured in this run (bench/floor.py);"
        " CPU/task: microseconds of CPU per task, worker processes + PostgreSQL backends"
        " (bench/cpu.py); ÷ floor CPU: that divided by the raw claim loop's."
    )
    for db, data in all_results.items():
        meta = data["meta"]
        print(
            f"{db}: {meta.get('server', '?')}, {meta['cpus']} cpus, Python {meta['python']},"
            f" Django {meta['django']}, load before {meta['load_before']} after"
            f" {meta.get('load_after')}, revision {meta.get('revision')}"
            f"{', QUICK run' if meta['quick'] else ''}"
            f"{', ANALYZE after fill' if meta.get('analyze_after_fill') else ''}"
        )
        filled = data["results"].get("operator")
        if filled:
            print(
                f"  operator views over {filled['history_rows']:,} history and"
                f" {filled['active_rows']:,} active rows; slowest statements in the results file"
            )
    paths = [results_path(db) for db in all_results]
    print(
        "\nResults: "
        + ", ".join(str(p.relative_to(ROOT) if p.is_relative_to(ROOT) else p) for p in paths)
    )


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of counts: {text!r}"
        ) from None
    if any(size < 0 for size in sizes):
        raise argparse.ArgumentTypeError(f"counts must be >= 0: {text!r}")
    return sizes


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "scenarios",
        nargs="*",
        metavar="SCENARIO",
        help=f"any of {', '.join(SCENARIOS)} (default: {', '.join(DEFAULT_SCENARIOS)})",
    )
    parser.add_argument(
        "--db",
        choices=(*DATABASES, "all"),
        default="",
        help="default: postgres (where the floor is), sqlite when PostgreSQL is not reachable",
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--only", default="", help="comma-separated scenarios (as SCENARIO)")
    parser.add_argument(
        "--pending",
        type=_sizes,
        default=None,
        help="growth: pending-task counts, e.g. 10000,100000,1000000 (default"
        f" {','.join(map(str, GROWTH_PENDING))})",
    )
    parser.add_argument(
        "--history",
        type=_sizes,
        default=None,
        help="growth: history-row counts, e.g. 0,10000000 (default"
        f" {','.join(map(str, GROWTH_HISTORY))})",
    )
    parser.add_argument(
        "--operator-history",
        type=int,
        default=None,
        help="operator: history rows to fill (default 1000000; 100000 with --quick)",
    )
    parser.add_argument(
        "--analyze-after-fill",
        action="store_true",
        help="PostgreSQL: ANALYZE the task table after the pre-fill (planner statistics)",
    )
    parser.add_argument(
        "--rev",
        default="",
        help="measure this git revision (exported to a temporary copy) instead of the tree",
    )
    parser.add_argument(
        "--no-floor",
        action="store_true",
        help="PostgreSQL: skip the raw-SQL floor (then no ratios are printed)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    only = {s.strip() for s in args.only.split(",") if s.strip()} | set(args.scenarios)
    only = only or set(DEFAULT_SCENARIOS)
    unknown = only - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(sorted(unknown))}")
    quick_pending, quick_history = GROWTH_QUICK
    pending = (
        args.pending
        if args.pending is not None
        else (list(quick_pending if args.quick else GROWTH_PENDING))
    )
    history = (
        args.history
        if args.history is not None
        else (list(quick_history if args.quick else GROWTH_HISTORY))
    )
    if any(size < 2 for size in pending):
        parser.error("--pending: each count must be at least 2")

    if args.child:
        return run_child(
            args.db,
            args.quick,
            only,
            args.analyze_after_fill,
            (pending, history),
            not args.no_floor,
            args.operator_history,
        )

    if not args.db:
        args.db = "postgres" if port_open(5432) else "sqlite"
        if args.db == "sqlite":
            print("PostgreSQL is not reachable on 127.0.0.1:5432: measuring SQLite only")
    databases = list(DATABASES) if args.db == "all" else [args.db]
    tree = ROOT
    if args.rev:
        tree = export_revision(args.rev)
        print(f"measuring revision {os.environ['TASKMILL_BENCH_REVISION']} in {tree}")
    code = 0
    done: dict[str, dict[str, Any]] = {}
    try:
        for db in databases:
            if db == "postgres" and not port_open(5432):
                print("PostgreSQL is not reachable on 127.0.0.1:5432: skipped")
                code = code or (1 if args.db == "postgres" else 0)
                continue
            started = time.monotonic()
            results_path(db).unlink(missing_ok=True)
            child = [sys.executable, str(tree / "bench" / "run.py"), "--child", "--db", db]
            child += ["--only", ",".join(sorted(only))] + (["--quick"] if args.quick else [])
            child += ["--analyze-after-fill"] if args.analyze_after_fill else []
            child += ["--no-floor"] if args.no_floor else []
            child += ["--pending", ",".join(map(str, pending))]
            child += ["--history", ",".join(map(str, history))]
            if args.operator_history is not None:
                child += ["--operator-history", str(args.operator_history)]
            status = subprocess.run(child, cwd=tree, check=False).returncode
            print(f"({db} took {time.monotonic() - started:.0f}s)")
            produced = tree / "bench" / results_path(db).name
            if os.environ.get("TASKMILL_BENCH_RESULTS_DIR"):
                produced = results_path(db)
            if produced.exists():
                if produced != results_path(db):
                    shutil.copyfile(produced, results_path(db))
                done[db] = json.loads(results_path(db).read_text())
            code = code or status
    finally:
        if tree != ROOT:
            shutil.rmtree(tree, ignore_errors=True)
    if done:
        print_table(done)
    return code


def export_revision(rev: str) -> Path:
    """A clean copy of ``rev`` (``git archive``) with this bench/ laid over it.

    Lets a busy working tree be measured at a fixed commit; the copy comes first on sys.path,
    ahead of the editable install, in the bench process and in the workers.
    """
    commit = subprocess.run(
        ["git", "rev-parse", "--short", rev], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    tree = Path(tempfile.mkdtemp(prefix=f"taskmill-bench-{commit}-"))
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    shutil.rmtree(tree / "bench", ignore_errors=True)
    shutil.copytree(
        BENCH, tree / "bench", ignore=shutil.ignore_patterns("results-*.json", "__pycache__")
    )
    os.environ["TASKMILL_BENCH_REVISION"] = commit
    return tree


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
