"""The series Goodnight exposes (``deploy/series.txt``) and a check that a PromQL query names only those, with
their labels; plus ``promtool``, which the suite needs (Debian's ``prometheus`` package; scripts/services
installs it)."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
SERIES_FILE = DEPLOY / "series.txt"
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# Labels Prometheus adds to every scraped series.
TARGET_LABELS = frozenset({"instance", "job"})

_NAME = re.compile(r"\bgoodnight_[a-z0-9_]+\b")
_SELECTOR = re.compile(r"\b(goodnight_[a-z0-9_]+)\s*\{([^}]*)\}")
_MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


@dataclass(frozen=True)
class Series:
    name: str
    kind: str
    labels: frozenset[str]


@cache
def known_series() -> dict[str, Series]:
    """``deploy/series.txt``: name, type, labels per line (``-`` for none)."""
    found: dict[str, Series] = {}
    for line in SERIES_FILE.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, kind, labels = line.split()
        found[name] = Series(name, kind, frozenset() if labels == "-" else frozenset(labels.split(",")))
    return found


def scraped_names() -> dict[str, tuple[Series, frozenset[str]]]:
    """Every name Prometheus stores for the known series, with the series and the labels it carries."""
    names: dict[str, tuple[Series, frozenset[str]]] = {}
    for series in known_series().values():
        if series.kind == "histogram":
            names[series.name + "_bucket"] = (series, series.labels | {"le"})
            names[series.name + "_sum"] = (series, series.labels)
            names[series.name + "_count"] = (series, series.labels)
        else:
            names[series.name] = (series, series.labels)
    return names


def names_in(text: str) -> set[str]:
    return set(_NAME.findall(text))


def unknown_names(text: str) -> set[str]:
    return names_in(text) - scraped_names().keys()


def label_problems(query: str) -> list[str]:
    """Labels a query matches on or groups by that none of the series it names carries."""
    scraped = scraped_names()
    problems: list[str] = []
    for name, matchers in _SELECTOR.findall(query):
        if name not in scraped:
            continue  # reported by unknown_names
        allowed = scraped[name][1] | TARGET_LABELS
        problems += [
            f"{name} has no label {label!r}" for label in _MATCHER.findall(matchers) if label not in allowed
        ]
    carried = TARGET_LABELS.union(*(scraped[name][1] for name in names_in(query) if name in scraped))
    for group in _GROUPING.findall(query):
        labels = {label.strip() for label in group.split(",") if label.strip()}
        problems += [f"no series here has the label {label!r}" for label in sorted(labels - carried)]
    return problems


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: install Debian's prometheus package (scripts/services does)")
    return found


def run_promtool(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
