"""``deploy/prometheus/alerts.yml``: valid for Prometheus, unit-tested with promtool (each alert fires when it
should and stays quiet when it should not), complete enough for whoever is paged, and about series that
exist."""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest
import yaml

from tests.support.promql import DEPLOY, label_problems, run_promtool, unknown_names

RULES = DEPLOY / "prometheus" / "alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "alerts.test.yml"
SEVERITIES = {"warning", "critical"}
# What the issue asks alerts for, by a series each must watch.
REQUIRED_WATCHES = {
    "5xx ratio": 'goodnight_http_requests_total{status=~"5.."}',
    "feed p99 latency": (
        'goodnight_http_request_duration_seconds_bucket{route="/api/v1/sleep_records/followings"}'
    ),
    "outbox oldest pending age": "goodnight_outbox_oldest_pending_age_seconds",
    "dead events": 'goodnight_outbox_events{state="dead"}',
    "breaker open": "goodnight_redis_breaker_open",
    "pool saturation": "goodnight_db_pool_connections",
}


@cache
def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_promtool_accepts_the_rules() -> None:
    result = run_promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = run_promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_tested_firing_and_quiet() -> None:
    cases = [
        case for test in yaml.safe_load(RULE_TESTS.read_text())["tests"] for case in test["alert_rule_test"]
    ]
    for rule in rules():
        tested = [case for case in cases if case["alertname"] == rule["alert"]]
        assert any(case["exp_alerts"] for case in tested), f"{rule['alert']} is never tested firing"
        assert any(not case["exp_alerts"] for case in tested), f"{rule['alert']} is never tested quiet"


@pytest.mark.parametrize("rule", rules(), ids=lambda rule: rule["alert"])
def test_every_alert_says_how_bad_what_and_what_to_do(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in SEVERITIES
    assert rule["annotations"].keys() == {"summary", "description", "action"}
    assert all(text.strip() for text in rule["annotations"].values())
    assert rule["for"] in {"1m", "2m", "5m", "10m"}  # long enough to ride out a blip, short enough to matter


@pytest.mark.parametrize("rule", rules(), ids=lambda rule: rule["alert"])
def test_alerts_name_only_series_that_exist_with_their_labels(rule: dict[str, Any]) -> None:
    assert not unknown_names(rule["expr"])
    assert not label_problems(rule["expr"])
    # The queries suggested to whoever is paged must work too.
    assert not unknown_names(" ".join(rule["annotations"].values()))


def test_the_alerts_the_issue_asks_for_are_there() -> None:
    expressions = " ".join(" ".join(rule["expr"].split()) for rule in rules())
    missing = [what for what, watch in REQUIRED_WATCHES.items() if watch not in expressions]
    assert not missing
