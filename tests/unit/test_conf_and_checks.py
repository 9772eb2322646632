"""Settings object, its defaults and reload, the system checks, and the module doctests."""

from __future__ import annotations

import doctest
import os
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest
from django.test import override_settings

import taskmill_django.retry
import taskmill_django.tag_filters
import taskmill_django.validation
from taskmill_django.checks import check_settings
from taskmill_django.conf import DEFAULTS, app_settings

ROOT = Path(__file__).resolve().parents[2]


# --- doctests --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "module", [taskmill_django.retry, taskmill_django.validation, taskmill_django.tag_filters]
)
def test_doctests__module_examples_hold(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


# --- conf ------------------------------------------------------------------------------------


def test_app_settings__unset_key_uses_default():
    assert app_settings.MAX_RETRIES == DEFAULTS["MAX_RETRIES"] == 3
    assert app_settings.PREEMPT_PRIORITY == 0
    assert app_settings.RETENTION is None


def test_app_settings__project_value_wins():
    assert app_settings.LEASE_TIMEOUT == 3.0  # tests/settings.py


def test_app_settings__override_settings_reloads_and_restores():
    with override_settings(TASKMILL={"MAX_RETRIES": 9}):
        assert app_settings.MAX_RETRIES == 9
        assert app_settings.LEASE_TIMEOUT == DEFAULTS["LEASE_TIMEOUT"]
    assert app_settings.MAX_RETRIES == 3
    assert app_settings.LEASE_TIMEOUT == 3.0


def test_app_settings__unknown_name_raises_attribute_error():
    with pytest.raises(AttributeError, match="MAX_RETRYS"):
        app_settings.MAX_RETRYS  # noqa: B018


def test_app_settings__lease_timeout_as_timedelta():
    with override_settings(TASKMILL={"LEASE_TIMEOUT": 90}):
        assert app_settings.lease_timeout == timedelta(seconds=90)


def test_app_settings__importing_package_in_settings_keeps_project_values(tmp_path):
    (tmp_path / "tm_settings_probe.py").write_text(
        textwrap.dedent(
            """
            from taskmill_django import Priority
            SECRET_KEY = "probe"
            INSTALLED_APPS = ["taskmill_django"]
            TASKMILL = {"MAX_RETRIES": 7, "PREEMPT_PRIORITY": Priority.HIGH}
            """
        )
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tm_settings_probe",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
    }
    code = (
        "import django; django.setup();"
        "from taskmill_django.conf import app_settings;"
        "print(app_settings.MAX_RETRIES, app_settings.PREEMPT_PRIORITY)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["7", "64"]


# --- system checks ---------------------------------------------------------------------------


def _ids(taskmill: dict) -> list[str]:
    with override_settings(TASKMILL=taskmill):
        return [message.id for message in check_settings()]


def test_checks__defaults_are_clean():
    assert _ids({}) == []


def test_checks__test_settings_are_clean():
    assert check_settings() == []


def test_checks__unknown_key_warns_w001():
    with override_settings(TASKMILL={"MAX_RETRYS": 3}):
        messages = check_settings()
    assert [m.id for m in messages] == ["taskmill.W001"]
    assert "MAX_RETRYS" in messages[0].msg


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("POLL_INTERVAL", 0),
        ("POLL_INTERVAL", -1.0),
        ("HEARTBEAT_INTERVAL", "5"),
        ("EXPIRY_SWEEP_INTERVAL", None),
        ("PROGRESS_INTERVAL", True),
    ],
)
def test_checks__non_positive_interval_is_e001(name, value):
    assert "taskmill.E001" in _ids({name: value})


@pytest.mark.parametrize(
    "value",
    [
        "rest_framework.permissions.IsAdminUser",  # a string, not a list of them
        ["rest_framework.permissions.NoSuchPermission"],
        ["no_such_module.Permission"],
        ["rest_framework.permissions.SAFE_METHODS"],  # imports, but is no class
    ],
)
def test_checks__bad_api_permission_classes_is_e019(value):
    assert _ids({"API_PERMISSION_CLASSES": value}) == ["taskmill.E019"]


@pytest.mark.parametrize("value", ["100/fortnight", "many/min", 100, "-5/min", ["10/s"]])
def test_checks__bad_api_submit_throttle_rate_is_e020(value):
    assert _ids({"API_SUBMIT_THROTTLE_RATE": value}) == ["taskmill.E020"]


def test_checks__good_api_settings_are_clean():
    good = {
        "API_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
        "API_SUBMIT_THROTTLE_RATE": "20/s",
    }
    assert _ids(good) == []


@pytest.mark.parametrize("value", ["media::*", [1], None])
def test_checks__bad_api_submit_types_is_e030(value):
    assert _ids({"API_SUBMIT_TYPES": value}) == ["taskmill.E030"]


def test_checks__api_submit_types_matching_nothing_warns_w030():
    with override_settings(TASKMILL={"API_SUBMIT_TYPES": ["tests::*", "tests:record"]}):
        messages = check_settings()
    assert [m.id for m in messages] == ["taskmill.W030"]
    assert "tests:record" in messages[0].msg


@pytest.mark.parametrize("value", ["password", [""], [None], {"password": 1}])
def test_checks__bad_sensitive_keys_is_e031(value):
    assert _ids({"SENSITIVE_KEYS": value}) == ["taskmill.E031"]


@pytest.mark.parametrize("value", [0, 1.5, "1MB", True, None])
def test_checks__bad_max_payload_bytes_is_e032(value):
    assert _ids({"MAX_PAYLOAD_BYTES": value}) == ["taskmill.E032"]


