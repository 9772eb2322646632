"""Submissions wake idle PostgreSQL workers with NOTIFY, delivered when they commit."""

from __future__ import annotations

import psycopg
import pytest
from django.db import connection, transaction

from tests.testapp.tasks import record

pytestmark = [pytest.mark.postgres_only, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def listener():
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    conn = psycopg.connect(**params, autocommit=True)
    conn.execute("LISTEN taskmill")
    yield conn
    conn.close()


def _notified(conn: psycopg.Connection) -> bool:
    return any(True for _ in conn.notifies(timeout=2.0, stop_after=1))


@pytest.mark.parametrize("how", ["single", "batch", "tagged", "in_transaction"])
def test_submit__notifies_listening_workers(listener, how):
    if how == "single":
        record.submit(n=1)
    elif how == "batch":
        record.submit_batch([{"n": 1}, {"n": 2}])
    elif how == "tagged":
        record.using(tags={"a": "b"}).submit(n=1)
    else:
        with transaction.atomic():
            record.submit(n=1)
    assert _notified(listener)


def test_submit__notification_carries_the_row_count_of_a_batch(listener):
    """Workers hearing of a large batch refresh planner statistics at once. Each insert
    statement (a chunk of at most 500 rows) announces its own row count."""
    record.submit_batch([{"n": n} for n in range(600)])
    payloads = [n.payload for n in listener.notifies(timeout=2.0, stop_after=2)]
    assert payloads == ["500", "100"]


def test_submit__rolled_back_submission_notifies_nobody(listener):
    with pytest.raises(RuntimeError), transaction.atomic():
        record.submit(n=1)
        raise RuntimeError("rollback")
    assert not _notified(listener)
