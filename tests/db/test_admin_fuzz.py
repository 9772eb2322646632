"""Hypothesis over the admin's action forms: the controls, change priority, prune, retry.

Whatever is typed into them, the admin never fails with a server error, answers a post with a
redirect or the form again, and input it reports as wrong changes nothing.
``TASKMILL_FUZZ_EXAMPLES`` (default 15) sets the examples per form, as for the API fuzzing.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse

from taskmill_django.admin.views import OPERATIONS
from taskmill_django.models import Task
from tests.db.conftest import db_state
from tests.testapp.tasks import record

hypothesis = pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

pytestmark = pytest.mark.django_db

EXAMPLES = 4 * int(os.environ.get("TASKMILL_FUZZ_EXAMPLES", "15"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)

# What a person might type into a form field: numbers of every size and spelling, names the
# test apps use, dates, and any other text (no lone surrogates: a browser cannot send them).
typed = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(
        [
            *("", "0", "1", "255", "256", "-1", "1e400", "nan", "inf", "tests", "other", "g1"),
            *("tests::record", "2030-01-01 10:00", "2030-01-01T10:00", "9999-12-31 23:59"),
            "\x00",
        ]
    ),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40),
)
CONTROL_FIELDS = (
    "limit",
    "domain",
    "group",
    "until",
    "weight",
    "minimum_slots",
    "rate",
    "per",
    "burst",
    "task_type",
)


def optional_fields(names: tuple[str, ...]) -> st.SearchStrategy[dict[str, str]]:
    return st.fixed_dictionaries({}, optional=dict.fromkeys(names, typed))


def post(client: Client, url: str, data: dict[str, Any]) -> Any:
    """Post with no messages left from earlier examples (they wait in a cookie until shown)."""
    client.cookies.pop("messages", None)
    return client.post(url, data)


def texts(response: Any) -> str:
    return " ".join(str(m) for m in get_messages(response.wsgi_request))


@pytest.fixture
def admin(admin_client_for) -> Client:
    return admin_client_for("superuser")


def test_fuzz_controls__no_server_error_and_refused_input_changes_nothing(admin):
    record.using(group="g1").submit(n=1)
    url = reverse("admin:taskmill_django_controls")
    ops = st.sampled_from([*OPERATIONS, "", "drop_everything"])

    @FUZZ
    @given(op=ops, fields=optional_fields(CONTROL_FIELDS))
    def run(op: str, fields: dict[str, str]) -> None:
        before = db_state()
        response = post(admin, url, {"op": op, **fields})
        assert response.status_code == 302
        said = texts(response)
        assert said
        if "Nothing changed" in said or "Unknown operation" in said:
            assert db_state() == before

    run()


def test_fuzz_change_priority__no_server_error_and_only_valid_priorities_apply(admin):
    task = record.submit(n=1).id
    url = reverse("admin:taskmill_django_task_changelist")

    @FUZZ
    @given(fields=optional_fields(("priority", "tier")))
    def run(fields: dict[str, str]) -> None:
        before = Task.objects.get(id=task).priority
        data = {"action": "change_priority", "_selected_action": [task], "apply": "1"}
        response = post(admin, url, {**data, **fields})
        assert response.status_code in (200, 302)
        after = Task.objects.get(id=task).priority
        if response.status_code == 200:  # the form again, with its errors
            assert after == before
        assert 0 <= after <= 255

    run()


def test_fuzz_prune__no_server_error_and_refused_input_deletes_nothing(admin, history_factory):
    url = reverse("admin:taskmill_django_taskhistory_prune")

    @FUZZ
    @given(fields=optional_fields(("mode", "amount", "domain")))
    def run(fields: dict[str, str]) -> None:
        history_factory(status="completed")
        before = db_state()
        response = post(admin, url, fields)
        assert response.status_code in (200, 302)
        if response.status_code == 200 or "Nothing pruned" in texts(response):
            assert db_state() == before

    run()


def test_fuzz_retry_all__no_server_error_whatever_the_filters(admin, history_factory):
    url = reverse("admin:taskmill_django_deadletter_retry_all")
    filters = ("group", "domain", "task_type", "tier", "retried", "tag", "tag_prefix", "q", "o")

    @FUZZ
    @given(query=optional_fields(filters))
    def run(query: dict[str, str]) -> None:
        history_factory(task_type="tests::record", status="dead_letter", payload={"n": 1})
        assert admin.get(url, query).status_code in (200, 302)
        assert admin.post(f"{url}?{_encode(query)}").status_code == 302

    run()


def _encode(query: dict[str, str]) -> str:
    from urllib.parse import urlencode

    return urlencode(query)
