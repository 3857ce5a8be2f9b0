"""The ``goodnight`` command line."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
import uvicorn
from pydantic import ValidationError

from goodnight.config import ConfigurationError, Settings, get_settings

app = typer.Typer(help="Goodnight: a social sleep-tracking API.", no_args_is_help=True, add_completion=False)


def _settings() -> Settings:
    try:
        return get_settings()
    except (ConfigurationError, ValidationError) as exc:
        typer.secho(f"configuration error: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from exc


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    migrate: Annotated[bool, typer.Option(help="Apply pending database migrations before serving.")] = True,
) -> None:
    """Run the HTTP API (creating or migrating the database first)."""
    settings = _settings()
    # Resolve the JWT secret before workers fork, so all of them share the one generated in development.
    settings.resolved_jwt_secret()
    if migrate:
        _migrate(settings)
    from goodnight.edge.protocol import KEEP_ALIVE_TIMEOUT_SECONDS, GuardedHttpToolsProtocol

    # Always our protocol, never what uvicorn's "auto" finds installed: it carries the limits on request
    # heads. By name, not as a class: uvicorn pickles its config into each worker, and unpickling a class
    # imports the app's modules before the worker can answer the supervisor's health check.
    protocol = f"{GuardedHttpToolsProtocol.__module__}:{GuardedHttpToolsProtocol.__qualname__}"
    uvicorn.run(
        "goodnight.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        http=protocol,
        timeout_keep_alive=KEEP_ALIVE_TIMEOUT_SECONDS,
        # A new worker re-imports this CLI before it can answer the supervisor's health check: seconds on a
        # busy machine, where uvicorn's default of 5 s kills every worker before it starts, again and again.
        timeout_worker_healthcheck=30,
        access_log=False,
        proxy_headers=False,  # X-Forwarded-For is believed only from GOODNIGHT_TRUSTED_PROXIES
        server_header=False,
    )


@app.command("migrate")
def migrate_command() -> None:
    """Apply database migrations to GOODNIGHT_DATABASE_URL."""
    _migrate(_settings())


def _migrate(settings: Settings) -> None:
    from goodnight.migrate import migrate

    revision = migrate(settings)
    typer.echo(f"database is at revision {revision}")


outbox_app = typer.Typer(help="Inspect and repair the outbox of background work.", no_args_is_help=True)
app.add_typer(outbox_app, name="outbox")


@app.command()
def worker(
    concurrency: Annotated[int, typer.Option(min=1, help="Workers in this process.")] = 1,
) -> None:
    """Drain the outbox (Redis timeline fanout). Run any number, on any number of machines."""
    settings = _settings()
    if not settings.redis_url:
        typer.secho("GOODNIGHT_REDIS_URL is not set: there is no background work to do.", err=True)
        raise typer.Exit(2)
    from goodnight.jobs.runner import run_workers
    from goodnight.main import outbox_consumers

    asyncio.run(run_workers(settings, concurrency, outbox_consumers))


@outbox_app.command("status")
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


@outbox_app.command("retry-dead")
def outbox_retry_dead() -> None:
    """Give every event parked as dead a fresh set of attempts."""
    from goodnight.jobs.runner import retry_dead

    count = asyncio.run(retry_dead(_settings()))
    typer.echo(f"{count} dead event(s) queued again")


@app.command()
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
