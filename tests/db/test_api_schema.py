"""REST API schema: schema/ serves valid OpenAPI 3, and generateschema produces the same."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

EXPECTED = {
    ("/taskmill/api/tasks/", "get"),
    ("/taskmill/api/tasks/", "post"),
    ("/taskmill/api/tasks/{id}/", "get"),
    ("/taskmill/api/tasks/{id}/cancel/", "post"),
    ("/taskmill/api/tasks/{id}/pause/", "post"),
    ("/taskmill/api/tasks/{id}/resume/", "post"),
    ("/taskmill/api/tasks/{id}/priority/", "post"),
    ("/taskmill/api/tasks/{id}/dependencies/", "get"),
    ("/taskmill/api/tasks/{id}/dependents/", "get"),
    ("/taskmill/api/tasks/{id}/explain/", "get"),
    ("/taskmill/api/history/", "get"),
    ("/taskmill/api/history/{id}/", "get"),
    ("/taskmill/api/dead-letter/", "get"),
    ("/taskmill/api/dead-letter/{id}/", "get"),
    ("/taskmill/api/dead-letter/{id}/retry/", "post"),
    ("/taskmill/api/dead-letter/retry/", "post"),
    ("/taskmill/api/snapshot/", "get"),
    ("/taskmill/api/domains/", "get"),
    ("/taskmill/api/domains/{name}/", "get"),
    ("/taskmill/api/domains/{name}/snapshot/", "get"),
    ("/taskmill/api/stats/", "get"),
    ("/taskmill/api/tags/keys/", "get"),
    ("/taskmill/api/tags/values/", "get"),
    ("/taskmill/api/tags/counts/", "get"),
    ("/taskmill/api/recurring/", "get"),
    ("/taskmill/api/recurring/{id}/", "get"),
    ("/taskmill/api/recurring/{id}/pause/", "post"),
    ("/taskmill/api/recurring/{id}/resume/", "post"),
    ("/taskmill/api/recurring/{id}/cancel/", "post"),
    ("/taskmill/api/groups/", "get"),
    ("/taskmill/api/groups/{name}/", "get"),
    ("/taskmill/api/groups/{name}/pause/", "post"),
    ("/taskmill/api/groups/{name}/resume/", "post"),
    ("/taskmill/api/groups/{name}/limit/", "post"),
    ("/taskmill/api/groups/{name}/limit/", "delete"),
    ("/taskmill/api/groups/{name}/rate-limit/", "post"),
    ("/taskmill/api/groups/{name}/rate-limit/", "delete"),
    ("/taskmill/api/groups/{name}/weight/", "post"),
    ("/taskmill/api/groups/{name}/weight/", "delete"),
    ("/taskmill/api/workers/", "get"),
}


@pytest.fixture
def schema(user_factory) -> dict[str, Any]:
    return schema_of(user_factory)


def schema_of(user_factory) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    client = APIClient()
    client.force_authenticate(user_factory("viewer"))
    response = client.get("/taskmill/api/schema/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi+json")
    return json.loads(response.content)


def operations(schema: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, method) for path, ops in schema["paths"].items() for method in ops}


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if "$ref" in node else []
        return found + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in refs(value)]
    return []


def test_schema__is_openapi_3_with_every_endpoint(schema):
    assert schema["openapi"].startswith("3.0.")
    assert schema["info"]["title"] == "taskmill API"
    assert operations(schema) == EXPECTED


def test_schema__operation_ids_are_unique(schema):
    ids = [op["operationId"] for ops in schema["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))


def test_schema__every_reference_resolves(schema):
    components = schema["components"]["schemas"]
    for ref in refs(schema["paths"]) + refs(components):
        assert ref.startswith("#/components/schemas/")
        assert ref.rsplit("/", 1)[1] in components


def test_schema__documents_errors_and_success_codes(schema):
    submit = schema["paths"]["/taskmill/api/tasks/"]["post"]
    assert {"200", "201", "400", "403", "409", "429"} <= set(submit["responses"])
    assert submit["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Submit"
    }
    retrieve = schema["paths"]["/taskmill/api/tasks/{id}/"]["get"]
    assert "404" in retrieve["responses"]
    errors = schema["components"]["schemas"]["Errors"]
    assert errors["required"] == ["errors"]


def test_schema__list_parameters(schema):
    listing = schema["paths"]["/taskmill/api/tasks/"]["get"]
    names = {p["name"] for p in listing["parameters"]}
    assert {
        "limit",
        "offset",
        "status",
        "domain",
        "task_type",
        "group",
        "priority_min",
        "priority_max",
        "tag",
        "tag_prefix",
        "created_after",
        "created_before",
    } <= names
    tag = next(p for p in listing["parameters"] if p["name"] == "tag")
    assert tag["schema"]["type"] == "array"
    assert tag["explode"] is True
    history = schema["paths"]["/taskmill/api/history/"]["get"]
    assert {"status", "task_type", "key", "finished_after", "finished_before"} <= {
        p["name"] for p in history["parameters"]
    }
    counts = schema["paths"]["/taskmill/api/tags/counts/"]["get"]
    key = next(p for p in counts["parameters"] if p["name"] == "key")
    assert key["required"] is True


def test_schema__submit_body_lists_every_using_option(schema):
    from taskmill_django.domain import SubmitOptions

    properties = schema["components"]["schemas"]["Submit"]["properties"]
    assert set(SubmitOptions.__dataclass_fields__) <= set(properties)
    assert properties["priority"]["maximum"] == 255
    assert schema["components"]["schemas"]["Submit"]["additionalProperties"] is False


def test_schema__valid_against_the_openapi_3_0_meta_schema(schema):
    definitions = pytest.importorskip("schemathesis.specs.openapi.definitions")
    errors = list(definitions.OPENAPI_30_VALIDATOR.iter_errors(schema))
    assert errors == []


def test_generateschema__command_includes_the_api():
    out = io.StringIO()
    call_command("generateschema", "--format", "openapi-json", stdout=out)
    generated = json.loads(out.getvalue())
    assert operations(generated) == EXPECTED
    out = io.StringIO()
    call_command(
        "generateschema",
        "--format",
        "openapi-json",
        "--generator_class",
        "taskmill_django.api.schema.TaskmillSchemaGenerator",
        stdout=out,
    )
    assert operations(json.loads(out.getvalue())) == EXPECTED


def test_schema__submit_lists_submittable_task_types_and_marks_required_bodies(
    user_factory, settings
):
    settings.TASKMILL = {**settings.TASKMILL, "API_SUBMIT_TYPES": ["tests::record", "other::*"]}
    schema = schema_of(user_factory)
    submit = schema["components"]["schemas"]["Submit"]["properties"]["task_type"]
    assert set(submit["enum"]) == {"tests::record", "other::noop", "other::wf_step"}
    paths = schema["paths"]
    assert paths["/taskmill/api/tasks/"]["post"]["requestBody"]["required"] is True
    assert paths["/taskmill/api/groups/{name}/limit/"]["post"]["requestBody"]["required"] is True
    pause = paths["/taskmill/api/groups/{name}/pause/"]["post"]
    assert pause["requestBody"]["required"] is False
    assert "requestBody" not in paths["/taskmill/api/tasks/{id}/cancel/"]["post"]
