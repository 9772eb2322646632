"""Submission: outcomes, dedup strategies, explicit keys, batches, tags and transactions."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from taskmill_django import (
    Domain,
    DuplicateTaskError,
    IoBudget,
    UnknownTaskType,
    ValidationError,
    scheduler,
    signals,
)
from taskmill_django.models import PausedGroup, Task, TaskHistory, TaskHistoryTag, TaskTag
from taskmill_django.store import bulk_copy
from taskmill_django.testing import run_pending
from tests.db.conftest import claim_one, finish
from tests.testapp.tasks import echo, keyed, other_noop, record

db = pytest.mark.django_db

# PostgreSQL writes large chunks with COPY and small ones with one INSERT: every test here runs
# both ways there ("copy" lowers the threshold to one row), so each dedup kind, option and
# tag is pinned on both.
_INSERT_FORMS = ["insert", "copy"] if connection.vendor == "postgresql" else ["insert"]


@pytest.fixture(autouse=True, params=_INSERT_FORMS)
def insert_form(request, monkeypatch):
    if request.param == "copy":
        monkeypatch.setattr(bulk_copy, "MIN_ROWS", 1)
    return request.param


def _tags(task_id: int) -> dict[str, str]:
    return dict(TaskTag.objects.filter(task_id=task_id).values_list("key", "value"))


# --- single submissions ----------------------------------------------------------------------


@db
def test_submit__new_task_is_inserted_pending():
    outcome = record.submit(n=1)
    assert outcome.kind == "inserted"
    assert outcome.inserted
    assert outcome.replaced_id is None
    assert outcome.group_paused is False
    task = Task.objects.get()
    assert task.id == outcome.id
    assert (task.task_type, task.domain, task.status) == ("tests::record", "tests", "pending")
    assert task.payload == {"n": 1}
    assert task.priority == 128
    assert task.max_retries == 3


@db
def test_submit__domain_default_priority_applies():
    outcome = other_noop.submit()
    assert Task.objects.get(id=outcome.id).priority == 64


@db
def test_submit__priority_option_is_stored():
    outcome = record.using(priority=7).submit(n=1)
    assert Task.objects.get(id=outcome.id).priority == 7


@db
def test_submit__chained_using_options_combine():
    outcome = record.using(priority=3).using(tags={"a": "b"}).submit(n=1)
    assert Task.objects.get(id=outcome.id).priority == 3
    assert _tags(outcome.id) == {"a": "b"}


@db
def test_submit__run_after_delay_is_not_due_yet():
    outcome = record.using(run_after=timedelta(hours=1)).submit(n=1)
    assert Task.objects.get(id=outcome.id).run_after is not None
    assert run_pending() == 0
    assert Task.objects.get(id=outcome.id).status == "pending"


@db
def test_submit__run_after_in_the_past_is_due_at_once():
    when = timezone.now() - timedelta(minutes=1)
    outcome = record.using(run_after=when).submit(n=1)
    assert Task.objects.get(id=outcome.id).run_after == when
    assert claim_one().id == outcome.id


@db
def test_submit__payload_round_trips_unchanged():
    payload = {"text": 'é ✓ "quoted" {not json}', "nested": {"b": [1, 2.5, None, True]}}
    batch_payload = {"text": "[1, 2]", "nested": {"a": {}}}
    one = echo.submit(value=payload)
    (many,) = echo.submit_batch([{"value": batch_payload}])
    assert Task.objects.get(id=one.id).payload == {"value": payload}
    assert Task.objects.get(id=many.id).payload == {"value": batch_payload}


@db
def test_submit__options_are_stored_on_the_row():
    outcome = record.using(
        label="nightly report",
        group="reports",
        ttl=60,
        max_retries=7,
        expected_io=IoBudget.disk(10, 20),
        fail_fast=False,
    ).submit(n=1)
    task = Task.objects.get(id=outcome.id)
    assert (task.label, task.group_key, task.max_retries) == ("nightly report", "reports", 7)
    assert (task.expected_read_bytes, task.expected_write_bytes) == (10, 20)
    assert task.fail_fast is False
    assert task.ttl_seconds == 60
    assert task.expires_at is not None


@db
def test_submit__into_paused_group_says_so():
    PausedGroup.objects.create(group_key="uploads")
    outcome = record.using(group="uploads").submit(n=1)
    assert outcome.group_paused is True
    assert Task.objects.get(id=outcome.id).group_key == "uploads"


@db
def test_submit__into_running_group_is_not_flagged():
    PausedGroup.objects.create(group_key="uploads")
    assert record.using(group="downloads").submit(n=1).group_paused is False


@db
def test_submit__parent_must_be_an_active_task():
    with pytest.raises(ValidationError) as info:
        record.using(parent=987654).submit(n=1)
    assert info.value.field == "parent"
    assert not Task.objects.exists()


@db
def test_domain_handle_submit__resolves_short_type():
    outcome = scheduler.domain("tests").submit("record", {"n": 4}, priority=5)
    task = Task.objects.get(id=outcome.id)
    assert (task.task_type, task.priority, task.payload) == ("tests::record", 5, {"n": 4})


@db
def test_domain_handle_submit__unknown_short_type_is_rejected():
    with pytest.raises(UnknownTaskType) as info:
        scheduler.domain("tests").submit("nope", {})
    assert info.value.field == "task_type"
    assert not Task.objects.exists()


def _prepared_inserts() -> int:
    with connections["default"].cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
            ['%INSERT INTO "taskmill_task"%'],
        )
        return int(cursor.fetchone()[0])


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)  # outside a transaction: the one-statement path
def test_submit__postgres_keeps_the_single_insert_prepared_unless_a_pooler_sits_between(settings):
    for n in range(8):
        record.submit(n=n)
    assert _prepared_inserts() == 1  # one statement, parsed and planned once, reused

    connections["default"].close()  # a fresh server connection: nothing prepared on it yet
    settings.TASKMILL = {**settings.TASKMILL, "TRANSACTION_POOLING": True}
    for n in range(8, 16):
        record.submit(n=n)
    assert _prepared_inserts() == 0
    assert Task.objects.count() == 16


# --- dedup: skip (the default) ---------------------------------------------------------------


@db
def test_submit__same_payload_twice_is_duplicate():
    first = record.submit(n=1)
    second = record.submit(n=1)
    assert second.kind == "duplicate"
    assert second.id == first.id
    assert Task.objects.count() == 1


@db
def test_submit__payload_key_order_does_not_matter():
    first = echo.submit(value={"a": 1, "b": [1, 2]})
    second = echo.submit(value={"b": [1, 2], "a": 1})
    assert (second.kind, second.id) == ("duplicate", first.id)


@db
def test_submit__different_payload_is_a_different_task():
    first = record.submit(n=1)
    second = record.submit(n=2)
    assert second.kind == "inserted"
    assert second.id != first.id


@db
def test_submit__same_payload_of_another_type_is_a_different_task():
    echo.submit(value=1)
    assert record.submit(value=1).kind == "inserted"


@db
def test_submit__more_urgent_twin_upgrades_pending_task():
    first = record.submit(n=1)
    second = record.using(priority=10).submit(n=1)
    assert (second.kind, second.id) == ("upgraded", first.id)
    assert Task.objects.get().priority == 10


@db
def test_submit__less_urgent_twin_leaves_priority_alone():
    first = record.using(priority=10).submit(n=1)
    second = record.using(priority=200).submit(n=1)
    assert (second.kind, second.id) == ("duplicate", first.id)
    assert Task.objects.get().priority == 10


@db
def test_submit__twin_of_running_task_is_requeued():
    first = record.submit(n=1)
    claim_one()
    second = record.submit(n=1)
    assert (second.kind, second.id) == ("requeued", first.id)
    assert Task.objects.get().status == "running"


@db
def test_submit__requeued_task_runs_again_after_it_finishes():
    first = record.submit(n=1)
    running = claim_one()
    record.submit(n=1)
    finish(running)
    assert TaskHistory.objects.get(id=first.id).status == "completed"
    fresh = Task.objects.get()
    assert fresh.id != first.id
    assert (fresh.key, fresh.status, fresh.payload) == (running.key, "pending", {"n": 1})


@db
def test_submit__requeued_run_takes_the_more_urgent_priority():
    record.submit(n=1)
    running = claim_one()
    record.using(priority=10).submit(n=1)
    finish(running)
    assert Task.objects.get().priority == 10


@db
def test_submit__requeued_run_keeps_realtime_priority():
    record.submit(n=1)
    running = claim_one()
    record.using(priority=0).submit(n=1)
    finish(running)
    assert Task.objects.get().priority == 0


@db
def test_submit__requeued_run_keeps_tags():
    record.using(tags={"tenant": "a"}).submit(n=1)
    running = claim_one()
    record.submit(n=1)
    finish(running)
    assert _tags(Task.objects.get().id) == {"tenant": "a"}


@db
def test_submit__requeued_run_keeps_ttl_and_expected_io():
    record.using(ttl=600, expected_io=IoBudget.disk(100, 50)).submit(n=1)
    running = claim_one()
    record.using(ttl=600, expected_io=IoBudget.disk(100, 50)).submit(n=1)
    finish(running)
    fresh = Task.objects.get()
    assert (fresh.expected_read_bytes, fresh.expected_write_bytes) == (100, 50)
    assert fresh.ttl_seconds == 600
    assert fresh.expires_at is not None


@db
def test_submit__twin_of_task_being_cancelled_still_runs():
    record.submit(n=1)
    running = claim_one()
    scheduler.cancel(running.id)
    record.submit(n=1)
    finish(running)
    assert TaskHistory.objects.get(id=running.id).status == "cancelled"
    assert Task.objects.filter(status="pending").count() == 1


# --- dedup: supersede and reject -------------------------------------------------------------


@db
def test_submit__supersede_replaces_pending_twin():
    old = record.submit(n=1)
    new = record.using(duplicate="supersede").submit(n=1)
    assert new.kind == "superseded"
    assert new.replaced_id == old.id
    assert new.id != old.id
    assert TaskHistory.objects.get(id=old.id).status == "superseded"
    assert list(Task.objects.values_list("id", flat=True)) == [new.id]


@db
def test_submit__supersede_moves_twin_tags_to_history():
    old = record.using(tags={"k": "v"}).submit(n=1)
    record.using(duplicate="supersede").submit(n=1)
    assert dict(TaskHistoryTag.objects.filter(history_id=old.id).values_list("key", "value")) == {
        "k": "v"
    }


@db
def test_submit__supersede_of_running_twin_requests_its_cancellation():
    old = record.submit(n=1)
    running = claim_one()
    new = record.using(duplicate="supersede").submit(n=1)
    assert (new.kind, new.replaced_id) == ("superseded", old.id)
    assert Task.objects.get(id=old.id).cancel_reason == "superseded"
    assert Task.objects.get(id=new.id).status == "pending"
    finish(running)
    assert TaskHistory.objects.get(id=old.id).status == "superseded"
    assert list(Task.objects.values_list("id", flat=True)) == [new.id]


@db
def test_submit__superseded_running_twin_keeps_its_key_in_history():
    record.submit(n=1)
    running = claim_one()
    record.using(duplicate="supersede").submit(n=1)
    finish(running)
    assert [h.id for h in scheduler.store().history_by_key(running.key)] == [running.id]


@db
def test_submit__reject_raises_and_keeps_the_twin():
    first = record.submit(n=1)
    with pytest.raises(DuplicateTaskError) as info:
        record.using(duplicate="reject").submit(n=1)
    assert info.value.existing_id == first.id
    assert list(Task.objects.values_list("id", flat=True)) == [first.id]


@db
def test_submit__reject_without_twin_inserts():
    assert record.using(duplicate="reject").submit(n=1).kind == "inserted"


@db
def test_submit__reject_after_twin_finished_inserts():
    record.submit(n=1)
    finish(claim_one())
    assert record.using(duplicate="reject").submit(n=1).kind == "inserted"


# --- explicit keys ---------------------------------------------------------------------------


@db
def test_submit__explicit_key_dedups_different_payloads():
    first = record.using(key="report-7").submit(n=1)
    second = record.using(key="report-7").submit(n=2)
    assert (second.kind, second.id) == ("duplicate", first.id)
    assert Task.objects.get().payload == {"n": 1}


@db
def test_submit__explicit_key_differs_from_payload_key():
    record.using(key="report-7").submit(n=1)
    assert record.submit(n=1).kind == "inserted"


@db
def test_submit__task_key_function_dedups_by_its_result():
    first = keyed.submit(path="a.png", size=64)
    assert keyed.submit(path="a.png", size=128).id == first.id
    assert keyed.submit(path="b.png", size=64).kind == "inserted"


@db
def test_submit__explicit_key_overrides_key_function():
    first = keyed.submit(path="a.png", size=64)
    second = keyed.using(key="other").submit(path="a.png", size=64)
    assert second.kind == "inserted"
    assert second.id != first.id


# --- batches ---------------------------------------------------------------------------------


@db
def test_submit_batch__inserts_every_payload_in_order():
    outcomes = record.submit_batch([{"n": n} for n in range(5)])
    assert [o.kind for o in outcomes] == ["inserted"] * 5
    rows = Task.objects.order_by("id")
    assert [t.id for t in rows] == [o.id for o in outcomes]
    assert [t.payload["n"] for t in rows] == [0, 1, 2, 3, 4]


@db
def test_submit_batch__a_large_batch_with_a_taken_key_keeps_the_rest_in_order(insert_form):
    taken = record.submit(n=50)
    with CaptureQueriesContext(connection) as queries:
        outcomes = record.submit_batch([{"n": n} for n in range(200)])
    assert [o.kind for o in outcomes] == ["inserted"] * 50 + ["duplicate"] + ["inserted"] * 149
    assert outcomes[50].id == taken.id
    fresh = [o.id for o in outcomes if o.kind == "inserted"]
    assert fresh == sorted(fresh)  # ids keep submission order
    assert Task.objects.count() == 200
    assert sorted(Task.objects.values_list("payload__n", flat=True)) == list(range(200))
    if connection.vendor == "postgresql":
        # The chunks went in by COPY first; the taken key sent them through the INSERT.
        assert any("generate_series" in q["sql"] for q in queries.captured_queries)


@db
def test_submit_batch__text_that_copy_escapes_round_trips():
    text = 'tab\there, newline\nthere, back\\slash, \\N, quote " and \u00e9\u2603'
    outcomes = record.submit_batch([{"text": text, "n": n} for n in range(bulk_copy.MIN_ROWS)])
    assert {Task.objects.get(id=o.id).payload["text"] for o in outcomes} == {text}
    assert [o.kind for o in record.submit_batch([{"text": text, "n": 0}])] == ["duplicate"]


@db
def test_submit_batch__empty_list_submits_nothing():
    assert record.submit_batch([]) == []
    assert not Task.objects.exists()


@db
def test_submit_batch__same_payload_twice_is_one_task():
    a, b = record.submit_batch([{"n": 1}, {"n": 1}])
    assert (a.kind, b.kind) == ("inserted", "duplicate")
    assert a.id == b.id
    assert Task.objects.count() == 1


@db
def test_submit_batch__dedups_against_existing_tasks():
    existing = record.submit(n=1)
    outcomes = record.submit_batch([{"n": 0}, {"n": 1}])
    assert [o.kind for o in outcomes] == ["inserted", "duplicate"]
    assert outcomes[1].id == existing.id


@db
def test_submit_batch__bad_payload_names_index_and_inserts_nothing():
    with pytest.raises(ValidationError) as info:
        echo.submit_batch([{"value": 1}, {"value": 2}, {"value": {1, 2}}])
    assert info.value.field == "payloads[2].payload"
    assert not Task.objects.exists()


@db
def test_submit_batch__reject_duplicate_inserts_nothing():
    record.submit(n=5)
    with pytest.raises(DuplicateTaskError):
        record.using(duplicate="reject").submit_batch([{"n": 1}, {"n": 5}, {"n": 2}])
    assert list(Task.objects.values_list("payload", flat=True)) == [{"n": 5}]


@db
def test_submit_batch__reject_twin_inside_batch_raises():
    with pytest.raises(DuplicateTaskError):
        record.using(duplicate="reject").submit_batch([{"n": 1}, {"n": 1}])


@db
def test_submit_batch__payloads_equal_in_python_keep_their_json_types():
    # {"value": 1} == {"value": True} == {"value": 1.0} in Python, not in JSON.
    outcomes = echo.submit_batch([{"value": 1}, {"value": True}, {"value": 1.5}, {"value": 1}])
    assert [o.kind for o in outcomes] == ["inserted", "inserted", "inserted", "duplicate"]
    stored = [Task.objects.get(id=o.id).payload["value"] for o in outcomes[:3]]
    assert [(v, type(v)) for v in stored] == [(1, int), (True, bool), (1.5, float)]


@db
def test_submit_tasks__rows_that_differ_in_every_option_are_stored_as_given():
    """One chunk mixing types, priorities, delays, TTLs, groups and IO: each row keeps its own
    values (columns equal across the chunk travel once, the others per row)."""
    from taskmill_django.domain import build_options
    from taskmill_django.store.submit import submit_tasks

    later = timezone.now() + timedelta(hours=1)
    plain = record.builder(build_options()).build({"n": 1})
    varied = echo.builder(
        build_options(
            priority=7,
            run_after=later,
            ttl=30,
            group="g",
            expected_io=IoBudget.disk(5, 6),
            max_retries=0,
            tags={"k": "v"},
        )
    ).build({"value": "x"})
    delayed = record.builder(build_options(run_after=timedelta(minutes=5), ttl=2.5)).build({"n": 2})
    outcomes = submit_tasks([plain, varied, delayed])
    a, b, c = (Task.objects.get(id=o.id) for o in outcomes)
    assert (a.task_type, a.priority, a.run_after, a.group_key) == (
        plain.task_type,
        plain.priority,
        None,
        None,
    )
    assert (b.task_type, b.priority, b.run_after, b.group_key) == (echo.task_type, 7, later, "g")
    assert (b.expected_read_bytes, b.expected_write_bytes, b.max_retries) == (5, 6, 0)
    assert b.ttl_seconds == 30 and b.expires_at is not None and a.expires_at is None
    assert c.run_after > timezone.now() + timedelta(minutes=4) and c.ttl_seconds == 2.5
    assert a.max_retries == record.max_retries and c.max_retries == record.max_retries
    assert (_tags(a.id), _tags(b.id), _tags(c.id)) == ({}, {"k": "v"}, {})
    assert [a.payload, b.payload, c.payload] == [{"n": 1}, {"value": "x"}, {"n": 2}]


def test_insert_rows__values_equal_in_python_but_of_other_types_are_not_merged():
    from taskmill_django.store.bulk import Column, _fixed_columns

    columns = (Column("a", "int"), Column("b", "float8"), Column("c", "bool", "bool"))
    by_column = [(1, 1), (1, 1.0), (True, 1)]
    assert _fixed_columns(columns, by_column) == frozenset({0})


@db
def test_submit_batch__shared_tags_are_stored_for_every_task():
    outcomes = record.using(tags={"batch": "b1", "team": "t"}).submit_batch(
        [{"n": n} for n in range(3)]
    )
    assert [_tags(o.id) for o in outcomes] == [{"batch": "b1", "team": "t"}] * 3


# --- tags ------------------------------------------------------------------------------------


@db
def test_submit__tags_are_stored():
    outcome = record.using(tags={"tenant": "a", "user.id": "7"}).submit(n=1)
    assert _tags(outcome.id) == {"tenant": "a", "user.id": "7"}


@db
def test_submit__tags_are_copied_to_history_on_completion():
    outcome = record.using(tags={"tenant": "a", "user.id": "7"}).submit(n=1)
    finish(claim_one())
    history_tags = TaskHistoryTag.objects.filter(history_id=outcome.id)
    assert dict(history_tags.values_list("key", "value")) == {"tenant": "a", "user.id": "7"}
    assert not TaskTag.objects.exists()


@db
@pytest.mark.usefixtures("isolated_registry")
def test_submit__domain_task_and_call_tags_merge():
    media = Domain("db_media", default_tags={"team": "media", "kind": "x"})
    thumb = media.task("thumbnail", tags={"kind": "image"})(lambda ctx: None)
    outcome = thumb.using(tags={"size": "64"}).submit()
    assert _tags(outcome.id) == {"team": "media", "kind": "image", "size": "64"}


@db
@pytest.mark.usefixtures("isolated_registry")
def test_submit__merged_tags_over_the_limit_are_rejected():
    media = Domain("db_media", default_tags={f"d{i}": "v" for i in range(20)})
    thumb = media.task("thumbnail")(lambda ctx: None)
    with pytest.raises(ValidationError) as info:
        thumb.using(tags={f"c{i}": "v" for i in range(20)}).submit()
    assert info.value.field == "tags"
    assert not Task.objects.exists()


# --- transactions and async ------------------------------------------------------------------


class _Rollback(Exception):
    pass


@pytest.mark.django_db(transaction=True)
def test_submit__rolled_back_with_callers_transaction(received):
    submitted = received(signals.task_submitted)
    with pytest.raises(_Rollback), transaction.atomic():
        record.submit(n=1)
        record.submit_batch([{"n": 2}, {"n": 3}])
        raise _Rollback
    assert not Task.objects.exists()
    assert not TaskTag.objects.exists()
    assert submitted == []


@pytest.mark.django_db(transaction=True)
def test_submit__committed_with_callers_transaction():
    with transaction.atomic():
        outcome = record.submit(n=1)
    assert Task.objects.get().id == outcome.id


@pytest.fixture
def close_async_connections():
    """``sync_to_async`` runs on a helper thread with its own connection; close it after."""
    yield
    asyncio.run(sync_to_async(connections.close_all)())


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_async_connections")
def test_asubmit__inserts_like_submit():
    outcome = asyncio.run(record.asubmit(n=1))
    assert outcome.kind == "inserted"
    assert Task.objects.get().id == outcome.id


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_async_connections")
def test_asubmit__with_options_dedups_like_submit():
    first = record.submit(n=1)
    outcome = asyncio.run(record.using(priority=5).asubmit(n=1))
    assert (outcome.kind, outcome.id) == ("upgraded", first.id)
    assert Task.objects.get().priority == 5


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_async_connections")
def test_asubmit_batch__inserts_all():
    outcomes = asyncio.run(record.asubmit_batch([{"n": 1}, {"n": 2}]))
    assert [o.kind for o in outcomes] == ["inserted", "inserted"]
    assert Task.objects.count() == 2


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_async_connections")
def test_asubmit_batch__bad_payload_inserts_nothing():
    with pytest.raises(ValidationError) as info:
        asyncio.run(echo.asubmit_batch([{"value": 1}, {"value": {1}}]))
    assert info.value.field == "payloads[1].payload"
    assert not Task.objects.exists()


@pytest.mark.django_db
def test_submit__a_datetime_in_the_payload_is_refused_on_every_front_door():
    from datetime import UTC, datetime

    when = datetime(2026, 1, 1, tzinfo=UTC)
    advice = "which is not JSON-serializable: pass value.isoformat()"
    with pytest.raises(ValidationError, match=rf"payload\['value'\] is of type datetime, {advice}"):
        echo.submit(value=when)
    with pytest.raises(ValidationError, match=rf"payload\['value'\]\[0\] .*{advice}") as info:
        echo.using(priority=1).submit_batch([{"value": 1}, {"value": [when]}])
    assert info.value.field == "payloads[1].payload"
    with pytest.raises(ValidationError, match=advice):
        scheduler.domain("tests").submit("echo", {"value": when})
    assert not Task.objects.exists()
