"""Whether this process traces, read from the standard OpenTelemetry variables without importing the SDK.

Without an OTLP endpoint nothing of OpenTelemetry's SDK or instrumentations is imported or installed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from goodnight.observability.tracing import Tracing

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def tracing_requested(environ: Mapping[str, str]) -> bool:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(environ.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def start_tracing(environ: Mapping[str, str] = os.environ) -> Tracing | None:
    """This process's tracing, exporting over OTLP/HTTP, when an endpoint is configured; else None."""
    if not tracing_requested(environ):
        return None
    # Here, not at the top: the SDK and the instrumentations take about a second to import.
    from goodnight.observability.tracing import Tracing

    return Tracing.exporting_over_otlp(environ)
