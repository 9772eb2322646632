"""REST API access: API_PERMISSION_CLASSES (staff only by default) and the submit throttle."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from rest_framework.test import APIClient

from taskmill_django.models import Task
from tests.settings import TASKMILL
from tests.testapp.tasks import record

pytestmark = pytest.mark.django_db

API = "/taskmill/api/"
SUBMIT = {"task_type": "tests::record", "payload": {"n": 1}}


def client_for(**user_fields: object) -> APIClient:
    client = APIClient()
    user = get_user_model().objects.create_user("someone", **user_fields)
    client.force_login(user)
    return client


@pytest.fixture(autouse=True)
def clear_throttle_history():
    cache.clear()
    yield
    cache.clear()


READS = [
    "tasks/",
    "history/",
    "dead-letter/",
    "snapshot/",
    "stats/",
    "tags/keys/",
    "recurring/",
    "groups/",
    "workers/",
    "domains/",
    "schema/",
]


@pytest.mark.parametrize("url", READS)
def test_anonymous__is_refused_with_an_error_body(url):
    response = APIClient().get(f"{API}{url}")
    assert response.status_code in (401, 403)
    assert response.json()["errors"]["detail"]


@pytest.mark.parametrize("url", READS)
def test_non_staff_user__is_refused(url):
    response = client_for(is_staff=False).get(f"{API}{url}")
    assert response.status_code == 403


@pytest.mark.parametrize("url", READS)
def test_staff_user__is_allowed_by_default(url):
    assert client_for(is_staff=True).get(f"{API}{url}").status_code == 200


def test_non_staff_user__cannot_submit_or_act():
    outcome = record.submit(n=5)
    client = client_for(is_staff=False)
    assert client.post(f"{API}tasks/", SUBMIT, format="json").status_code == 403
    assert client.post(f"{API}tasks/{outcome.id}/cancel/").status_code == 403
    assert client.post(f"{API}groups/g/pause/", {}, format="json").status_code == 403
    assert list(Task.objects.values_list("id", flat=True)) == [outcome.id]


def test_anonymous__cannot_submit():
    response = APIClient().post(f"{API}tasks/", SUBMIT, format="json")
    assert response.status_code in (401, 403)
    assert not Task.objects.exists()


@override_settings(
    TASKMILL={**TASKMILL, "API_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"]}
)
def test_allow_any_setting__opens_the_api_to_anonymous_clients():
    client = APIClient()
    assert client.get(f"{API}tasks/").status_code == 200
    response = client.post(f"{API}tasks/", SUBMIT, format="json")
    assert response.status_code == 201
    assert Task.objects.filter(id=response.json()["id"]).exists()
    assert client.get(f"{API}schema/").status_code == 200


@override_settings(
    TASKMILL={**TASKMILL, "API_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"]}
)
def test_is_authenticated_setting__lets_any_user_in():
    assert client_for(is_staff=False).get(f"{API}tasks/").status_code == 200
    assert APIClient().get(f"{API}tasks/").status_code in (401, 403)


@override_settings(TASKMILL={**TASKMILL, "API_PERMISSION_CLASSES": ["no.such.Permission"]})
def test_unimportable_permission_class__is_a_configuration_error():
    with pytest.raises(ImproperlyConfigured, match="API_PERMISSION_CLASSES"):
        client_for(is_staff=True).get(f"{API}tasks/")


@override_settings(TASKMILL={**TASKMILL, "API_SUBMIT_THROTTLE_RATE": "2/min"})
def test_submit_throttle__third_submission_in_a_minute_is_429():
    client = client_for(is_staff=True)
    for n in range(2):
        body = {"task_type": "tests::record", "payload": {"n": n}}
        assert client.post(f"{API}tasks/", body, format="json").status_code == 201
    response = client.post(f"{API}tasks/", {**SUBMIT, "payload": {"n": 9}}, format="json")
    assert response.status_code == 429
    assert "Retry-After" in response.headers
    assert response.json()["errors"]["detail"]
    assert Task.objects.count() == 2
    # Only submissions are throttled.
    assert client.get(f"{API}tasks/").status_code == 200


def test_submit_throttle__off_by_default():
    client = client_for(is_staff=True)
    for n in range(20):
        body = {"task_type": "tests::record", "payload": {"n": n}}
        assert client.post(f"{API}tasks/", body, format="json").status_code == 201


@override_settings(TASKMILL={**TASKMILL, "API_SUBMIT_THROTTLE_RATE": "lots"})
def test_submit_throttle__bad_rate_is_a_configuration_error():
    with pytest.raises(ImproperlyConfigured, match="API_SUBMIT_THROTTLE_RATE"):
        client_for(is_staff=True).post(f"{API}tasks/", SUBMIT, format="json")


def test_session_client__must_send_the_csrf_token():
    user = get_user_model().objects.create_user("staff", is_staff=True)
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.post(f"{API}tasks/", SUBMIT, format="json").status_code == 403
    assert not Task.objects.exists()
