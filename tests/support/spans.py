"""Finding spans among those an in-memory exporter collected."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind


def the_span(spans: Iterable[ReadableSpan], name: str, kind: SpanKind) -> ReadableSpan:
    found = [span for span in spans if span.name == name and span.kind is kind]
    assert len(found) == 1, f"expected one {kind.name} span {name!r}, got {[s.name for s in spans]}"
    return found[0]


def children_of(spans: Iterable[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    assert parent.context is not None
    return [
        span for span in spans if span.parent is not None and span.parent.span_id == parent.context.span_id
    ]


def span_ids(spans: Sequence[ReadableSpan]) -> set[int]:
    return {span.context.span_id for span in spans if span.context is not None}
