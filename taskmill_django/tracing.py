"""OpenTelemetry, when ``opentelemetry-api`` is installed (``pip install taskmill-django[otel]``).

``submit()`` stores the trace context active at submission with the task (only when a span is
active: a submission outside any trace writes nothing more), and the worker runs each attempt in
a span that is a child of it, so a trace follows a request into the tasks it started. Without
the package none of this runs: ``current_carrier()`` is None and ``task_span`` yields None.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

try:
    from opentelemetry import context, propagate, trace
except ImportError:  # the optional extra is not installed: tracing is off
    trace = None  # type: ignore[assignment]
    propagate = None  # type: ignore[assignment]
    context = None  # type: ignore[assignment]

TRACER_NAME = "taskmill_django"
# Outcomes of an attempt that mark its span as an error.
_ERRORS = frozenset({"failed", "dead_letter", "retry"})


def current_carrier() -> dict[str, str] | None:
    """The active trace context as W3C headers (``traceparent``...), None without one."""
    if trace is None or not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier or None


@contextlib.contextmanager
def task_span(
    task_id: int, task_type: str, attempt: int, carrier: dict[str, str] | None
) -> Iterator[Any]:
    """Run an attempt inside a span, child of the submitter's context when one was stored;
    yields the span (None without OpenTelemetry)."""
    if trace is None:
        yield None
        return
    parent = propagate.extract(carrier) if isinstance(carrier, dict) else None
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        # No SDK configured in this process: a span would record nothing, and making one per
        # task costs a busy worker a quarter of its throughput. The submitter's context is
        # still made current, so what the task submits stays in the same trace.
        token = context.attach(parent) if parent is not None else None
        try:
            yield None
        finally:
            if token is not None:
                context.detach(token)
        return
    tracer = trace.get_tracer(TRACER_NAME)
    with tracer.start_as_current_span(
        f"taskmill run {task_type}",
        context=parent,
        kind=trace.SpanKind.CONSUMER,
        attributes={
            "taskmill.task_id": task_id,
            "taskmill.task_type": task_type,
            "taskmill.attempt": attempt,
        },
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield span


def record_outcome(span: Any, outcome: str, error: str = "") -> None:
    """Say how the attempt ended on its span (``taskmill.outcome``); failures are errors."""
    if span is None:
        return
    span.set_attribute("taskmill.outcome", outcome)
    if outcome in _ERRORS:
        span.set_status(trace.Status(trace.StatusCode.ERROR, error[:200]))
