"""``deploy/grafana/goodnight.json``: a dashboard Grafana imports (choosing its Prometheus data source then),
whose every query parses, names only series Goodnight exposes, and which shows each of them."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.promql import DEPLOY, known_series, label_problems, names_in, run_promtool, unknown_names

DASHBOARD = DEPLOY / "grafana" / "goodnight.json"
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
GRID_COLUMNS = 24
# What Grafana puts in place of its variables, for promtool to parse the queries.
VARIABLES = {"$__rate_interval": "5m", "$instance": ".*"}
LABEL_VALUES = re.compile(r"^label_values\((\w+),\s*(\w+)\)$")


@cache
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels() -> list[dict[str, Any]]:
    return [panel for panel in dashboard()["panels"] if panel["type"] != "row"]


def queries() -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target."""
    for panel in panels():
        for target in panel["targets"]:
            yield f"{panel['title']} / {target['refId']}", target["expr"]


def test_it_is_an_importable_dashboard_with_its_data_source_as_an_input() -> None:
    board = dashboard()
    assert board["title"] == "Goodnight"
    assert board["uid"]
    assert isinstance(board["schemaVersion"], int)
    assert board["__inputs"] == [
        {
            "name": "DS_PROMETHEUS",
            "label": "Prometheus",
            "description": "The Prometheus that scrapes Goodnight",
            "type": "datasource",
            "pluginId": "prometheus",
            "pluginName": "Prometheus",
        }
    ]
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels():
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["title"]
        assert panel["description"]
        assert panel["targets"]
        assert all(target["datasource"] == DATASOURCE for target in panel["targets"])
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs))
    for variable in board["templating"]["list"]:
        assert variable["datasource"] == DATASOURCE


def test_panels_fit_the_grid_without_overlapping() -> None:
    taken: set[tuple[int, int]] = set()
    for panel in dashboard()["panels"]:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] < grid["x"] + grid["w"] <= GRID_COLUMNS, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


def test_queries_name_only_series_that_exist_with_their_labels() -> None:
    problems = {where: sorted(unknown_names(query)) + label_problems(query) for where, query in queries()}
    assert not {where: found for where, found in problems.items() if found}
    for variable in dashboard()["templating"]["list"]:
        matched = LABEL_VALUES.match(variable["query"]["query"])
        assert matched is not None, variable["query"]
        assert not unknown_names(matched[1])
        assert not label_problems(f'{matched[1]}{{{matched[2]}=~".*"}}')


def test_every_series_goodnight_exposes_is_shown() -> None:
    shown = {name for _, query in queries() for name in names_in(query)}
    for name, series in known_series().items():
        forms = (
            {name + suffix for suffix in ("_bucket", "_sum", "_count")}
            if series.kind == "histogram"
            else {name}
        )
        assert forms & shown, f"no panel shows {name}"


def test_every_query_parses(tmp_path: Path) -> None:
    """promtool checks PromQL in rule files: each query becomes a recording rule."""
    recorded = []
    for index, (_, query) in enumerate(queries()):
        for variable, value in VARIABLES.items():
            query = query.replace(variable, value)
        recorded.append({"record": f"dashboard:query_{index}", "expr": query})
    rules = tmp_path / "dashboard-queries.yml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recorded}]}))
    result = run_promtool("check", "rules", str(rules))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("query", "unknown", "label_errors"),
    [
        ("sum(rate(goodnight_http_requests_total[5m]))", set(), []),
        ("rate(goodnight_http_requests[5m])", {"goodnight_http_requests"}, []),
        # A histogram is stored as _bucket/_sum/_count, never under its own name.
        ("goodnight_fanout_lag_seconds", {"goodnight_fanout_lag_seconds"}, []),
        ('goodnight_outbox_events{status="dead"}', set(), ["goodnight_outbox_events has no label 'status'"]),
        ("sum by (route) (goodnight_outbox_events)", set(), ["no series here has the label 'route'"]),
        ("sum by (le) (rate(goodnight_fanout_lag_seconds_bucket[5m]))", set(), []),
    ],
)
def test_the_series_check_catches_mistakes(query: str, unknown: set[str], label_errors: list[str]) -> None:
    assert unknown_names(query) == unknown
    assert label_problems(query) == label_errors
