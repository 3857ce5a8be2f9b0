"""What each hot read route costs the API process: the app called in process, timed in process CPU.

    GOODNIGHT_DATABASE_URL=... GOODNIGHT_REDIS_URL=... GOODNIGHT_JWT_SECRET=... \\
    GOODNIGHT_EMBEDDED_WORKER=false GOODNIGHT_LOG_LEVEL=warning GOODNIGHT_RATE_LIMITS=off \\
    scripts/uv run --frozen --group bench python bench/route_cost.py --reader <id> [--light <id>]

Point it at a seeded dataset (a copy of the harness's template database and its Redis snapshot will do).
Each figure is microseconds of this process's CPU per request (the driver's work included, the database's
and Redis's own not), the best of several runs, so the noise of a shared machine mostly drops out. The
routes take turns, ``--rounds`` times, each keeping its best. It is the tool for measuring one change at a
time; ``bench/run.py`` measures throughput, latency and every process's CPU under load.
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Awaitable, Callable

import uvloop
from gnbench.asgi import call, cpu_us, get_scope

from goodnight.config import get_settings
from goodnight.main import create_app

FEED = "/api/v1/sleep_records/followings"


async def measure(
    reader: uuid.UUID, light: uuid.UUID | None, rounds: int, only: str | None, in_flight: int
) -> dict[str, float]:
    app = create_app(get_settings())
    async with app.router.lifespan_context(app):
        services = app.state.services
        token = services.tokens.issue(reader).token
        other = light or reader
        routes = {
            "GET /health": get_scope("/api/v1/health"),
            "GET /users/me": get_scope("/api/v1/users/me", token),
            "GET /users/{id}": get_scope(f"/api/v1/users/{other}", token),
            "GET /users/{id}/followers": get_scope(f"/api/v1/users/{other}/followers", token),
            "GET /users/{id}/followings": get_scope(f"/api/v1/users/{other}/followings", token),
            "GET /sleep_records (own)": get_scope("/api/v1/sleep_records", token),
            "GET feed page (heavy reader)": get_scope(FEED, token),
        }
        if light is not None:
            routes["GET feed page (light reader)"] = get_scope(FEED, services.tokens.issue(light).token)
        if only is not None:
            routes = {name: scope for name, scope in routes.items() if only in name or name == "GET /health"}
        timeline = services.timeline
        for scope in routes.values():  # the first reads may build timelines and load the celebrity snapshot
            for _ in range(3):
                await call(app, scope)
                if timeline is not None:
                    await timeline.reader.drain_background()
        declined = timeline.reader.declined if timeline is not None else 0
        best: dict[str, float] = {}
        for _ in range(rounds):
            for name, scope in routes.items():
                request: Callable[[], Awaitable[None]] = lambda scope=scope: call(app, scope)  # noqa: E731
                figure = await cpu_us(request, calls=1000, runs=2, in_flight=in_flight)
                best[name] = min(best.get(name, figure), figure)
        if timeline is not None and timeline.reader.declined != declined:
            raise SystemExit("some feed pages were answered from SQL: are the readers' timelines warm?")
        return best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reader", type=uuid.UUID, required=True, help="A heavy reader's user id.")
    parser.add_argument("--light", type=uuid.UUID, help="A light reader (whose profile is read too).")
    parser.add_argument("--rounds", type=int, default=3, help="Turns of every route (default 3).")
    parser.add_argument("--only", help="Only the routes whose name contains this (and /health, for scale).")
    parser.add_argument(
        "--in-flight",
        type=int,
        default=1,
        help="Requests in flight at once (default 1). Under load (try 32) a round trip to Redis or the "
        "database costs about half what it costs one request at a time (see gnbench.asgi.cpu_us).",
    )
    args = parser.parse_args()
    if args.in_flight < 1:
        parser.error("--in-flight takes 1 or more")
    figures = uvloop.run(measure(args.reader, args.light, args.rounds, args.only, args.in_flight))
    print("| route | API CPU per request (µs) |\n|---|---:|")
    for name, value in figures.items():
        print(f"| {name} | {value:.0f} |")


if __name__ == "__main__":
    main()
