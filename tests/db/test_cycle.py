"""The worker's cycle: last batch's outcomes written and the next batch claimed under one commit.

These commit for real (``transaction=True``), as a worker does. On PostgreSQL the move of
finished tasks to history travels with the claim's first round trip.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC
from zoneinfo import ZoneInfo

import psycopg
import pytest
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connection, connections, transaction
from django.db.models.signals import post_init
from django.test.utils import CaptureQueriesContext
from psycopg.pq import PipelineStatus

from taskmill_django import RateLimit, scheduler, signals
from taskmill_django.models import Task, TaskHistory
from taskmill_django.store import claim, control, cycle, finish_pg, lifecycle, workers
from taskmill_django.store.claim import ClaimState
from taskmill_django.store.claim.sql import CLAIMED_FIELDS, claim_sql
from tests.db.conftest import executed_plans, plan_nodes, round_trips, touching
from tests.testapp.tasks import echo, record

executes = pytest.mark.django_db(transaction=True)


def _claim(n: int) -> list[Task]:
    return claim.claim_batch(uuid.uuid4(), n)


def _done(task: Task, kind: str = lifecycle.COMPLETED, **fields: object) -> lifecycle.Outcome:
    return lifecycle.Outcome(task.id, task.lease_token, kind, task.task_type, **fields)


@executes
def test_cycle__writes_outcomes_and_claims_next_batch(received):
    first = [record.submit(n=i).id for i in range(3)]
    running = _claim(3)
    later = [record.submit(n=i).id for i in range(3, 6)]
    completed = received(signals.task_completed)

    applied, claimed = cycle.write_and_claim(
        [_done(t, result={"n": t.id}) for t in running], uuid.uuid4(), 2, None, None
    )

    assert sorted(o.task_id for o in applied.written) == first
    assert applied.lost == []
    assert [t.id for t in claimed] == later[:2]
    assert set(Task.objects.values_list("id", "status")) == {
        (later[0], "running"),
        (later[1], "running"),
        (later[2], "pending"),
    }
    rows = TaskHistory.objects.filter(id__in=first).order_by("id")
    assert [(r.status, r.result) for r in rows] == [("completed", {"n": i}) for i in first]
    assert sorted(e["task_id"] for e in completed) == first


@executes
def test_cycle__outcomes_needing_more_than_a_move_are_written_too():
    plain, dependency, retried, zombie = (echo.submit(value=i) for i in range(4))
    dependent = echo.using(depends_on=[dependency.id]).submit(value="after")
    running = {t.id: t for t in _claim(4)}
    stale = _done(running[zombie.id])
    stale.lease_token = uuid.uuid4()  # rescued and re-claimed elsewhere meanwhile

    applied, claimed = cycle.write_and_claim(
        [
            _done(running[plain.id]),
            _done(running[dependency.id]),
            _done(running[retried.id], lifecycle.RETRY, error="RetryableError: later"),
            stale,
        ],
        uuid.uuid4(),
        8,
        None,
        None,
    )

    written = sorted(o.task_id for o in applied.written)
    assert written == sorted([plain.id, dependency.id, retried.id])
    assert [o.task_id for o in applied.lost] == [zombie.id]
    # Written before the claim, or after it on PostgreSQL (the move to history travels with
    # the claim, the rest follows): the retry and the dependent may be claimed again already.
    assert Task.objects.get(id=dependent.id).status in ("pending", "running")
    assert Task.objects.get(id=retried.id).retry_count == 1
    assert Task.objects.get(id=zombie.id).status == "running"
    assert {t.id for t in claimed} <= {retried.id, dependent.id}
    assert set(TaskHistory.objects.values_list("id", flat=True)) == {plain.id, dependency.id}


def _prepared() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [row[0] for row in cursor.fetchall()]


@pytest.mark.postgres_only
@executes
def test_cycle__sends_the_move_to_history_and_the_claim_prepared_in_one_pipeline(settings):
    running = _claim_after_submitting(4)
    for i in range(4, 8):
        record.submit(n=i)
    sent: list[tuple[str, bool]] = []  # each statement, and whether it went in a pipeline

    def in_pipeline(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        sent.append((sql, connection.connection.pgconn.pipeline_status != PipelineStatus.OFF))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(in_pipeline):
        applied, claimed = cycle.write_and_claim(
            [_done(t) for t in running], uuid.uuid4(), 4, None, None
        )

    assert (len(applied.written), len(claimed)) == (4, 4)
    hint = [sql for sql, _ in cycle.PLAN_HINT]
    assert [sql for sql, _ in sent[: len(hint)]] == hint
    (moving, _), (claiming, _) = sent[len(hint) : len(hint) + 2]
    assert "json_to_recordset" in moving and "picked AS MATERIALIZED" in claiming
    # One round trip for all of them (the counts of the batch follow, outside a worker).
    assert all(pipelined for _, pipelined in sent[: len(hint) + 2])
    prepared = _prepared()
    assert any("json_to_recordset" in sql for sql in prepared)
    assert any("FOR UPDATE SKIP LOCKED" in sql for sql in prepared)

    # Behind a transaction-mode pooler: nothing prepared, still one round trip (one query).
    connection.close()
    settings.TASKMILL = {"TRANSACTION_POOLING": True}
    running = claimed
    record.submit(n=9)
    with CaptureQueriesContext(connection) as queries:
        applied, claimed = cycle.write_and_claim(
            [_done(t) for t in running], uuid.uuid4(), 4, None, None
        )
    assert (len(applied.written), len(claimed)) == (4, 1)
    sent = [q["sql"] for q in queries.captured_queries if q["sql"] not in ("BEGIN", "COMMIT")]
    assert sent[0].index("json_to_recordset") < sent[0].index("picked AS MATERIALIZED")
    assert _prepared() == []


@pytest.mark.postgres_only
@executes
def test_cycle__is_all_or_nothing_on_postgres():
    running = _claim_after_submitting(2)
    waiting = record.submit(n=9)
    # jsonb has no NUL character: the database refuses the whole query.
    outcomes = [_done(running[0]), _done(running[1], result="\u0000")]

    with pytest.raises(DatabaseError):
        cycle.write_and_claim(outcomes, uuid.uuid4(), 1, None, None)

    assert not TaskHistory.objects.exists()
    assert Task.objects.get(id=waiting.id).status == "pending"
    assert set(
        Task.objects.filter(id__in=[t.id for t in running]).values_list("status", flat=True)
    ) == {"running"}

    # The connection's prepared statements survive the failed pipeline: the next cycle runs.
    applied, claimed = cycle.write_and_claim([_done(running[0])], uuid.uuid4(), 1, None, None)
    assert [o.task_id for o in applied.written] == [running[0].id]
    assert [t.id for t in claimed] == [waiting.id]


@executes
def test_cycle__a_gated_claim_undone_to_its_savepoint_keeps_the_outcomes_sent_with_it():
    # 10 tokens: three claims of 3 pay in their round trip; the fourth overspends, is rolled
    # back to its savepoint and takes the last token the slow way. The outcomes that travelled
    # with it (ahead of the savepoint) stay written.
    worker = workers.register_worker("w", 1, 2, None)
    scheduler.set_rate_limit("tests::record", RateLimit.per_minute(1).with_burst(10))
    for i in range(20):
        record.submit(n=i)
    policy, state = control.load_policy(), ClaimState()
    running = [
        t for _ in range(3) for t in claim.claim_batch(worker, 3, policy=policy, state=state)
    ]

    with round_trips() as trips:
        applied, claimed = cycle.write_and_claim(
            [_done(t) for t in running], worker, 3, None, policy, state
        )

    assert (len(applied.written), len(claimed)) == (9, 1)
    assert TaskHistory.objects.filter(status="completed").count() == 9
    if connection.vendor == "postgresql":
        assert any("ROLLBACK TO SAVEPOINT" in sql for trip in trips for sql in trip)
        (together,) = ["; ".join(trip) for trip in trips if "json_to_recordset" in "".join(trip)]
        assert together.index("json_to_recordset") < together.index("SAVEPOINT taskmill_claim")


def _claim_after_submitting(n: int) -> list[Task]:
    for i in range(n):
        record.submit(n=i)
    return _claim(n)


DISPATCH_ORDER = (
    "SELECT id FROM taskmill_task WHERE status = 'pending' AND (run_after IS NULL OR "
    "run_after <= NOW()) ORDER BY priority, id LIMIT 32 FOR UPDATE SKIP LOCKED"
)


def _plan(sql: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN {sql}")
        return "\n".join(row[0] for row in cursor.fetchall())


@executes
@pytest.mark.postgres_only
def test_cycle__claims_walk_the_dispatch_index_even_with_statistics_of_an_empty_table():
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE taskmill_task SET (autovacuum_enabled = false)")
        cursor.execute("ANALYZE taskmill_task")  # the table is empty: so say the statistics
    record.submit_batch([{"n": n} for n in range(5000)])  # no ANALYZE after this bulk load

    try:
        with transaction.atomic():
            for sql, _ in cycle.PLAN_HINT:
                with connection.cursor() as cursor:
                    cursor.execute(sql)
            plan = _plan(DISPATCH_ORDER)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE taskmill_task RESET (autovacuum_enabled)")
    assert "Index Scan using taskmill_task_dispatch" in plan, plan
    assert "Sort" not in plan, plan


def _queued_and_analyzed(count: int) -> None:
    """``count`` queued tasks, with the planner's statistics taken of them."""
    record.submit_batch([{"n": n} for n in range(count)])
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE taskmill_task")


