"""The capacity model (bench/capacity.py) runs on the committed profile L costs, and its arithmetic holds
together: what is stored per user grows with users, what is fanned out grows with follows, machines never
shrink as load grows. Nothing here measures anything."""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("capacity", REPO / "bench" / "capacity.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["capacity"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


capacity = _load()
DATA = json.loads(capacity.DEFAULT_COSTS.read_text())
COSTS = capacity.Costs.load(DATA)
MACHINES = capacity.Machines()
PROPORTIONAL = (
    "peak_reads_per_s",
    "peak_writes_per_s",
    "redis_memory_gb",
    "redis_cores",
    "primary_rows_per_s",
    "primary_wal_mb_per_s",
    "primary_write_cores",
    "replica_read_cores",
    "postgres_gb_now",
    "postgres_gb_per_year",
)
COUNTS = ("api_processes", "api_machines", "outbox_workers", "redis_shards", "replicas")


def test_doubling_users_doubles_load_storage_and_memory() -> None:
    one = capacity.plan(capacity.Workload(users=10e6), COSTS, MACHINES)
    two = capacity.plan(capacity.Workload(users=20e6), COSTS, MACHINES)
    for key in PROPORTIONAL:
        assert two[key] == pytest.approx(2 * one[key]), key
    assert two["timelines_per_clock_out"] == pytest.approx(one["timelines_per_clock_out"])
    for key in COUNTS:
        assert one[key] <= two[key] <= 2 * one[key] + 1, key  # whole machines: rounded up, never fewer


def test_fanout_grows_with_follows_and_reads_do_not_cost_the_primary() -> None:
    base = capacity.Workload(users=10e6)
    plain = capacity.plan(base, COSTS, MACHINES)
    followed = capacity.plan(replace(base, follows_per_user=2 * base.follows_per_user), COSTS, MACHINES)
    assert followed["timelines_per_clock_out"] == pytest.approx(2 * plain["timelines_per_clock_out"])
    assert followed["redis_memory_gb"] > plain["redis_memory_gb"]
    assert followed["outbox_workers"] >= plain["outbox_workers"]
    reader = capacity.plan(
        replace(base, reads_per_active_day=10 * base.reads_per_active_day), COSTS, MACHINES
    )
    assert reader["primary_write_cores"] == pytest.approx(plain["primary_write_cores"])
    assert reader["replica_read_cores"] > plain["replica_read_cores"]


def test_the_profile_workload_is_the_dataset_it_was_measured_on() -> None:
    work = capacity.profile_workload(DATA)
    assert work.users == DATA["dataset"]["users"]
    assert work.follows_per_user * work.users == pytest.approx(DATA["dataset"]["follows"])
    # The reach factor reproduces the dataset's timelines per clock-out from its follows and active users.
    reach = work.follows_per_user * work.weekly_active_share * COSTS.reach_factor
    assert reach == pytest.approx(DATA["fanout"]["entries_per_clock_out_dataset"])


def test_the_check_compares_every_figure_with_a_measured_one() -> None:
    rows = capacity.check(DATA, COSTS)
    labels = [label for label, _, _ in rows]
    assert "Redis used_memory (GB)" in labels
    assert any(label.startswith("mixed 10:1 requests/s") for label in labels)
    for label, predicted, measured in rows:
        assert predicted > 0, label
        assert measured > 0, label


def test_mixed_workload_factors_only_ever_raise_costs() -> None:
    assert all(factor >= 1 for factor in COSTS.mix_factor.values())
    unfactored = replace(COSTS, mix_factor=dict.fromkeys(capacity.TIERS, 1.0))
    # The factors are what the measured mixed workload adds to the model's figures, tier by tier.
    predicted = capacity.mixed_run(DATA, unfactored)
    for tier in capacity.TIERS:
        measured = DATA["cpu_us"]["mixed_redis"][tier]
        assert COSTS.mix_factor[tier] == pytest.approx(max(1.0, measured / predicted[tier]))
    plain = capacity.plan(capacity.Workload(users=10e6), unfactored, MACHINES)
    factored = capacity.plan(capacity.Workload(users=10e6), COSTS, MACHINES)
    assert factored["api_processes"] >= plain["api_processes"]
    assert factored["redis_memory_gb"] == pytest.approx(plain["redis_memory_gb"])  # CPU only


def test_a_night_costs_more_the_more_timelines_it_reaches() -> None:
    few, many = COSTS.night(COSTS.write_reach), COSTS.night(COSTS.write_reach + 1000)
    for tier in capacity.TIERS:
        assert few[tier] == pytest.approx(2 * COSTS.write[tier])  # what the writers measured, as measured
        assert many[tier] - few[tier] == pytest.approx(1000 * COSTS.per_timeline[tier])


def test_the_command_prints_both_scales_and_the_check(capsys: pytest.CaptureFixture[str]) -> None:
    assert capacity.main(["--check"]) == 0
    out = capsys.readouterr().out
    assert "| 10M users | 100M users |" in out
    assert "Check against profile L" in out
    assert capacity.main(["--users", "2e6", "--follows-per-user", "80", "--json"]) == 0
    plans = json.loads(capsys.readouterr().out)["plans"]
    assert list(plans) == ["2M users"]


def test_a_missing_or_broken_costs_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert capacity.main(["--costs", str(tmp_path / "absent.json")]) == 2
    assert "cannot use" in capsys.readouterr().err
    broken = tmp_path / "broken.json"
    broken.write_text('{"dataset": {}}')
    assert capacity.main(["--costs", str(broken)]) == 2
    assert "bench/fanout_cost.py completes it" in capsys.readouterr().err


@pytest.mark.parametrize("users", ["ten", "0", ""])
def test_user_counts_must_be_positive_numbers(users: str) -> None:
    with pytest.raises(SystemExit) as exited:
        capacity.parse_args(["--users", users])
    assert exited.value.code == 2
