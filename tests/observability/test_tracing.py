"""Traces in process: the app's real instrumentation exporting to the SDK's in-memory exporter, on PostgreSQL
and a private Redis, with the outbox drained by hand so every step is deterministic."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import pytest_asyncio
from fastapi import FastAPI
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode, format_span_id, format_trace_id

from goodnight.kit.request_context import request_id_var
from goodnight.observability.tracing import Tracing
from goodnight.timeline.runtime import Timeline
from tests.support.api import Api, Member
from tests.support.apps import client_for, running, timeline_of, timeline_settings
from tests.support.databases import TestDatabase, truncate
from tests.support.logs import rendered_lines
from tests.support.outbox import outbox_rows
from tests.support.redis_server import RedisServer
from tests.support.spans import children_of, the_span
from tests.support.times import ago, iso
from tests.timeline.test_timeline import warm

pytestmark = pytest.mark.parametrize("database", ["postgresql"], indirect=True)
CLOCK_OUT = "POST /api/v1/sleep_records/clock_out"


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture(scope="module")
def tracing(exporter: InMemorySpanExporter) -> Iterator[Tracing]:
    # Spans exported as they end, not in batches: the test reads them right after each step.
    traced = Tracing(SimpleSpanProcessor(exporter))
    yield traced
    traced.shutdown()


@pytest_asyncio.fixture(scope="module")
async def traced_app(
    database: TestDatabase, redis_server: RedisServer, tracing: Tracing
) -> AsyncIterator[FastAPI]:
    settings = timeline_settings(database.url, redis_server.url, timeline_max_lag_seconds=300)
    async with running(settings, tracing=tracing) as app:
        yield app


@pytest.fixture
def timeline(traced_app: FastAPI) -> Timeline:
    return timeline_of(traced_app)


@pytest_asyncio.fixture
async def api(traced_app: FastAPI, timeline: Timeline, exporter: InMemorySpanExporter) -> AsyncIterator[Api]:
    await truncate(traced_app.state.services.database.engine)
    await timeline.redis.flushall()
    async with client_for(traced_app) as http:
        exporter.clear()
        yield Api(http)


@contextmanager
def request_id(value: str) -> Iterator[dict[str, str]]:
    """Requests sent meanwhile run under this request id (the request middleware sets ``request_id_var``
    from ``X-Request-ID``; set here as well, the test does not depend on which of the two runs first)."""
    token = request_id_var.set(value)
    try:
        yield {"X-Request-ID": value}
    finally:
        request_id_var.reset(token)


async def a_night(api: Api, sleeper: Member, request: str) -> None:
    with request_id(request) as headers:
        opened = await api.client.post(
            "/sleep_records/clock_in", json={"clocked_in_at": iso(ago(hours=8))}, headers=sleeper.headers
        )
        assert opened.status_code == 201, opened.text
        closed = await api.client.post("/sleep_records/clock_out", headers=sleeper.headers | headers)
        assert closed.status_code == 200, closed.text


def ids(span: ReadableSpan) -> tuple[str, str]:
    assert span.context is not None
    return format_trace_id(span.context.trace_id), format_span_id(span.context.span_id)


def attribute(span: ReadableSpan, key: str) -> Any:
    return (span.attributes or {}).get(key)


async def test_a_request_is_a_server_span_over_its_statements_and_its_log_line(
    api: Api, exporter: InMemorySpanExporter
) -> None:
    with rendered_lines(trace_ids=True) as lines:
        await api.register("alice")

    spans = exporter.get_finished_spans()
    signup = the_span(spans, "POST /api/v1/users", SpanKind.SERVER)
    assert attribute(signup, "http.route") == "/api/v1/users"
    statements = [span for span in children_of(spans, signup) if attribute(span, "db.system") == "postgresql"]
    assert any(span.name.startswith("INSERT") for span in statements), [span.name for span in statements]
    assert {span.kind for span in statements} == {SpanKind.CLIENT}

    trace_id, span_id = ids(signup)
    (line,) = [entry for entry in map(json.loads, lines) if entry.get("path") == "/api/v1/users"]
    assert (line["trace_id"], line["span_id"]) == (trace_id, span_id)


async def test_probes_and_background_polls_start_no_trace(
    api: Api, timeline: Timeline, exporter: InMemorySpanExporter
) -> None:
    assert (await api.client.get("/health")).status_code == 200
    assert (await api.client.get("/health/ready")).status_code == 200
    assert await timeline.worker.drain() == 0  # a poll that finds nothing: statements outside any request

    assert exporter.get_finished_spans() == ()


async def test_a_clock_outs_fanout_in_the_worker_continues_and_links_to_the_request(
    api: Api, timeline: Timeline, exporter: InMemorySpanExporter
) -> None:
    alice, bob = await api.register(), await api.register()
    await api.follow(alice, bob)
    await timeline.worker.drain()
    await a_night(api, bob, "night-42")

    clock_out = the_span(exporter.get_finished_spans(), CLOCK_OUT, SpanKind.SERVER)
    trace_id, span_id = ids(clock_out)
    (written,) = [row for row in await outbox_rows(timeline.worker.database) if row.kind == "sleep_completed"]
    assert written.context is not None
    assert written.context.keys() == {"request_id", "traceparent"}
    assert written.context["request_id"] == "night-42"
    assert written.context["traceparent"].startswith(f"00-{trace_id}-{span_id}-")  # then the trace flags

    assert await timeline.worker.drain() == 1
    spans = exporter.get_finished_spans()
    fanout = the_span(spans, "outbox sleep_completed", SpanKind.CONSUMER)
    assert ids(fanout)[0] == trace_id
    assert fanout.parent is not None
    assert format_span_id(fanout.parent.span_id) == span_id
    assert [format_span_id(link.context.span_id) for link in fanout.links] == [span_id]
    assert attribute(fanout, "goodnight.outbox.kind") == "sleep_completed"
    # What the fanout did is inside its span: the statements that re-read the record, the Redis writes.
    systems = {attribute(span, "db.system") for span in children_of(spans, fanout)}
    assert {"postgresql", "redis"} <= systems


async def test_a_feed_page_from_redis_records_its_two_redis_reads(
    api: Api, timeline: Timeline, exporter: InMemorySpanExporter
) -> None:
    """The feed's lean Redis client records no spans: a traced process reads its pages through redis-py."""
    assert timeline.store.pages.lean is None
    alice, bob = await api.register(), await api.register()
    await api.follow(alice, bob)
    await a_night(api, bob, "night-45")
    await timeline.worker.drain()
    await warm(api, timeline, alice)
    served = timeline.reader.served
    exporter.clear()

    assert (await api.feed(alice)).status_code == 200
    assert timeline.reader.served == served + 1
    spans = exporter.get_finished_spans()
    page = the_span(spans, "GET /api/v1/sleep_records/followings", SpanKind.SERVER)
    commands = [span.name for span in children_of(spans, page) if attribute(span, "db.system") == "redis"]
    # The timeline read is one transaction (a pipeline span names its commands), then the renderings.
    assert any(name.startswith("HMGET ZRANGE") for name in commands), commands
    assert "MGET" in commands, commands


