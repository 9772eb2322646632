"""Schema-driven fuzzing of the REST API with schemathesis: no 5xx, no schema violations.

Every operation of ``schema/`` gets generated requests, valid ones (positive mode) and
invalid ones (negative mode), sent in-process to Django's WSGI handler as a user holding every
permission of the app (basic authentication), with the test apps' types submittable. The
responses must never be 5xx, must use only documented status codes and content types, must
match their documented schemas, and invalid input must be rejected with a 4xx.

``TASKMILL_FUZZ_EXAMPLES`` (default 15) sets the number of examples per operation and mode.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator

import pytest
import schemathesis
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.test import override_settings

hypothesis = pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.generation import GenerationMode  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.testapp.tasks import record  # noqa: E402

pytestmark = pytest.mark.django_db

EXAMPLES = int(os.environ.get("TASKMILL_FUZZ_EXAMPLES", "15"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture
def wsgi_app() -> Iterator[object]:
    """Django's WSGI handler, run in the test's thread and transaction.

    Like Django's own test client, it must not close the test's database connection at the
    end of each request.
    """
    from django.core.handlers.wsgi import WSGIHandler

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield WSGIHandler()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def auth(api_submit_types) -> dict[str, str]:
    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        user = get_user_model().objects.create_user("fuzz", password="fuzz")  # noqa: S106
        user.user_permissions.set(
            Permission.objects.filter(content_type__app_label="taskmill_django")
        )
        token = base64.b64encode(b"fuzz:fuzz").decode()
        yield {"Authorization": f"Basic {token}"}


@pytest.fixture
def api_schema(wsgi_app, auth):  # type: ignore[no-untyped-def]
    # Something to act on: a few tasks, a blocked one, a dead letter.
    first = record.submit(n=1)
    record.using(depends_on=[first.id], tags={"env": "prod"}, group="g1").submit(n=2)
    return schemathesis.openapi.from_wsgi("/taskmill/api/schema/", wsgi_app, headers=auth)


def _operations(schema) -> list:  # type: ignore[no-untyped-def]
    return [result.ok() for result in schema.get_all_operations()]


def _fuzz(operation, mode: GenerationMode, auth: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    checks = [*CHECKS, negative_data_rejection] if mode == GenerationMode.NEGATIVE else CHECKS

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case) -> None:  # type: ignore[no-untyped-def]
        response = case.call(headers=auth)
        case.validate_response(response, checks=checks, headers=auth)

    try:
        run()
    except Unsatisfiable:
        if mode != GenerationMode.NEGATIVE:
            raise
        # An operation without parameters or body has no invalid input to send.


@override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"])
def test_fuzz__every_operation_positive_and_negative(api_schema, auth):
    operations = _operations(api_schema)
    assert len(operations) >= 35
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _fuzz(operation, mode, auth)
            except Exception as exc:
                exc.add_note(f"while fuzzing {operation.label} ({mode.value})")
                raise