def _cycle_plan(types: str, statement: str, params: Sequence[object]) -> str:
    """The plan PostgreSQL keeps for ``statement`` prepared in a worker's cycle: generic
    (the cycle forces it), under the cycle's plan hint. Nothing is executed or kept."""
    marks = ", ".join(["%s"] * len(params))
    with transaction.atomic():
        for sql, _ in cycle.PLAN_HINT:
            with connection.cursor() as cursor:
                cursor.execute(sql)
        with connection.cursor() as cursor:
            cursor.execute(f"PREPARE tm_plan ({types}) AS {statement}")
            cursor.execute(f"EXPLAIN EXECUTE tm_plan ({marks})", list(params))
            plan = "\n".join(row[0] for row in cursor.fetchall())
            cursor.execute("DEALLOCATE tm_plan")
        transaction.set_rollback(True)
    return plan


@executes
@pytest.mark.postgres_only
def test_cycle__the_prepared_claim_keeps_an_index_plan_though_its_limit_is_unknown():
    # A generic plan guesses a tenth of the pending rows for ``LIMIT $1``: left to itself the
    # planner then joins the picked ids to a scan of the whole table.
    _queued_and_analyzed(5000)
    numbered = (
        claim_sql("postgresql", 0)
        .replace("%s", "$1", 1)
        .replace("%s", "$2", 1)
        .replace("%s", "$3", 1)
    )

    plan = _cycle_plan("bigint, uuid, uuid", numbered, [4, uuid.uuid4(), uuid.uuid4()])

    assert "Index Scan using taskmill_task_dispatch" in plan, plan
    assert "Index Scan using taskmill_task_pkey" in plan, plan
    assert "Seq Scan" not in plan and "Hash" not in plan and "Sort" not in plan, plan


