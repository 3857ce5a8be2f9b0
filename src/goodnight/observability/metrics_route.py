"""``GET /metrics`` on the API server: every worker's series, in the Prometheus text format.

Left out of the OpenAPI document (it is for operators, not API clients), never rate limited and never
refused by the in-flight cap (``main`` exempts it like the health probes): an overloaded server is exactly
when its metrics matter.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response

from goodnight.config import Settings
from goodnight.observability.access import MetricsAccess
from goodnight.observability.exposition import CONTENT_TYPE, exposition

METRICS_PATH = "/metrics"


def metrics_router(settings: Settings) -> APIRouter:
    access = MetricsAccess.from_settings(settings)
    router = APIRouter()

    @router.get(METRICS_PATH, include_in_schema=False)
    async def metrics(request: Request) -> Response:
        client = request.scope.get("client")
        access.check(request.scope["headers"], client[0] if client else None)
        return Response(await asyncio.to_thread(exposition), media_type=CONTENT_TYPE)

    return router
