"""A real Prometheus scrapes a real ``goodnight serve --workers 2`` and a ``goodnight worker``: the request
count it finds is the number of requests sent, added up over both workers, and the worker's series arrive
from its own port. The scrapes carry the bearer token, as an operator's Prometheus would."""

from __future__ import annotations

import asyncio
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import redis
from prometheus_client.multiprocess import MultiProcessCollector

from goodnight.migrate import upgrade_to_head
from tests.support import databases
from tests.support.api import PASSWORD
from tests.support.processes import clean_env, free_port, is_listening, serving
from tests.support.prometheus import Prometheus, prometheus, scrape_job
from tests.support.redis_server import RedisServer
from tests.support.workers import WorkerProcess, worker_process

ROUTE = "/api/v1/users/me"
SERIES = f'goodnight_http_requests_total{{route="{ROUTE}",status="401"}}'
BATCH = 24
DEADLINE_S = 20.0


def counts_per_process(metrics_dir: Path) -> dict[str, float]:
    """What each worker process counted for ROUTE, read from its own file (the pid is in the file name)."""
    counts: dict[str, float] = {}
    for path in metrics_dir.glob("counter_*.db"):
        for family in MultiProcessCollector.merge([str(path)]):
            for sample in family.samples:
                if sample.name == "goodnight_http_requests_total" and sample.labels.get("route") == ROUTE:
                    counts[path.stem] = counts.get(path.stem, 0.0) + sample.value
    return counts


def send_batch(base_url: str) -> int:
    """BATCH requests on fresh connections, several at once, so the workers share them."""

    def one(_: int) -> None:
        response = httpx.get(f"{base_url}{ROUTE}", headers={"Connection": "close"}, timeout=10.0)
        assert response.status_code == 401, response.text

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(one, range(BATCH)))
    return BATCH


def wait_for(server: Prometheus, expression: str, expected: float) -> float | None:
    deadline = time.monotonic() + DEADLINE_S
    found = server.value(expression)
    while found != expected and time.monotonic() < deadline:
        time.sleep(0.25)
        found = server.value(expression)
    return found


def wait_until_listening(worker: WorkerProcess, port: int) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not is_listening(port):
        assert worker.alive(), worker.log()
        assert time.monotonic() < deadline, worker.log()
        time.sleep(0.1)


def clock_a_night(api_url: str) -> None:
    """Two users, a follow and a completed night: outbox events for the worker to apply."""
    with httpx.Client(base_url=api_url, timeout=10.0) as http:
        tokens = []
        for _ in range(2):
            username = f"p{secrets.token_hex(5)}"
            created = http.post("/users", json={"username": username, "password": PASSWORD})
            assert created.status_code == 201, created.text
            login = http.post("/auth/login", json={"username": username, "password": PASSWORD})
            tokens.append(({"Authorization": f"Bearer {login.json()['token']}"}, created.json()["id"]))
        (reader, _), (author, author_id) = tokens
        assert http.post(f"/socials/follow/{author_id}", headers=reader).status_code == 201
        assert http.post("/sleep_records/clock_in", headers=author).status_code == 201
        assert http.post("/sleep_records/clock_out", headers=author).status_code == 200


def test_prometheus_sums_the_workers_and_scrapes_the_outbox_worker(
    tmp_path: Path, empty_postgres: databases.TestDatabase, redis_server: RedisServer
) -> None:
    with redis.Redis.from_url(redis_server.url) as connection:
        connection.flushall()
    token = secrets.token_urlsafe(32)
    scratch = tmp_path / "tmp"  # where serve makes its private metrics folder
    scratch.mkdir()
    env = clean_env(
        GOODNIGHT_DATABASE_URL=empty_postgres.url,
        GOODNIGHT_REDIS_URL=redis_server.url,
        GOODNIGHT_EMBEDDED_WORKER="0",
        GOODNIGHT_METRICS_TOKEN=token,
        TMPDIR=str(scratch),
    )
    workdir = tmp_path / "app"
    workdir.mkdir()
    # Migrated here, so the worker and the server can start side by side (each takes seconds to start).
    asyncio.run(upgrade_to_head(databases.settings_for(empty_postgres.url)))
    worker_port = free_port()
    with (
        worker_process(workdir, env, "--metrics-port", str(worker_port)) as worker,
        serving(workdir, env, "--workers", "2", "--no-migrate") as server,
    ):
        (metrics_dir,) = scratch.glob("goodnight-metrics-*")
        wait_until_listening(worker, worker_port)
        jobs = [scrape_job("api", server.port, token), scrape_job("worker", worker_port, token)]
        with prometheus(tmp_path / "prometheus", jobs) as scraper:
            sent = send_batch(server.base_url)
            # Keep sending until both workers have counted some: then the sum is over both.
            while len([count for count in counts_per_process(metrics_dir).values() if count]) < 2:
                assert sent < 20 * BATCH, counts_per_process(metrics_dir)
                sent += send_batch(server.base_url)
            assert wait_for(scraper, f"sum({SERIES})", sent) == sent, scraper.query("up")
            assert sum(counts_per_process(metrics_dir).values()) == sent

            clock_a_night(server.api_url)
            applied = 'sum(goodnight_outbox_processed_total{job="worker",outcome="ok"})'
            assert wait_for(scraper, applied, 2) == 2, worker.log()
            assert scraper.value('sum(up{job=~"api|worker"})') == 2
    # The private folder goes with the server.
    assert not metrics_dir.exists()
