"""The application factory: ``create_app()`` wires routers, errors, middleware, docs and start-up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute

from goodnight import __version__, health
from goodnight.api_docs import DOCS_PATH, mount_docs
from goodnight.auth.passwords import Passwords
from goodnight.auth.revocation_feed import RevocationFeed
from goodnight.auth.router import router as auth_router
from goodnight.auth.tokens import Tokens
from goodnight.config import Settings, get_settings
from goodnight.db import Database
from goodnight.deps import Services
from goodnight.edge.headers import CorsMiddleware, SecurityHeadersMiddleware
from goodnight.edge.inflight import InFlightCap
from goodnight.errors import install_error_handlers
from goodnight.feed.router import FAST_LANES as FEED_LANES
from goodnight.feed.router import router as feed_router
from goodnight.jobs.handlers import Handlers
from goodnight.jobs.runtime import Jobs
from goodnight.kit.fast_lane import FastLanes
from goodnight.kit.gc_tuning import freeze_after_start_up
from goodnight.logging_setup import configure_logging
from goodnight.middleware import RequestContextMiddleware
from goodnight.observability.lifecycle import ProcessMetrics
from goodnight.observability.metrics import HttpRecorder
from goodnight.observability.metrics_route import METRICS_PATH, metrics_router
from goodnight.observability.switch import start_tracing
from goodnight.ratelimit.client_ip import ClientAddress, parse_networks
from goodnight.ratelimit.limiter import RateLimiter
from goodnight.ratelimit.middleware import RateLimitMiddleware
from goodnight.replicas.fallback import ReplicaFallbackMiddleware
from goodnight.replicas.pool import SAMPLE_SECONDS, ReplicaSet
from goodnight.replicas.positions import WritePositions
from goodnight.replicas.routing import ReadRouting
from goodnight.sleep.router import router as sleep_router
from goodnight.sleep.router import summary_router as sleep_summary_router
from goodnight.socials.router import FAST_LANES as SOCIALS_LANES
from goodnight.socials.router import router as socials_router
from goodnight.timeline.runtime import Timeline, TimelineWriter
from goodnight.users.profiles import CachedProfiles, ProfileVersions
from goodnight.users.router import FAST_LANES as USERS_LANES
from goodnight.users.router import public_router as users_public_router
from goodnight.users.router import router as users_router

if TYPE_CHECKING:
    from goodnight.observability.tracing import Tracing

API_PREFIX = "/api/v1"
# Paths never traced: orchestrators and scrapers poll them all day.
UNTRACED_PATHS = ("/metrics",)


def build_services(settings: Settings, *, traced: bool = False) -> Services:
    """The API process's services. The consumers of the outbox register their handlers here; with none (no
    Redis), services write no events at all. ``traced``: the process records traces, whose Redis spans come
    from redis-py's instrumentation, so the feed's reads stay on redis-py too."""
    database = Database(settings)
    revocations = RevocationFeed(settings)
    handlers = Handlers()
    timeline = None
    profiles = None
    if settings.redis_url:
        timeline = Timeline.build(settings, database, lean_reads=not traced)
        versions = ProfileVersions(timeline.redis, timeline.lean)
        # First: a profile's bump, one Redis round trip, need not wait for the timelines' heavier handlers.
        versions.subscribe(handlers)
        timeline.subscribe(handlers)
        # Not beside replicas: a profile loaded from a replica behind its owner's last write would be kept
        # under the version that write set, and served to the owner.
        profiles = CachedProfiles(versions) if not settings.replica_url_list else None
    return Services(
        settings=settings,
        database=database,
        passwords=Passwords(settings),
        tokens=Tokens(settings.resolved_jwt_secret(), settings.jwt_ttl_seconds, revocations.revoked),
        revocations=revocations,
        rate_limiter=RateLimiter.build(settings),
        jobs=Jobs(database, settings, handlers, embedded=settings.embedded_worker),
        fast_feed=timeline.reader if timeline is not None else None,
        timeline=timeline,
        profiles=profiles,
        read_routing=_read_routing(settings, database, timeline),
    )


def _read_routing(settings: Settings, database: Database, timeline: Timeline | None) -> ReadRouting | None:
    """Reads routed to the replicas, plugged into the database; None when no replica is configured."""
    if not settings.replica_url_list:
        return None
    replicas = ReplicaSet(settings, database.engine)
    # Users' write positions are shared through the timelines' Redis, when there is one.
    redis = timeline.redis if timeline is not None else None
    positions = WritePositions(redis, ttl_seconds=replicas.max_lag + 4 * SAMPLE_SECONDS)
    database.routing = ReadRouting(database, replicas, positions)
    return database.routing


async def _start_replicas(routing: ReadRouting, database: Database) -> None:
    """First, since it may refuse to start (a primary whose replicas cannot be followed): then nothing
    else has started yet, and the connections it opened are closed."""
    try:
        await routing.replicas.start()
    except BaseException:
        await routing.replicas.close()
        await database.dispose()
        raise


@asynccontextmanager
async def outbox_consumers(settings: Settings, database: Database, handlers: Handlers) -> AsyncIterator[None]:
    """A ``goodnight worker`` process's consumers of the outbox: the timelines' fanout, when Redis is set."""
    if not settings.redis_url:
        yield
        return
    timeline = TimelineWriter.build(settings, database)
    ProfileVersions(timeline.redis).subscribe(handlers)
    timeline.subscribe(handlers)
    try:
        yield
    finally:
        await timeline.close()


def create_served_app() -> FastAPI:
    """The app as ``goodnight serve`` runs it in each worker: its start-up objects are frozen out of the
    garbage collector's way once it is ready (see ``kit.gc_tuning``; not for apps built in tests, which come
    and go within one process)."""
    return create_app(serving=True)


def create_app(
    settings: Settings | None = None, *, tracing: Tracing | None = None, serving: bool = False
) -> FastAPI:
    """The app. ``tracing`` defaults to what the ``OTEL_*`` variables ask for (nothing when unset)."""
    settings = settings or get_settings()
    owns_tracing = tracing is None
    tracing = tracing or start_tracing()
    configure_logging(settings.env, trace_ids=tracing is not None)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = build_services(settings, traced=tracing is not None)
        app.state.services = services
        if tracing is not None:
            _trace_services(tracing, services)
        if services.read_routing is not None:
            await _start_replicas(services.read_routing, services.database)
        # Before serving: a process must know every revocation in force before it accepts a token.
        await services.revocations.start()
        services.jobs.start()
        timeline = services.timeline
        metrics = ProcessMetrics.start(
            settings, services.database, outbox=timeline is not None, breaker_open=feed_breaker_open(timeline)
        )
        if serving:
            freeze_after_start_up()
        try:
            yield
        finally:
            await metrics.stop()
            await services.jobs.close()
            if services.timeline is not None:
                await services.timeline.close()
            await services.revocations.close()
            await services.rate_limiter.close()
            if services.read_routing is not None:
                await services.read_routing.replicas.close()
            await services.database.dispose()
            if tracing is not None:
                # Export what is buffered before the process exits; a tracing handed in is its caller's.
                await asyncio.to_thread(tracing.shutdown if owns_tracing else tracing.flush)

    app = FastAPI(
        title="Goodnight API",
        version=__version__,
        summary="Clock in when you go to bed, clock out when you wake, and see how your friends slept.",
        lifespan=lifespan,
        openapi_url="/openapi.json",
        docs_url=None,
        redoc_url=None,
        # FastAPI's own OpenTelemetry layer is off: traces come from ``observability.tracing`` (only when the
        # OTEL_* variables ask for them), and the native layer asked the global providers on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_error_handlers(app)
    _install_middleware(app, settings)
    if tracing is not None:
        tracing.instrument_app(app, excluded_paths=[*_probe_paths(), *UNTRACED_PATHS])

    api = APIRouter(prefix=API_PREFIX)
    api.include_router(health.router)
    # Routes are matched in order: the feed is most of the traffic, and its /sleep_records/followings must
    # come before /sleep_records/{record_id}.
    api.include_router(feed_router)
    api.include_router(users_public_router)
    api.include_router(auth_router)
    api.include_router(users_router)
    api.include_router(socials_router)
    api.include_router(sleep_router)
    api.include_router(sleep_summary_router)
    app.include_router(api)
    if settings.metrics:
        app.include_router(metrics_router(settings))
    mount_docs(app)
    _install_fast_lanes(app)
    return app


def _install_fast_lanes(app: FastAPI) -> None:
    """The hottest reads' fast lanes (``kit.fast_lane``), around the router: inside the exception handlers
    and every middleware, as the routes they stand in for are. Starlette's ``Router`` calls its
    ``middleware_stack``, which FastAPI does not otherwise use."""
    lanes = [lane.under(API_PREFIX) for lane in (*FEED_LANES, *USERS_LANES, *SOCIALS_LANES)]
    app.router.middleware_stack = FastLanes(app.router.middleware_stack, lanes)


def feed_breaker_open(timeline: Timeline | None) -> Callable[[], bool] | None:
    """Whether this process's feed reader is skipping Redis right now, for the breaker gauge (looked up each
    time: tests swap the breaker)."""
    if timeline is None:
        return None
    return lambda: not timeline.reader.gate.breaker.allows()


def _probe_paths() -> list[str]:
    return [API_PREFIX + route.path for route in health.router.routes if isinstance(route, APIRoute)]


def _trace_services(tracing: Tracing, services: Services) -> None:
    tracing.instrument_engine(services.database.engine)
    for replica in services.read_routing.replicas.replicas if services.read_routing is not None else []:
        tracing.instrument_engine(replica.engine)
    tracing.instrument_redis()
    services.jobs.worker.tracer = tracing.tracer


def _install_middleware(app: FastAPI, settings: Settings) -> None:
    """The middleware stack, innermost first: each ``add_middleware`` wraps everything added before it.

    From the outside in: security headers go on every response, even the edge's own refusals; request ids,
    the access log and the body limit see every request; CORS answers preflights; then the in-flight cap
    refuses overload before any work is done; then rate limits; then the routes.
    """
    # Health probes are never refused: an orchestrator that sees a busy process fail its probes restarts it
    # or takes it out of rotation, which moves its load onto the others and spreads the overload. Nor are
    # the metrics: an overloaded server is when they matter most.
    probes = [*_probe_paths(), METRICS_PATH]
    if settings.replica_url_list:
        app.add_middleware(ReplicaFallbackMiddleware)
    if settings.rate_limits:
        # Nor are the docs.
        app.add_middleware(
            RateLimitMiddleware,
            api_prefix=API_PREFIX,
            exempt_paths=[*probes, "/openapi.json", DOCS_PATH],
            exempt_prefixes=[f"{DOCS_PATH}/"],
        )
    app.add_middleware(InFlightCap, limit=settings.max_requests_in_flight, exempt_paths=probes)
    if settings.cors_origin_list:
        app.add_middleware(CorsMiddleware, origins=settings.cors_origin_list)
    app.add_middleware(
        RequestContextMiddleware,
        client_address=ClientAddress(parse_networks(settings.trusted_proxy_list)),
        quiet_paths=probes,
        metrics=HttpRecorder() if settings.metrics else None,
    )
    app.add_middleware(SecurityHeadersMiddleware)
