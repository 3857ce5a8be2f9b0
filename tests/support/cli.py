"""The ``goodnight`` command line in process (typer's runner): much quicker than a subprocess for commands
that run and exit, with the environment of a clean shell (no GOODNIGHT_* setting but those given)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence

from typer.testing import CliRunner, Result

from goodnight.cli import app as cli_app
from goodnight.config import get_settings

# Rich tables wrap at 80 columns where there is no terminal; tests read whole rows.
WIDE = "250"


async def invoke(args: Sequence[str], database_url: str, env: Mapping[str, str] | None = None) -> Result:
    """Run ``goodnight <args>`` against ``database_url`` (in a thread: every command runs its own loop)."""
    environment: dict[str, str | None] = {name: None for name in os.environ if name.startswith("GOODNIGHT_")}
    environment.update({"GOODNIGHT_DATABASE_URL": database_url, "COLUMNS": WIDE, **(env or {})})
    return await asyncio.to_thread(_invoke, list(args), environment)


def _invoke(args: list[str], environment: Mapping[str, str | None]) -> Result:
    get_settings.cache_clear()  # settings are read once per process; each run has its own environment
    try:
        return CliRunner().invoke(cli_app, args, env=environment)
    finally:
        get_settings.cache_clear()
