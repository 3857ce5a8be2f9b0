"""The ``goodnight`` command line."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
import uvicorn
from pydantic import ValidationError

from goodnight.cli_database import require_usable, uses_database
from goodnight.config import ConfigurationError, Settings, get_settings
from goodnight.observability.multiprocess import use_private_directory

logger = logging.getLogger("goodnight.cli")
app = typer.Typer(help="Goodnight: a social sleep-tracking API.", no_args_is_help=True, add_completion=False)


def _settings() -> Settings:
    try:
        return get_settings()
    except (ConfigurationError, ValidationError) as exc:
        typer.secho(f"configuration error: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from exc


@app.command()
@uses_database(needs_schema=False)
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    migrate: Annotated[bool, typer.Option(help="Apply pending database migrations before serving.")] = True,
) -> None:
    """Run the HTTP API (creating or migrating the database first)."""
    settings = _settings()
    from goodnight.logging_setup import configure_logging, uvicorn_log_config

    # Every line of a server goes through our logging, this supervisor's included (JSON in production).
    configure_logging(settings.env)
    # Resolve the JWT secret before workers fork, so all of them share the one generated in development.
    settings.resolved_jwt_secret()
    if migrate:
        _migrate(settings, report=logger.info)
    from goodnight.edge.protocol import KEEP_ALIVE_TIMEOUT_SECONDS, GuardedHttpToolsProtocol

    # Always our protocol, never what uvicorn's "auto" finds installed: it carries the limits on request
    # heads. By name, not as a class: uvicorn pickles its config into each worker, and unpickling a class
    # imports the app's modules before the worker can answer the supervisor's health check.
    protocol = f"{GuardedHttpToolsProtocol.__module__}:{GuardedHttpToolsProtocol.__qualname__}"
    use_private_directory(workers if settings.metrics else 1)  # before the workers start: they inherit it
    uvicorn.run(
        "goodnight.main:create_served_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        http=protocol,
        timeout_keep_alive=KEEP_ALIVE_TIMEOUT_SECONDS,
        # A new worker re-imports this CLI before it can answer the supervisor's health check: seconds on a
        # busy machine, where uvicorn's default of 5 s kills every worker before it starts, again and again.
        timeout_worker_healthcheck=30,
        # Applied again in each worker process it starts; uvicorn's access log stays off (see logging_setup).
        log_config=uvicorn_log_config(settings.env),
        access_log=False,
        proxy_headers=False,  # X-Forwarded-For is believed only from GOODNIGHT_TRUSTED_PROXIES
        server_header=False,
    )


@app.command("migrate")
@uses_database(needs_schema=False)
def migrate_command() -> None:
    """Apply database migrations to GOODNIGHT_DATABASE_URL."""
    _migrate(_settings())


def _migrate(settings: Settings, report: Callable[[str], object] = typer.echo) -> None:
    from goodnight.migrate import migrate

    revision = migrate(settings)
    report(f"database is at revision {revision}")


MAX_EVENT_ID = 2**63 - 1  # outbox ids are BIGINT: a larger one is a typo, not a database error
outbox_app = typer.Typer(help="Inspect and repair the outbox of background work.", no_args_is_help=True)
app.add_typer(outbox_app, name="outbox")


@app.command()
@uses_database()
def worker(
    concurrency: Annotated[int, typer.Option(min=1, help="Workers in this process.")] = 1,
    metrics_port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Serve /metrics on this TCP port.")
    ] = None,
    metrics_host: Annotated[
        str, typer.Option(help="Interface for --metrics-port (others need GOODNIGHT_METRICS_TOKEN).")
    ] = "127.0.0.1",
) -> None:
    """Drain the outbox (Redis timeline fanout). Run any number, on any number of machines."""
    settings = _settings()
    if not settings.redis_url:
        typer.secho("GOODNIGHT_REDIS_URL is not set: there is no background work to do.", err=True)
        raise typer.Exit(2)
    if metrics_port is not None and not settings.metrics:
        typer.secho("--metrics-port: metrics are switched off (GOODNIGHT_METRICS=off).", err=True)
        raise typer.Exit(2)
    from goodnight.jobs.runner import run_workers
    from goodnight.main import outbox_consumers

    # Once running, a worker rides out database outages; one that could never work stops at once instead.
    asyncio.run(require_usable(settings))
    metrics_at = None if metrics_port is None else (metrics_host, metrics_port)
    asyncio.run(run_workers(settings, concurrency, outbox_consumers, metrics_at))


@outbox_app.command("status")
@uses_database()
def outbox_status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Pending, in-flight and dead events, and the age of the oldest one."""
    from goodnight.jobs.runner import read_status

    current = asyncio.run(read_status(_settings()))
    if as_json:
        typer.echo(json.dumps(dataclasses.asdict(current)))
        return
    oldest = "-" if current.oldest_age_seconds is None else f"{current.oldest_age_seconds:.1f}s"
    typer.echo(f"pending    {current.pending}\nin flight  {current.in_flight}\ndead       {current.dead}")
    typer.echo(f"oldest     {oldest}")


