from __future__ import annotations

import httpx

from goodnight.main import create_app
from tests.support.databases import settings_for
from tests.support.envelope import assert_error
from tests.support.redis_server import free_port


async def test_liveness(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readiness_without_redis(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "redis": "disabled", "outbox": None}


async def test_readiness_with_redis_reports_the_backlog(timeline_client: httpx.AsyncClient) -> None:
    body = (await timeline_client.get("/health/ready")).json()
    assert body["status"] == "ok"
    assert body["redis"] == "ok"
    assert body["outbox"] == {"pending": 0, "in_flight": 0, "dead": 0, "oldest_age_seconds": None}


async def test_readiness_is_503_when_the_database_is_down() -> None:
    nowhere = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/goodnight"
    app = create_app(settings_for(nowhere))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver/api/v1") as client:
            error = assert_error(await client.get("/health/ready"), 503, "unavailable")
            assert error["details"] == {"database": "down", "redis": "disabled"}
            # Liveness does not depend on the database.
            assert (await client.get("/health")).status_code == 200
