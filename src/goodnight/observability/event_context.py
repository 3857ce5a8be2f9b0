"""Carrying a request's context to the outbox worker that applies the events it wrote.

An event keeps the id of the request that wrote it and, when that request was traced, its W3C
``traceparent``. The worker applies the event under that request id (its log lines name the request) and,
when tracing, in a span that continues the request's trace and links to the request's span.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from goodnight.kit.request_context import request_id_var

REQUEST_ID = "request_id"
TRACEPARENT = "traceparent"
_propagator = TraceContextTextMapPropagator()


def capture() -> dict[str, str] | None:
    """What the code running now should pass on to the events it writes; None when there is nothing.

    Without tracing the current span is always the invalid one: one context-variable read, no more.
    """
    captured: dict[str, str] = {}
    request_id = request_id_var.get()
    if request_id is not None:
        captured[REQUEST_ID] = request_id
    if trace.get_current_span().get_span_context().is_valid:
        _propagator.inject(captured)  # writes "traceparent" (and "tracestate" when there is one)
    return captured or None


@contextmanager
def resumed(
    context: Mapping[str, str] | None,
    tracer: trace.Tracer | None,
    name: str,
    attributes: Mapping[str, AttributeValue],
) -> Iterator[None]:
    """Run the block for an event written under ``context``: its request id set, and, with a ``tracer``, a
    consumer span named ``name`` whose parent and link are the writing request's span (when it was traced).
    """
    token = request_id_var.set((context or {}).get(REQUEST_ID))
    try:
        if tracer is None:
            yield
            return
        parent = _propagator.extract(dict(context or {}))
        written_in = trace.get_current_span(parent).get_span_context()
        links = [trace.Link(written_in)] if written_in.is_valid else []
        with tracer.start_as_current_span(
            name, context=parent, kind=trace.SpanKind.CONSUMER, attributes=attributes, links=links
        ):
            yield
    finally:
        request_id_var.reset(token)


def mark_failed(exc: BaseException) -> None:
    """Record on the current span (when one is recording) that applying its event failed."""
    span = trace.get_current_span()
    if span.is_recording():
        span.record_exception(exc)
        span.set_status(trace.Status(trace.StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