def test_checks__good_security_settings_are_clean():
    good = {
        "API_SUBMIT_TYPES": ["tests::record", "flows::*"],
        "SENSITIVE_KEYS": ["iban"],
        "MAX_PAYLOAD_BYTES": 4096,
    }
    assert _ids(good) == []


@pytest.mark.parametrize("value", [-1, "30", None])
def test_checks__bad_shutdown_timeout_is_e002(value):
    assert _ids({"SHUTDOWN_TIMEOUT": value}) == ["taskmill.E002"]


def test_checks__zero_shutdown_timeout_is_allowed():
    assert _ids({"SHUTDOWN_TIMEOUT": 0}) == []


@pytest.mark.parametrize("name", ["PRUNE_INTERVAL", "CLAIM_BATCH_SIZE", "MAX_RESCUES"])
@pytest.mark.parametrize("value", [0, 2.5, True])
def test_checks__bad_positive_int_is_e003(name, value):
    assert _ids({name: value}) == ["taskmill.E003"]


@pytest.mark.parametrize("value", [0, -2, 1.5, True, "4"])
def test_checks__bad_max_concurrency_is_e004(value):
    assert _ids({"MAX_CONCURRENCY": value}) == ["taskmill.E004"]


@pytest.mark.parametrize("value", [-1, 1.0, False, None])
def test_checks__bad_max_retries_is_e005(value):
    assert _ids({"MAX_RETRIES": value}) == ["taskmill.E005"]


@pytest.mark.parametrize("value", [-1, 256, "0", True])
def test_checks__bad_preempt_priority_is_e006(value):
    assert _ids({"PREEMPT_PRIORITY": value}) == ["taskmill.E006"]


@pytest.mark.parametrize("value", [0, -5, "60", True])
def test_checks__bad_default_ttl_is_e007(value):
    assert _ids({"DEFAULT_TTL": value}) == ["taskmill.E007"]


@pytest.mark.parametrize(
    "value",
    [{"max_rows": 10}, {"max_count": -1}, {"max_age_days": "7"}, [10], 10],
)
def test_checks__bad_retention_is_e008(value):
    assert _ids({"RETENTION": value}) == ["taskmill.E008"]


def test_checks__valid_retention_is_clean():
    assert _ids({"RETENTION": {"max_count": 1000, "max_age_days": 7.5}}) == []


def test_checks__lease_shorter_than_two_heartbeats_is_e009():
    assert _ids({"HEARTBEAT_INTERVAL": 5, "LEASE_TIMEOUT": 9}) == ["taskmill.E009"]


def test_checks__lease_under_three_heartbeats_leaves_no_time_to_fence_e060():
    assert _ids({"HEARTBEAT_INTERVAL": 5, "LEASE_TIMEOUT": 14}) == ["taskmill.E060"]


def test_checks__lease_of_exactly_three_heartbeats_is_allowed():
    assert _ids({"HEARTBEAT_INTERVAL": 5, "LEASE_TIMEOUT": 15}) == []


@pytest.mark.parametrize("name", ["STATEMENT_TIMEOUT", "LOCK_TIMEOUT"])
@pytest.mark.parametrize("value", [0, -1, "30", True])
def test_checks__bad_worker_timeout_is_e061(name, value):
    assert _ids({name: value}) == ["taskmill.E061"]


def test_checks__worker_timeouts_may_be_none():
    assert _ids({"STATEMENT_TIMEOUT": None, "LOCK_TIMEOUT": None}) == []


@pytest.mark.parametrize("value", [-1, 1.5, "4", True])
def test_checks__claim_ahead_must_be_none_or_a_count_e064(value):
    assert _ids({"CLAIM_AHEAD": value}) == ["taskmill.E064"]


def test_checks__transaction_pooling_must_be_a_bool_e062():
    assert _ids({"TRANSACTION_POOLING": "yes"}) == ["taskmill.E062"]


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_checks__pooled_postgres_must_not_keep_session_state_w065_w066():
    pg = {"ENGINE": "django.db.backends.postgresql", "NAME": "x"}
    cases = [
        ({**pg}, ["taskmill.W065"]),
        ({**pg, "DISABLE_SERVER_SIDE_CURSORS": True}, []),
        (
            {**pg, "DISABLE_SERVER_SIDE_CURSORS": True, "OPTIONS": {"prepare_threshold": 5}},
            ["taskmill.W066"],
        ),
    ]
    for database, expected in cases:
        with override_settings(DATABASES={"default": database}):
            assert _ids({"TRANSACTION_POOLING": True}) == expected
            assert _ids({"TRANSACTION_POOLING": False}) == []


def test_checks__listen_database_must_name_an_alias_e063():
    assert _ids({"LISTEN_DATABASE": "nowhere"}) == ["taskmill.E063"]
    assert _ids({"LISTEN_DATABASE": "default"}) == []


def test_checks__errors_carry_a_hint_naming_the_setting():
    with override_settings(TASKMILL={"MAX_RETRIES": -1}):
        (message,) = check_settings()
    assert "MAX_RETRIES" in message.msg
    assert "MAX_RETRIES" in message.hint


def test_checks__registered_with_django():
    from django.core import checks

    with override_settings(TASKMILL={"MAX_RETRIES": -1}):
        messages = checks.run_checks(tags=["taskmill"])
    assert "taskmill.E005" in [m.id for m in messages]
