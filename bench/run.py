"""taskmill_django benchmark: enqueue, processing, pickup latency, operator views, gate cost.

    python3 dev.py bench [--db sqlite|postgres|all] [--quick] [--only NAMES] [--rev REV]
    .venv/bin/python bench/run.py ...                 (the same, without the venv check)

Each database runs in its own child process (Django is configured once per process) with
``bench.settings``; every scenario gets a freshly created and migrated database. Results are
printed as a table and written to bench/results-<db>.json. This is a benchmark, not a test: it
never fails on a missed target, only on a broken run.
"""

from __future__ import annotations

import argparse
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
SCENARIOS = ("enqueue", "process", "latency", "operator", "gates")

# Targets (same for every database unless a dict says otherwise).
TARGETS: dict[str, Any] = {
    "enqueue_single": 2000,
    "enqueue_batch": 30_000,
    "process_2w": {"sqlite": 1500, "postgres": 5000},
    "latency_p99_ms": 20,
    "operator_p95_ms": 300,
    "gates_ratio": 0.70,
}

# Measured on the same machine class (2 cores, PostgreSQL 15), no-op jobs.
REFERENCE_POINTS = [
    ("procrastinate", "~540 jobs/s"),
    ("Django Tasks, database backend", "~190 jobs/s"),
    ("django-q2", "~110 jobs/s"),
    ("Celery + Redis", "~1,550 jobs/s"),
    ("bare SQL claim/complete loop (ceiling)", "~34,000 jobs/s"),
]

# SQLite has no LISTEN/NOTIFY: idle workers find new work by polling (POLL_INTERVAL, default
# 1 s), so latency is measured with the default and with a short poll interval.
LATENCY_POLLS: dict[str, tuple[float | None, ...]] = {
    "sqlite": (None, 0.05),
    "postgres": (None,),
}


def results_path(db: str) -> Path:
    return BENCH / f"results-{db}.json"


# --- child: one database --------------------------------------------------------------------


def run_child(db: str, quick: bool, only: set[str], analyze: bool = False) -> int:
    workdir = Path(tempfile.mkdtemp(prefix=f"taskmill-bench-{db}-"))
    os.environ["TASKMILL_BENCH_DB"] = db
    os.environ.setdefault("TASKMILL_BENCH_SQLITE", str(workdir / "bench.sqlite3"))
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    import django

    django.setup()
    import taskmill_django
    from bench import gates, operator, scenarios

    sizes = scenarios.Sizes.quick() if quick else scenarios.Sizes()
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
        if "enqueue" in only:
            _log("enqueue: single submit() ...")
            results["enqueue_single"] = scenarios.enqueue_single(ctx)
            _log(f"  {results['enqueue_single']['rate']:,.0f} tasks/s")
            _log("enqueue: submit_batch() ...")
            results["enqueue_batch"] = scenarios.enqueue_batch(ctx)
            _log(f"  {results['enqueue_batch']['rate']:,.0f} tasks/s")
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
                    )
        if "latency" in only:
            for poll in LATENCY_POLLS[db]:
                name = "latency" if poll is None else f"latency_poll{poll:g}"
                label = "default poll" if poll is None else f"--poll-interval {poll:g}"
                _log(f"pickup latency ({label}) ...")
                results[name] = scenarios.pickup_latency(ctx, poll)
                r = results[name]
                _log(
                    f"  db p50 {r['db_ms']['p50']:.1f} ms, p99 {r['db_ms']['p99']:.1f} ms;"
                    f" end-to-end p50 {r['e2e_ms']['p50']:.1f} ms, p99 {r['e2e_ms']['p99']:.1f} ms"
                )
        if "operator" in only:
            _log("operator views over a filled database ...")
            results["operator"] = operator.run(ctx)
        if "gates" in only:
            _log("processing with cluster-wide gates configured but not binding ...")
            gates.run(ctx, results)
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
    results_path(db).write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    return 1 if failed else 0


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


def _fmt_rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}/s"


def _fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f} ms"


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


def _target_for(key: str, db: str) -> float | None:
    target = TARGETS.get(key)
    return target.get(db) if isinstance(target, dict) else target