@executes
def test_claim__a_claimed_task_is_the_row_the_orm_would_load():
    submitted = record.using(priority=5, ttl=60, group="g").submit(n=7)
    (claimed,) = _claim(1)
    stored = Task.objects.get(id=submitted.id)

    assert {name: getattr(claimed, name) for name in CLAIMED_FIELDS} == {
        name: getattr(stored, name) for name in CLAIMED_FIELDS
    }
    assert claimed.get_deferred_fields() == {
        f.attname for f in Task._meta.concrete_fields if f.name not in CLAIMED_FIELDS
    }
    assert claimed.progress_message == ""  # deferred: read on first access
    claimed.progress_message = "halfway"
    claimed.save(update_fields=["progress_message"])
    assert Task.objects.get(id=submitted.id).progress_message == "halfway"
    assert (claimed._state.adding, claimed._state.db) == (False, connection.alias)


@contextmanager
def _database_time_zone(name: str | None) -> Iterator[None]:
    """Reconnect with ``DATABASES["default"]["TIME_ZONE"]`` set to ``name``."""
    db = connections[DEFAULT_DB_ALIAS]
    previous = db.settings_dict.get("TIME_ZONE")

    def reconnect(zone: str | None) -> None:
        db.close()
        db.settings_dict["TIME_ZONE"] = zone
        for cached in ("timezone", "timezone_name"):
            db.__dict__.pop(cached, None)

    reconnect(name)
    try:
        yield
    finally:
        reconnect(previous)


@executes
@pytest.mark.postgres_only
@pytest.mark.parametrize("zone", [None, "Pacific/Auckland"])
@pytest.mark.parametrize("gated", [False, True])
def test_cycle__claimed_timestamps_are_the_orms_in_the_databases_time_zone(zone, gated):
    # The cycle's cursors load timestamps with psycopg's own (compiled) loader where the
    # session's zone is Django's: the same aware datetimes as the ORM's, in the same zone.
    with _database_time_zone(zone):
        if gated:
            scheduler.set_rate_limit("tests::record", RateLimit.per_minute(60))
        submitted = record.using(ttl=60).submit(n=1)
        policy = control.load_policy() if gated else None
        assert gated == (policy is not None and not policy.is_trivial)
        _, (claimed,) = cycle.write_and_claim([], uuid.uuid4(), 1, None, policy)
        stored = Task.objects.get(id=submitted.id)
        expected_zone = connection.timezone

    assert expected_zone is (UTC if zone is None else ZoneInfo(zone))
    for name in ("created_at", "started_at", "expires_at"):
        value = getattr(claimed, name)
        assert value == getattr(stored, name), name
        assert value.tzinfo is expected_zone, name


