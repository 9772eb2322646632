"""Reading results without waiting: scheduler.result, the domain handle, and the odd cases."""

from __future__ import annotations

import pytest

from taskmill_django import scheduler
from taskmill_django.exceptions import TaskNotFound, ValidationError
from taskmill_django.records import SubmitOutcome
from taskmill_django.testing import run_pending
from tests.testapp.tasks import echo, other_noop

pytestmark = pytest.mark.django_db


def test_result__none_while_active_then_the_history_record():
    outcome = echo.submit(value=[1, 2])
    assert scheduler.result(outcome.id) is None
    run_pending()
    record = scheduler.result(outcome.id)
    assert (record.status, record.result, record.last_error) == ("completed", [1, 2], "")


def test_result__a_cancelled_task_is_terminal():
    outcome = echo.submit(value=1)
    scheduler.cancel(outcome.id)
    assert scheduler.result(outcome.id).status == "cancelled"
    assert outcome.wait(timeout=0).status == "cancelled"  # terminal: no waiting at all


def test_result__a_pruned_task_is_a_clear_error():
    outcome = echo.submit(value=1)
    run_pending()
    scheduler.store().prune_history_by_count(0)
    with pytest.raises(TaskNotFound, match=rf"no task with id {outcome.id}: .*pruned"):
        scheduler.result(outcome.id)
    with pytest.raises(TaskNotFound):
        outcome.wait(timeout=1)


def test_result__the_domain_handle_sees_only_its_domain():
    outcome = other_noop.submit()
    run_pending()
    assert scheduler.domain("other").result(outcome.id).status == "completed"
    with pytest.raises(TaskNotFound):
        scheduler.domain("tests").result(outcome.id)


def test_wait__refuses_bad_arguments_and_an_outcome_without_a_task():
    outcome = echo.submit(value=1)
    with pytest.raises(ValidationError, match="timeout"):
        outcome.wait(timeout=-1)
    with pytest.raises(ValidationError, match="poll"):
        outcome.wait(poll=0)
    with pytest.raises(ValidationError, match="no task to wait for"):
        SubmitOutcome("inserted", None, schedule_id=1).wait(timeout=1)


def test_wait__zero_timeout_on_an_active_task_raises_at_once():
    outcome = echo.submit(value=1)
    with pytest.raises(TimeoutError, match=f"task {outcome.id} did not finish within 0 s"):
        outcome.wait(timeout=0)
