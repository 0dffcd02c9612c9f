"""The Definitions load, validate with Dagster's own CLI, and wire every view through the factory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from feature_pipelines.definitions import defs
from feature_pipelines.features.catalog import FEATURE_VIEWS

REPO = Path(__file__).resolve().parent.parent


def test_every_view_and_raw_table_is_an_asset() -> None:
    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert set(FEATURE_VIEWS) <= keys
    assert {"raw_flights", "raw_weather", "raw_planes", "raw_airlines", "raw_airports"} <= keys


def test_feature_assets_read_trailing_windows_through_partition_mappings() -> None:
    graph = defs.resolve_asset_graph()
    node = graph.get(defs.resolve_assets_def("route_delay_stats").key)
    mapping = node.partition_mappings[next(iter(node.parent_keys))]
    assert mapping.start_offset == -6  # a 7-day window, daily snapshots: the day itself and 6 before
    carrier = graph.get(defs.resolve_assets_def("carrier_delay_stats").key)
    # 7-day window, hourly snapshots in daily partitions: the first snapshot (01:00) reaches 6d23h back.
    assert carrier.partition_mappings[next(iter(carrier.parent_keys))].start_offset == -7


def test_schedules_and_jobs_exist() -> None:
    assert {s.name for s in defs.schedules} == {"raw_dimensions_job_schedule", "raw_hourly_job_schedule", "hourly_snapshot_features_schedule", "daily_snapshot_features_job_schedule", "monitoring_schedule"}


def test_jobs_that_publish_to_redis_carry_the_online_store_run_tag() -> None:
    from feature_pipelines.orchestration.concurrency import ONLINE_STORE_RUN_TAG

    for name in ("hourly_snapshot_features_job", "daily_snapshot_features_job"):
        assert defs.resolve_job_def(name).tags.get(ONLINE_STORE_RUN_TAG) == "true", name
    assert ONLINE_STORE_RUN_TAG not in defs.resolve_job_def("raw_hourly_job").tags


def test_dagster_cli_validates_the_workspace(tmp_path: Path) -> None:
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    result = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", str(REPO / "workspace.yaml")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Validation successful" in result.stdout + result.stderr


def test_every_view_declares_its_freshness_sla_to_dagster() -> None:
    for view in FEATURE_VIEWS.values():
        policy = defs.resolve_assets_def(view.name).specs_by_key[defs.resolve_assets_def(view.name).key].freshness_policy
        assert policy is not None, view.name
        assert policy.fail_window.to_timedelta() == view.freshness.fail_after
        assert policy.warn_window.to_timedelta() == view.freshness.warn_after


def test_gated_assets_carry_blocking_checks() -> None:
    for name in ("raw_flights", "raw_weather", *FEATURE_VIEWS):
        specs = list(defs.resolve_assets_def(name).check_specs)
        assert specs and any(spec.blocking for spec in specs), name
    assert {s.name for s in defs.resolve_assets_def("origin_weather").check_specs} == {
        "schema_matches_declaration", "feature_nulls_within_limits", "feature_values_in_range",
        "entity_keys_unique_per_timestamp", "row_volume_within_tolerance", "upstream_partitions_ready",
    }
    # A check blocks exactly when its rule's action can hold a partition back (warn never does).
    from feature_pipelines.quality.raw_rules import RAW_RULES

    for table, rules in RAW_RULES.items():
        specs = {s.name: s for s in defs.resolve_assets_def(table).check_specs}
        assert set(specs) == set(rules), table
        assert {n: s.blocking for n, s in specs.items()} == {n: r.blocking for n, r in rules.items()}, table
