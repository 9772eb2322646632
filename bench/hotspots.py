"""Where the time goes: SQL statements per operation and a cProfile of the hot paths.

    .venv/bin/python bench/hotspots.py [--db sqlite|postgres] [--what submit,batch,worker]
                                      [--n N] [--concurrency C] [--top 25]

For a sampling profile without cProfile's overhead (which inflates ORM-heavy code 2-3x):

    .venv/bin/py-spy record --format raw -o /tmp/submit.txt -- \\
        .venv/bin/python bench/hotspots.py --what submit --top 0

``submit``: ``noop.submit()`` in a loop. ``batch``: ``submit_batch`` of 1000. ``worker``: a
``Dispatcher`` run in this process in burst mode over N pre-filled no-op tasks (the loop thread
does every claim and outcome write, so its profile and statements are the worker's DB cost).
Statements are counted and timed with a connection execute wrapper (time includes the round
trip); the remainder is Python. Uses a fresh database, like bench/run.py.

Environment: ``TASKMILL_BENCH_SETTINGS`` (JSON merged into TASKMILL, as bench/gates.py uses it)
configures gates; ``HOTSPOTS_GROUPS=g0,g1`` spreads the worker's tasks over those groups;
``HOTSPOTS_SORT=cumulative`` orders the cProfile listing (default ``tottime``).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import re
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


class StatementLog:
    """An execute wrapper: counts and times statements by their shape."""

    def __init__(self) -> None:
        self.count: Counter[str] = Counter()
        self.seconds: defaultdict[str, float] = defaultdict(float)

    def __call__(self, execute: Callable[..., Any], sql: str, params: Any, many: bool, ctx: Any):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        try:
            return execute(sql, params, many, ctx)
        finally:
            # Keyed by the raw text (cheap); grouped by shape only when reporting.
            self.count[sql] += 1
            self.seconds[sql] += time.perf_counter() - started

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds.values())

    def report(self, per: int, label: str, wall: float) -> None:
        count: Counter[str] = Counter()
        seconds: defaultdict[str, float] = defaultdict(float)
        for sql, n in self.count.items():
            count[_shape(sql)] += n
            seconds[_shape(sql)] += self.seconds[sql]
        total = sum(count.values())
        print(
            f"\n{label}: {total / per:.2f} statements per task,"
            f" {self.total_seconds / wall:.0%} of wall time inside execute()"
            " (COMMIT is not an execute() and is not counted)"
        )
        for shape, n in count.most_common():
            print(f"  {n / per:7.3f}/task  {seconds[shape] * 1e6 / per:8.1f} us/task  {shape}")


def _shape(sql: str) -> str:
    text = re.sub(r"\s+", " ", sql.strip())
    text = re.sub(r'"s\d+_x\d+"', '"<savepoint>"', text)
    text = re.sub(r"\((%s|\?)(, (%s|\?))+\)", "(...)", text)
    text = re.sub(r"VALUES (\(.*?\))(, \(.*?\))+", r"VALUES \1, ...", text)
    return text[:150]


def profile(label: str, func: Callable[[], Any], per: int, top: int) -> None:
    """Run ``func`` counting statements; with ``top`` > 0 also under cProfile (slower)."""
    from django.db import connection

    log = StatementLog()
    profiler = cProfile.Profile()
    started = time.perf_counter()
    with connection.execute_wrapper(log):
        if top:
            profiler.enable()
        func()
        profiler.disable()
    wall = time.perf_counter() - started
    print(f"\n===== {label}: {per} tasks in {wall:.2f}s = {per / wall:,.0f}/s =====")
    log.report(per, label, wall)
    if not top:
        return
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats(os.environ.get("HOTSPOTS_SORT", "tottime")).print_stats(top)
    print(out.getvalue().split("\n", 6)[-1])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--what", default="submit,batch,worker")
    parser.add_argument("--n", type=int, default=0, help="tasks (default: 2000/20000/10000)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--top", type=int, default=25, help="cProfile lines to print; 0 = no cProfile"
    )
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="taskmill-profile-"))
    os.environ["TASKMILL_BENCH_DB"] = args.db
    os.environ.setdefault("TASKMILL_BENCH_SQLITE", str(workdir / "profile.sqlite3"))
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    import django

    django.setup()
    from bench import scenarios
    from bench.benchapp.tasks import noop
    from taskmill_django.dispatcher import Dispatcher, DispatcherOptions
    from taskmill_django.models import Task, TaskHistory

    what = {w.strip() for w in args.what.split(",")}
    try:
        if "submit" in what:
            n = args.n or 2000
            scenarios.fresh_database()
            noop.submit(n=-1)
            profile("submit()", lambda: [noop.submit(n=i) for i in range(n)], n, args.top)
        if "batch" in what:
            n = args.n or 20_000
            scenarios.fresh_database()
            payloads = [{"n": i} for i in range(n)]

            def batches() -> None:
                for start in range(0, n, 1000):
                    noop.submit_batch(payloads[start : start + 1000])

            profile("submit_batch(1000)", batches, n, args.top)
        if "worker" in what:
            n = args.n or 10_000
            scenarios.fresh_database()
            groups = [g for g in os.environ.get("HOTSPOTS_GROUPS", "").split(",") if g]
            if groups:  # interleaved, as bench/gates.py spreads its tasks
                for index, group in enumerate(groups):
                    payloads = [{"n": i} for i in range(index, n, len(groups))]
                    noop.using(group=group).submit_batch(payloads)
            else:
                noop.submit_batch([{"n": i} for i in range(n)])
            options = DispatcherOptions(
                concurrency=args.concurrency, burst=True, install_signal_handlers=False
            )
            profile(
                f"worker (burst, concurrency {args.concurrency})",
                lambda: Dispatcher(options).run(),
                n,
                args.top,
            )
            assert not Task.objects.exists()
            assert TaskHistory.objects.filter(status="completed").count() == n
    finally:
        scenarios.drop_database()
        for path in workdir.glob("*"):
            path.unlink()
        workdir.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
