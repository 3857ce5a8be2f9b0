"""The ``goodnight`` command line."""

from __future__ import annotations

import asyncio
import dataclasses
import json
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
    uvicorn.run(
        "goodnight.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,
        proxy_headers=True,
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

    asyncio.run(run_workers(settings, concurrency))


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
