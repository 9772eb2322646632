"""One process of the raw-SQL claim loop (bench/floor.py starts two): the least a
PostgreSQL-backed queue must do per task, as peers-bench's ``raw-b100-p2`` does it.

    claim:  UPDATE floor_job SET status = 1, started_at = now()
            WHERE id IN (SELECT id FROM floor_job WHERE status = 0
                         ORDER BY priority, id FOR UPDATE SKIP LOCKED LIMIT 100)
            RETURNING id, n
    run:    bench/body.py's append_line, per task
    finish: WITH done AS (DELETE FROM floor_job WHERE id = ANY(ids) RETURNING ...)
            INSERT INTO floor_done SELECT ..., clock_timestamp() FROM done

Each statement is its own autocommit transaction, planned afresh each time: a statement
prepared while the queue is empty (the loop polls it, an empty claim sleeps a millisecond)
would keep a generic plan that walks the whole table once it fills, 40 times slower here.
Prints ``ready`` once connected; stops at SIGTERM.

    python -m bench.rawloop DSN BATCH      (from the project root)
"""

from __future__ import annotations

import signal
import sys
import time
from typing import Any

import psycopg

from bench.body import append_line

CLAIM = """
UPDATE floor_job SET status = 1, started_at = now()
WHERE id IN (SELECT id FROM floor_job WHERE status = 0
             ORDER BY priority, id FOR UPDATE SKIP LOCKED LIMIT %(n)s)
RETURNING id, n
"""
FINISH = """
WITH done AS (DELETE FROM floor_job WHERE id = ANY(%(ids)s)
              RETURNING id, priority, n, created_at, started_at)
INSERT INTO floor_done (id, priority, n, created_at, started_at, finished_at)
SELECT id, priority, n, created_at, started_at, clock_timestamp() FROM done
"""

running = True


def _stop(*_: Any) -> None:
    global running
    running = False


def main(dsn: str, batch: int) -> None:
    signal.signal(signal.SIGTERM, _stop)
    params = {"n": batch}
    with psycopg.connect(dsn, autocommit=True, prepare_threshold=None) as conn:
        print("ready", flush=True)
        while running:
            rows = conn.execute(CLAIM, params).fetchall()
            if not rows:
                time.sleep(0.001)
                continue
            ids = []
            for task_id, n in rows:
                append_line(n)
                ids.append(task_id)
            conn.execute(FINISH, {"ids": ids})


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