@executes
def test_claim__post_init_receivers_see_claimed_tasks():
    seen: list[int] = []

    def receiver(sender: type[Task], instance: Task, **kwargs: object) -> None:
        seen.append(instance.id)

    waiting = record.submit(n=1)
    post_init.connect(receiver, sender=Task)
    try:
        _claim(1)
    finally:
        post_init.disconnect(receiver, sender=Task)
    assert seen == [waiting.id]


@executes
@pytest.mark.postgres_only
def test_cycle__finished_tasks_are_found_by_primary_key_however_many_run():
    # Statistics taken while nothing ran say running rows are rare: left to itself the
    # planner then reads every running row and compares each with each outcome.
    _queued_and_analyzed(3000)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE taskmill_task SET status = 'running', lease_token = gen_random_uuid() "
            "WHERE id IN (SELECT id FROM taskmill_task ORDER BY id LIMIT 2000)"
        )
    finished = Task.objects.filter(status="running").order_by("-id")[:4]
    (statement, params), *_ = finish_pg.finish_ahead([_done(task) for task in finished]).statements

    plan = _cycle_plan("text", statement.replace("%s", "$1"), params)

    assert "Index Scan using taskmill_task_pkey on taskmill_task t" in plan, plan
    assert "taskmill_task_worker" not in plan, plan


@executes
@pytest.mark.postgres_only
def test_cycle__a_gated_cycle_moves_finished_tasks_by_primary_key_and_claims_as_planned():
    # The move's plan must not depend on statistics (see finish_pg) in a gated cycle either;
    # the gated claim that follows in the same transaction keeps the planner's own choice.
    _queued_and_analyzed(3000)
    scheduler.set_rate_limit("tests::record", RateLimit.per_minute(1_000_000))
    policy = control.load_policy()
    worker_id = uuid.uuid4()
    _, running = cycle.write_and_claim([], worker_id, 8, None, policy)

    with executed_plans() as plans:
        applied, claimed = cycle.write_and_claim(
            [_done(t) for t in running], worker_id, 8, None, policy
        )

    assert len(applied.written) == len(claimed) == 8
    (move,) = touching(plans, "Insert", "taskmill_task_history")
    scans = [
        (n["Node Type"], n.get("Relation Name"), n.get("Index Name"))
        for n in plan_nodes(move["Plan"])
    ]
    assert ("Index Scan", "taskmill_task", "taskmill_task_pkey") in scans, scans
    assert ("Seq Scan", "taskmill_task", None) not in scans, scans
    assert move.get("Settings", {}).get("enable_hashjoin") == "off", move
    (gated_claim,) = touching(plans, "Update", "taskmill_task")
    assert not gated_claim.get("Settings"), gated_claim


@executes
@pytest.mark.postgres_only
def test_cycle__with_nothing_to_write_the_claim_commits_alone_in_one_round_trip():
    waiting = record.submit(n=1)
    with round_trips() as trips, CaptureQueriesContext(connection) as queries:
        applied, claimed = cycle.write_and_claim([], uuid.uuid4(), 4, None, None)

    assert applied.written == [] and [t.id for t in claimed] == [waiting.id]
    assert len(trips) == 1 and "FOR UPDATE SKIP LOCKED" in trips[0][-1]
    assert not any(q["sql"] in ("BEGIN", "COMMIT") for q in queries.captured_queries)
    assert not connection.in_atomic_block
    # Committed: another session sees the task running under the claim's lease.
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    with psycopg.connect(**params) as other:
        row = other.execute(
            "SELECT status, lease_token FROM taskmill_task WHERE id = %s", [waiting.id]
        ).fetchone()
    assert row == ("running", claimed[0].lease_token)


@executes
@pytest.mark.postgres_only
def test_cycle__sends_the_plan_hint_first_in_its_transaction():
    record.submit(n=1)
    with CaptureQueriesContext(connection) as queries:
        cycle.write_and_claim([], uuid.uuid4(), 1, None, None)
    sent = [q["sql"] for q in queries.captured_queries if q["sql"] not in ("BEGIN", "COMMIT")]
    hint = [sql for sql, _ in cycle.PLAN_HINT]
    assert sent[: len(hint)] == hint, sent
    assert "FOR UPDATE SKIP LOCKED" in sent[len(hint)]