@outbox_app.command("dead")
@uses_database()
def outbox_dead(
    limit: Annotated[
        int, typer.Option(min=1, max=100_000, help="Show at most this many, the most recently parked first.")
    ] = 50,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON document instead of a table.")
    ] = False,
) -> None:
    """Events parked as dead after their last attempt failed, with the error that parked them."""
    from goodnight.jobs.dead_report import dead_json, print_dead_table
    from goodnight.jobs.runner import list_dead

    total, events = asyncio.run(list_dead(_settings(), limit))
    if as_json:
        typer.echo(dead_json(total, events))
    else:
        print_dead_table(total, events)


@outbox_app.command("retry-dead")
@uses_database()
def outbox_retry_dead(
    event_id: Annotated[
        int | None,
        typer.Option(
            "--id", min=1, max=MAX_EVENT_ID, help="Re-queue only this event (see goodnight outbox dead)."
        ),
    ] = None,
) -> None:
    """Give events parked as dead a fresh set of attempts: all of them, or the one given with --id."""
    from goodnight.jobs import runner
    from goodnight.jobs.outbox import RetryOutcome

    settings = _settings()
    if event_id is None:
        count = asyncio.run(runner.retry_dead(settings))
        typer.echo(f"{count} dead event(s) queued again")
        return
    outcome = asyncio.run(runner.retry_dead_event(settings, event_id))
    if outcome is RetryOutcome.QUEUED:
        typer.echo(f"event {event_id} queued again")
        return
    if outcome is RetryOutcome.NOT_FOUND:
        problem = f"no outbox event has id {event_id}"
    else:
        problem = (
            f"outbox event {event_id} is not dead (it is pending or in flight); only dead events are retried"
        )
    typer.secho(problem, err=True, fg=typer.colors.RED)
    raise typer.Exit(1)


@app.command()
@uses_database(needs_schema=False)
def seed(
    users: Annotated[int, typer.Option(min=1, help="Users to create: user1 ... userN.")],
    password: Annotated[str, typer.Option(help="The password every generated user shares (hashed once).")],
    avg_followings: Annotated[float, typer.Option(min=0, help="Mean followings per user.")] = 20,
    celebrities: Annotated[
        int, typer.Option(min=0, help="Users guaranteed above GOODNIGHT_CELEBRITY_THRESHOLD followers.")
    ] = 5,
    days: Annotated[int, typer.Option(min=1, max=365, help="Nights of sleep records per user.")] = 8,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same data.")] = 1,
    summary_json: Annotated[
        Path | None, typer.Option(help="Write what a load test needs (users to log in as, counts) here.")
    ] = None,
    active_share: Annotated[
        float,
        typer.Option(
            min=0, max=1, help="Share of users seen within GOODNIGHT_ACTIVE_DAYS (they get timelines)."
        ),
    ] = 0.25,
    now: Annotated[
        datetime | None,
        typer.Option(help="Anchor the data at this UTC time instead of the current hour (exact reruns)."),
    ] = None,
    clear_redis: Annotated[
        bool, typer.Option(help="Delete existing gn:* keys from Redis first (never FLUSHALL).")
    ] = False,
) -> None:
    """Fill an empty database (and Redis, when configured) with a deterministic dataset for load tests."""
    from goodnight.seed import SeedOptions, SeedRefused, run_seed, write_summary

    settings = _settings()
    options = SeedOptions(
        users=users,
        avg_followings=avg_followings,
        celebrities=celebrities,
        days=days,
        password=password,
        seed=seed,
        active_share=active_share,
        now=now.replace(tzinfo=now.tzinfo or UTC) if now is not None else None,
        clear_redis=clear_redis,
    )
    try:
        summary = asyncio.run(run_seed(settings, options))
    except SeedRefused as exc:
        typer.secho(f"goodnight seed: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from exc
    if summary_json is not None:
        write_summary(summary, summary_json)
    phases = ", ".join(f"{name} {phase['seconds']:.1f}s" for name, phase in summary["phases"].items())
    typer.echo(
        f"seeded {summary['users']} users, {summary['follows']} follows, "
        f"{summary['sleep_records']} sleep records "
        f"in {summary['total_seconds']:.1f}s ({phases}); peak RSS {summary['peak_rss_mb']:.0f} MB"
    )


@app.command()
def openapi(
    output: Annotated[Path | None, typer.Option(help="Write to this file instead of stdout.")] = None,
) -> None:
    """Print the OpenAPI document (the committed openapi.json is generated with this)."""
    from goodnight.main import create_app

    document = json.dumps(create_app(_settings()).openapi(), indent=2, sort_keys=True) + "\n"
    if output is None:
        typer.echo(document, nl=False)
    else:
        output.write_text(document)
