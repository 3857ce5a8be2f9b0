"""OpenTelemetry traces: requests, SQL statements, Redis commands and outbox events, exported over OTLP.

Set up only when an OTLP endpoint is configured (see ``switch``). Only requests and outbox events start
traces: a statement or a Redis command outside both (the outbox worker polling, the revocation feed) is
not recorded, or every idle worker would export five traces a second.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from fastapi import FastAPI
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
from opentelemetry.metrics import NoOpMeter
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Decision, ParentBased, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes
from sqlalchemy.ext.asyncio import AsyncEngine

from goodnight import __version__

DEFAULT_SERVICE_NAME = "goodnight"
# Names the SQLAlchemy instrumentation gives its tracer, so its spans look as they would instrumented
# the usual way; we attach it to each engine ourselves rather than patch ``create_engine`` for the process.
_SQLALCHEMY_SCOPE = "opentelemetry.instrumentation.sqlalchemy"


class RequestsAndEvents(Sampler):
    """Start traces for requests (server spans) and outbox events (consumer spans) only."""

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if kind in (SpanKind.SERVER, SpanKind.CONSUMER):
            return ALWAYS_ON.should_sample(parent_context, trace_id, name, kind, attributes, links)
        return SamplingResult(Decision.DROP)

    def get_description(self) -> str:
        return "RequestsAndEvents"


class Tracing:
    """One process's tracer provider, and what it instruments."""

    def __init__(self, processor: SpanProcessor, *, service_name: str = DEFAULT_SERVICE_NAME) -> None:
        resource = Resource.create({SERVICE_NAME: service_name, SERVICE_VERSION: __version__})
        self.provider = TracerProvider(resource=resource, sampler=ParentBased(root=RequestsAndEvents()))
        self.provider.add_span_processor(processor)
        # Goodnight's own spans: one per outbox event applied (``observability.event_context``).
        self.tracer = self.provider.get_tracer("goodnight", __version__)
        self._instrumented_redis = False

    @classmethod
    def exporting_over_otlp(cls, environ: Mapping[str, str]) -> Tracing:
        """Batches of spans to the OTLP/HTTP endpoint the standard ``OTEL_EXPORTER_OTLP_*`` variables
        name (the exporter reads them itself: endpoint, headers, timeout, compression)."""
        service_name = environ.get("OTEL_SERVICE_NAME", "").strip() or DEFAULT_SERVICE_NAME
        return cls(BatchSpanProcessor(OTLPSpanExporter()), service_name=service_name)

    def instrument_app(self, app: FastAPI, *, excluded_paths: Iterable[str]) -> None:
        """A server span per request, except for ``excluded_paths`` (probes, metrics scrapes)."""
        FastAPIInstrumentor.instrument_app(
            app,
            tracer_provider=self.provider,
            excluded_urls=",".join(re.escape(path) + "$" for path in excluded_paths),
            # One span per request, not one more for every chunk of the body sent or received.
            exclude_spans=["receive", "send"],
        )

    def instrument_engine(self, engine: AsyncEngine) -> None:
        """A client span per SQL statement run on ``engine``."""
        tracer = self.provider.get_tracer(_SQLALCHEMY_SCOPE)
        # The pool-usage metric the instrumentation also keeps goes nowhere: Prometheus counts the pool.
        unused = NoOpMeter(_SQLALCHEMY_SCOPE).create_up_down_counter("db.client.connections.usage")
        EngineTracer(tracer, engine.sync_engine, unused)  # type: ignore[no-untyped-call]

    def instrument_redis(self) -> None:
        """A client span per Redis command or pipeline, for every Redis client of the process."""
        instrumentor = RedisInstrumentor()
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument(tracer_provider=self.provider)
            self._instrumented_redis = True

    def flush(self) -> None:
        """Export what is buffered now (blocks for up to the exporter's timeout)."""
        self.provider.force_flush()

    def shutdown(self) -> None:
        """Export what is still buffered and stop (blocks for up to the exporter's timeout)."""
        if self._instrumented_redis:
            RedisInstrumentor().uninstrument()
            self._instrumented_redis = False
        self.provider.shutdown()
