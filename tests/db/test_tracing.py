"""OpenTelemetry: a task submitted inside a span runs in a child span of it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from taskmill_django import testing
from taskmill_django.models import Task
from tests.testapp.tasks import boom, record

pytestmark = pytest.mark.django_db

_EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The spans finished during the test (the SDK's provider is global: installed once)."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def test_tracing__the_run_is_a_child_of_the_submitting_span(spans):
    with trace.get_tracer("request").start_as_current_span("POST /upload") as request:
        task_id = record.submit(n=1).id
    assert Task.objects.get(id=task_id).trace_context["traceparent"]

    assert testing.run_pending() == 1

    (run,) = [s for s in spans.get_finished_spans() if s.name.startswith("taskmill")]
    assert run.name == "taskmill run tests::record"
    assert run.context.trace_id == request.get_span_context().trace_id
    assert run.parent is not None
    assert run.parent.span_id == request.get_span_context().span_id
    assert run.kind == trace.SpanKind.CONSUMER
    assert dict(run.attributes) == {
        "taskmill.task_id": task_id,
        "taskmill.task_type": "tests::record",
        "taskmill.attempt": 1,
        "taskmill.outcome": "completed",
    }


def test_tracing__a_failed_attempt_is_an_error_span(spans):
    boom.submit()

    testing.run_pending(limit=1)

    (run,) = spans.get_finished_spans()
    assert run.attributes["taskmill.outcome"] == "retry"
    assert run.status.status_code == trace.StatusCode.ERROR
    assert "boom" in run.status.description


def test_tracing__outside_a_span_nothing_is_stored(spans):
    task_id = record.submit(n=2).id

    assert Task.objects.get(id=task_id).trace_context is None
    testing.run_pending()
    (run,) = spans.get_finished_spans()
    assert run.parent is None  # a root span of its own
