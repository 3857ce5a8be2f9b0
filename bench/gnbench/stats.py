"""Percentiles of latency samples."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values (fraction 0..1)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summarize_ms(seconds: Sequence[float]) -> dict[str, Any]:
    """count, mean, p50/p90/p99/max in milliseconds, from samples in seconds."""
    values = sorted(seconds)
    if not values:
        return {"count": 0, "mean": None, "p50": None, "p90": None, "p99": None, "max": None}
    return {
        "count": len(values),
        "mean": round(1000 * sum(values) / len(values), 3),
        "p50": round(1000 * percentile(values, 0.50), 3),
        "p90": round(1000 * percentile(values, 0.90), 3),
        "p99": round(1000 * percentile(values, 0.99), 3),
        "max": round(1000 * values[-1], 3),
    }