def build_rows(all_results: dict[str, dict[str, Any]]) -> list[list[str]]:
    """One row per metric: name, then (value, target, verdict) per database."""
    rows: list[list[str]] = []

    def row(label: str, cells: dict[str, tuple[str, str, str]]) -> None:
        if all(value == "-" for value, _, _ in cells.values()):
            return  # not measured in this run
        line = [label]
        for db in all_results:
            line.extend(cells.get(db, ("-", "", "")))
        rows.append(line)

    def rate_row(label: str, key: str, target_key: str | None) -> None:
        cells = {}
        for db, data in all_results.items():
            r = data["results"].get(key)
            value = r["rate"] if r else None
            target = _target_for(target_key, db) if target_key else None
            cells[db] = (
                _fmt_rate(value),
                f">= {target:,.0f}/s" if target else "",
                _verdict(value, target),
            )
        row(label, cells)

    rate_row("enqueue, submit() one at a time", "enqueue_single", "enqueue_single")
    rate_row("enqueue, submit_batch() x1000", "enqueue_batch", "enqueue_batch")
    concurrencies = sorted(
        {
            r["concurrency"]
            for data in all_results.values()
            for k, r in data["results"].items()
            if k.startswith("process_")
        }
    )
    for c in concurrencies:
        for w in (1, 2):
            target = "process_2w" if w == 2 else None
            rate_row(f"process no-op, {w} worker(s) x {c} threads", f"process_{w}w_c{c}", target)
    latency_keys = sorted(
        {k for data in all_results.values() for k in data["results"] if k.startswith("latency")}
    )
    for key in latency_keys:
        suffix = (
            "" if key == "latency" else f" (--poll-interval {key.removeprefix('latency_poll')})"
        )
        for metric, label in (("db_ms", "claimed"), ("e2e_ms", "task body runs")):
            for pct in ("p50", "p99"):
                cells = {}
                for db, data in all_results.items():
                    r = data["results"].get(key)
                    value = r[metric].get(pct) if r else None
                    target = (
                        TARGETS["latency_p99_ms"] if pct == "p99" and metric == "db_ms" else None
                    )
                    cells[db] = (
                        _fmt_ms(value),
                        f"<= {target} ms" if target else "",
                        _verdict(value, target, higher_is_better=False),
                    )
                row(f"pickup {pct}, submit -> {label}{suffix}", cells)
    for key, label in OPERATOR_VIEWS.items():
        for pct in ("p50", "p95", "max"):
            cells = {}
            for db, data in all_results.items():
                r = data["results"].get("operator", {}).get("endpoints", {}).get(key)
                value = r["ms"][pct] if r else None
                target = TARGETS["operator_p95_ms"] if pct == "p95" else None
                cells[db] = (
                    _fmt_ms(value),
                    f"<= {target} ms" if target else "",
                    _verdict(value, target, higher_is_better=False),
                )
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
                cells[db] = (
                    value,
                    f">= {target:.2f}x" if target else "",
                    _verdict(ratio, target),
                )
            what = "baseline, mean of first and last run" if name == "baseline" else name
            row(f"gates, {r['workers']} workers x {r['concurrency']} threads: {what}", cells)
    return rows


def print_table(all_results: dict[str, dict[str, Any]]) -> None:
    header = ["metric"]
    for db in all_results:
        header.extend([db, "target", ""])
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
    print("\nReference points (no-op jobs, same machine class: 2 cores, PostgreSQL 15):")
    for name, value in REFERENCE_POINTS:
        print(f"  {name:<40} {value}")
    print("\nResults: " + ", ".join(str(results_path(db).relative_to(ROOT)) for db in all_results))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", choices=(*DATABASES, "all"), default="all")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help=f"comma-separated subset of {','.join(SCENARIOS)} (default: all)",
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
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = only - set(SCENARIOS)
    if unknown:
        parser.error(f"--only: unknown scenario(s) {', '.join(sorted(unknown))}")

    if args.child:
        return run_child(args.db, args.quick, only, args.analyze_after_fill)

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
            status = subprocess.run(child, cwd=tree, check=False).returncode
            print(f"({db} took {time.monotonic() - started:.0f}s)")
            produced = tree / "bench" / results_path(db).name
            if produced.exists():
                if tree != ROOT:
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
