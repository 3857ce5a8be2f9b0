"""``goodnight outbox dead``: parked events as a table for people or one JSON document for scripts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from goodnight.jobs.outbox import DeadEvent
from goodnight.kit.clock import format_utc, to_utc

# The table is for reading at a terminal; the whole error is in --json.
TABLE_ERROR_LENGTH = 200


def dead_json(total: int, events: Sequence[DeadEvent]) -> str:
    """``{"total": <dead events>, "events": [...]}``, times in UTC ISO 8601 with milliseconds."""
    return json.dumps({"total": total, "events": [_as_json(event) for event in events]})


def print_dead_table(total: int, events: Sequence[DeadEvent], console: Console | None = None) -> None:
    console = console or Console()
    if not events:
        console.print("no dead events")
        return
    # The error goes under the kind, in the one column that wraps: on an 80-column terminal a column of its
    # own would be squeezed to nothing by the timestamps, which must stay whole.
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for header in ("id", "attempts", "first attempt (UTC)", "last attempt (UTC)"):
        table.add_column(header, no_wrap=True)
    table.add_column("kind / error", ratio=1, overflow="fold")
    for event in events:
        error = event.last_error or "-"
        if len(error) > TABLE_ERROR_LENGTH:
            error = error[: TABLE_ERROR_LENGTH - 1] + "…"
        table.add_row(
            str(event.id),
            str(event.attempts),
            _table_time(event.first_attempt_at),
            _table_time(event.last_attempt_at),
            Text(event.kind + "\n") + Text(error, style="dim"),
        )
    console.print(table)
    console.print(f"{len(events)} of {total} dead event(s), the most recently parked first")


def _as_json(event: DeadEvent) -> dict[str, Any]:
    fields = asdict(event)
    fields["first_attempt_at"] = format_utc(event.first_attempt_at)
    fields["last_attempt_at"] = format_utc(event.last_attempt_at)
    return fields


def _table_time(moment: datetime) -> str:
    return f"{to_utc(moment):%Y-%m-%d %H:%M:%S}"