async def test_a_failing_event_is_logged_under_the_request_that_wrote_it(
    api: Api, timeline: Timeline, exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = await api.register(), await api.register()
    await api.follow(alice, bob)
    await timeline.worker.drain()
    await a_night(api, bob, "night-43")

    async def broken(kind: str, payload: dict[str, Any]) -> None:
        raise RuntimeError("the fanout broke")

    monkeypatch.setattr(timeline.worker, "apply", broken)
    with rendered_lines(trace_ids=True) as lines:
        await timeline.worker.drain_once()

    fanout = the_span(exporter.get_finished_spans(), "outbox sleep_completed", SpanKind.CONSUMER)
    assert fanout.status.status_code is StatusCode.ERROR
    (failure,) = map(json.loads, lines)
    assert failure["level"] == "warning"
    assert failure["event_kind"] == "sleep_completed"
    assert failure["request_id"] == "night-43"
    assert (failure["trace_id"], failure["span_id"]) == ids(fanout)


async def test_without_tracing_nothing_is_instrumented_and_events_carry_only_the_request_id(
    timeline_app: FastAPI, timeline_api: Api
) -> None:
    assert not getattr(timeline_app, "_is_instrumented_by_opentelemetry", False)
    assert timeline_of(timeline_app).worker.tracer is None
    bob = await timeline_api.register()

    with rendered_lines() as lines:
        await a_night(timeline_api, bob, "night-44")

    (written,) = await outbox_rows(timeline_of(timeline_app).worker.database)
    assert written.context == {"request_id": "night-44"}
    assert not [line for line in lines if "trace_id" in line]
