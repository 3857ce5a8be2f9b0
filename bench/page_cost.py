"""Where a Redis feed page's CPU goes: the app called in process, timed in process CPU, not wall time.

    GOODNIGHT_DATABASE_URL=... GOODNIGHT_REDIS_URL=... GOODNIGHT_JWT_SECRET=... \\
    GOODNIGHT_EMBEDDED_WORKER=false GOODNIGHT_LOG_LEVEL=warning \\
    uv run python bench/page_cost.py --reader <user id with a warm timeline>

Point it at a seeded dataset (a copy of the harness's template database and its Redis snapshot will do).
Each figure is microseconds of this process's CPU per call, the best of five runs of 3,000 calls, so the
noise of a shared machine (other processes, waiting on Redis) mostly drops out. It prints a Markdown table:
``/health``, the feed page, the same page with the timeline replaced by a stub (what the framework, the
token check and the page assembly cost), and the page's two Redis calls next to a bare ``GET``.
"""

from __future__ import annotations

import argparse
import uuid

import uvloop
from gnbench.asgi import call, cpu_us, get_scope

from goodnight.config import get_settings
from goodnight.feed.pages import PageItem, PageRequest
from goodnight.feed.window import WINDOW
from goodnight.kit.clock import utcnow
from goodnight.main import create_app
from goodnight.timeline import keys


async def measure(reader_id: uuid.UUID) -> dict[str, float]:
    app = create_app(get_settings())
    async with app.router.lifespan_context(app):
        services = app.state.services
        if services.timeline is None:
            raise SystemExit("GOODNIGHT_REDIS_URL is not set: there is no Redis page to measure")
        reader, store = services.timeline.reader, services.timeline.store
        feed = get_scope("/api/v1/sleep_records/followings", services.tokens.issue(reader_id).token)
        health = get_scope("/api/v1/health")
        for _ in range(3):  # the first reads may build the timeline and load the celebrity snapshot
            await call(app, feed)
            await reader.drain_background()
        declined = reader.declined
        figures = {
            "GET /health": await cpu_us(lambda: call(app, health)),
            "GET feed page (Redis)": await cpu_us(lambda: call(app, feed)),
        }
        if reader.declined != declined:
            raise SystemExit("some pages were answered from SQL: is the reader's timeline warm?")
        now = utcnow()
        since = now - WINDOW
        page = await reader.page(PageRequest(reader_id, since, 11, None)) or []
        members = [item.position for item in page]
        first, last = keys.bucket_day(since), keys.bucket_day(now)
        read = store.pages.read
        figures["  its timeline read (MULTI/EXEC)"] = await cpu_us(
            lambda: read(reader_id, first, last, None, 15)
        )
        figures[f"  its MGET of {len(members)} renderings"] = await cpu_us(
            lambda: store.pages.renderings(members)
        )
        figures["  a bare redis-py GET, for scale"] = await cpu_us(lambda: store.redis.get("gn:none"))

        async def stub(request: PageRequest) -> list[PageItem]:
            return page

        reader.page = stub
        figures["GET feed page, timeline stubbed out"] = await cpu_us(lambda: call(app, feed))
        return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reader", type=uuid.UUID, required=True, help="A user id with a warm timeline.")
    args = parser.parse_args()
    figures = uvloop.run(measure(args.reader))
    print("| call | CPU per call (µs) |\n|---|---:|")
    for name, value in figures.items():
        print(f"| {name} | {value:.0f} |")


if __name__ == "__main__":
    main()
