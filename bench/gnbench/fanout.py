"""Watching the outbox from outside: how many timeline entries fanout wrote, and waiting for it to finish."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from gnbench.http import Pool
from gnbench.infra import HarnessError, scrape_counter

DRAIN_TIMEOUT = 120.0  # seconds


def counters(metrics_base: str) -> tuple[float, float]:
    """(timeline entries written by fanout, clock-out events applied) so far, from the /metrics at
    ``metrics_base`` of whatever drains the outbox."""
    entries = scrape_counter(metrics_base, "goodnight_fanout_entries_total")
    applied = scrape_counter(
        metrics_base, "goodnight_outbox_processed_total", {"kind": "sleep_completed", "outcome": "ok"}
    )
    return entries, applied


def delta(before: tuple[float, float], after: tuple[float, float]) -> dict[str, Any]:
    entries, clock_outs = after[0] - before[0], after[1] - before[1]
    return {
        "clock_outs": int(clock_outs),
        "entries": int(entries),
        "entries_per_clock_out": round(entries / clock_outs, 2) if clock_outs else None,
    }


async def drained(host: str, port: int) -> None:
    """Wait until the outbox holds nothing pending or in flight (GET /health/ready of the API at ``port``)."""
    pool = Pool(host, port)
    deadline = time.monotonic() + DRAIN_TIMEOUT
    try:
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                outbox = (await pool.request("GET", "/api/v1/health/ready")).json().get("outbox") or {}
                if int(outbox.get("pending", 0)) + int(outbox.get("in_flight", 0)) == 0:
                    return
            await asyncio.sleep(0.1)
        raise HarnessError(f"the outbox did not drain within {DRAIN_TIMEOUT:.0f}s")
    finally:
        await pool.close()
