"""The testing helpers as a project's own test suite uses them: capture(), the pytest fixtures."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from taskmill_django.models import Task
from taskmill_django.testing import capture, run_pending
from tests.testapp.tasks import echo, fan_out, record

pytestmark = pytest.mark.django_db

REPO = Path(__file__).resolve().parents[2]


def test_capture__records_type_payload_and_options_and_still_queues():
    with capture() as captured:
        first = echo.using(priority=10, tags={"tenant": "a"}, group="g").submit(value=1)
        record.submit_batch([{"n": 1}, {"n": 2}])
    assert [(c.task_type, c.payload) for c in captured] == [
        ("tests::echo", {"value": 1}),
        ("tests::record", {"n": 1}),
        ("tests::record", {"n": 2}),
    ]
    options = captured[0].options
    assert (options["priority"], options["tags"], options["group"]) == (10, {"tenant": "a"}, "g")
    assert (captured[0].id, captured[0].kind) == (first.id, "inserted")
    assert Task.objects.count() == 3
    assert run_pending() == 3


def test_capture__queue_false_keeps_everything_out_of_the_database():
    with capture(queue=False) as captured:
        outcome = echo.submit(value=1)
        batch = record.submit_batch([{"n": 1}, {"n": 2}])
    assert len(captured) == 3
    assert (outcome.kind, outcome.id) == ("captured", None)
    assert [o.kind for o in batch] == ["captured", "captured"]
    assert not Task.objects.exists()
    echo.submit(value=2)  # after the block: queued as usual
    assert Task.objects.count() == 1


def test_capture__sees_children_spawned_by_a_task_run_in_the_test():
    fan_out.submit(parts=2)
    with capture() as captured:
        run_pending(limit=1)
    assert [(c.task_type, c.options["parent"] is not None) for c in captured] == [
        ("flows::fan_part", True),
        ("flows::fan_part", True),
    ]


def test_fixtures__capture_and_worker(taskmill_capture, taskmill_worker):
    echo.submit(value="x")
    assert [c.payload for c in taskmill_capture] == [{"value": "x"}]
    assert taskmill_worker.run_pending() == 1
    assert taskmill_worker.ran == 1


def test_plugin__a_project_suite_gets_the_fixtures_from_the_entry_point(tmp_path):
    """A test file of a user's project, run by pytest without any conftest of ours."""
    (tmp_path / "test_signup.py").write_text(
        textwrap.dedent(
            """
            import pytest
            from tests.testapp.tasks import echo

            @pytest.mark.django_db
            def test_signup_queues_a_welcome(taskmill_capture, taskmill_worker):
                echo.submit(value="welcome")
                assert [c.task_type for c in taskmill_capture] == ["tests::echo"]
                assert taskmill_worker.run_pending() == 1
            """
        )
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "TASKMILL_TEST_DB": "sqlite",
        "TASKMILL_TEST_TMP": str(tmp_path),
    }
    env.pop("TASKMILL_TEST_DB_NAME", None)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "test_signup.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed" in run.stdout
