"""Tracing is on only when the standard OpenTelemetry variables name an OTLP endpoint."""

from __future__ import annotations

import pytest

from goodnight.observability.switch import start_tracing, tracing_requested


@pytest.mark.parametrize(
    ("environ", "requested"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ""}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"}, False),
    ],
    ids=["unset", "empty", "endpoint", "traces-endpoint", "sdk-disabled"],
)
def test_tracing_is_on_only_with_an_otlp_endpoint(environ: dict[str, str], requested: bool) -> None:
    assert tracing_requested(environ) is requested
    if not requested:
        assert start_tracing(environ) is None


@pytest.mark.parametrize(
    ("configured", "service_name"), [(None, "goodnight"), ("sleep-api", "sleep-api")], ids=["default", "set"]
)
def test_traces_are_named_by_otel_service_name(configured: str | None, service_name: str) -> None:
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    if configured is not None:
        environ["OTEL_SERVICE_NAME"] = configured

    tracing = start_tracing(environ)

    assert tracing is not None
    try:
        assert tracing.provider.resource.attributes["service.name"] == service_name
    finally:
        tracing.shutdown()
