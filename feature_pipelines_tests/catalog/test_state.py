"""States read from a real lake: freshness against the SLA, the last quality run per feature, drift and skew
days, and models from the registry when it exists (tolerated when it does not)."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from feature_pipelines.catalog.build import project_catalog
from feature_pipelines.catalog.entries import Catalog, State
from feature_pipelines.catalog.search import search
from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.plan.consumers import ModelRegistryError
from feature_pipelines_tests.catalog.conftest import AIRCRAFT, WRITTEN_AT, register_model


def names_of(catalog: Catalog, query: str) -> set[str]:
    return {entry.name for entry in search(catalog, query)}


def test_freshness_is_the_age_of_the_last_write_against_the_views_sla(state_lake: Path) -> None:
    store = DeltaStore(root=str(state_lake))
    sla = AIRCRAFT.freshness  # daily snapshots: warn after 26h, fail after 30h
    for age, state in ((timedelta(hours=2), State.PASS), (sla.warn_after + timedelta(minutes=1), State.WARN),
                       (sla.fail_after + timedelta(minutes=1), State.FAIL)):
        entry = project_catalog(store, WRITTEN_AT + age).entry("aircraft_flights_count_24h")
        assert entry.freshness.state is state, entry.freshness.signal
        assert entry.freshness.last_materialized == WRITTEN_AT
        assert entry.freshness.age == age
    never = project_catalog(store, WRITTEN_AT).entry("route_flights_count_7d").freshness
    assert never.state is State.UNKNOWN and "never materialized" in never.signal.detail


def test_quality_counts_a_failure_against_the_feature_it_names_or_every_feature_when_table_wide(
    state_lake: Path,
) -> None:
    catalog = project_catalog(DeltaStore(root=str(state_lake)), WRITTEN_AT)
    named = catalog.entry("aircraft_dep_delay_mean_24h").quality
    assert named.state is State.FAIL and "feature_values_in_range" in named.detail
    assert catalog.entry("aircraft_flights_count_24h").quality.state is State.PASS
    for entry in search(catalog, "view:route_delay_stats"):
        assert entry.quality.state is State.FAIL and "row_volume_within_tolerance" in entry.quality.detail
    assert catalog.entry("origin_temp_latest").quality.state is State.UNKNOWN
    # An on-demand feature takes its inputs' worst.
    assert catalog.entry("route_dep_delay_ratio_24h_7d").quality.state is State.FAIL


def test_drift_and_skew_come_from_their_result_tables_or_are_unknown(state_lake: Path) -> None:
    catalog = project_catalog(DeltaStore(root=str(state_lake)), WRITTEN_AT)
    shifted, steady = catalog.entry("aircraft_flights_count_24h"), catalog.entry("aircraft_distance_sum_24h")
    assert shifted.drift.state is State.FAIL and "training_vs_serving fail" in shifted.drift.detail
    assert steady.drift.state is State.PASS
    assert shifted.skew.state is State.PASS and "0 of 200" in shifted.skew.detail
    assert steady.skew.state is State.FAIL and "7 of 200 served values differ" in steady.skew.detail
    unmonitored = catalog.entry("origin_temp_latest")
    assert unmonitored.drift.state is State.UNKNOWN and unmonitored.skew.state is State.UNKNOWN
    assert names_of(catalog, "state:pass") == set(AIRCRAFT.feature_names)


def test_models_are_listed_from_the_registry_when_it_exists(state_lake: Path, tmp_path: Path) -> None:
    root = tmp_path / "lake"
    shutil.copytree(state_lake, root)
    store = DeltaStore(root=str(root))
    before = project_catalog(store, WRITTEN_AT)
    assert not before.models_listed and any("_models/registry absent" in note for note in before.notes)
    register_model(store, "delay_gbm", 3, "flight_delay_v1")
    register_model(store, "delay_linear", 1, "flight_delay_v2")
    register_model(store, "retired", 1, "flight_delay_v0")
    catalog = project_catalog(store, WRITTEN_AT)
    assert catalog.models_listed
    assert names_of(catalog, "model:delay_linear") == names_of(catalog, "service:flight_delay_v2")
    models = {str(use) for use in catalog.entry("route_dep_delay_mean_7d").uses_of("model")}
    assert models == {"delay_gbm v3 (service flight_delay_v1) via route_dep_delay_ratio_24h_7d",
                      "delay_linear v1 (service flight_delay_v2) via route_dep_delay_ratio_24h_7d"}
    assert any("'flight_delay_v0', which the catalog does not declare" in note for note in catalog.notes)


def test_a_registry_without_its_columns_is_an_error_naming_them(tmp_path: Path) -> None:
    import polars as pl

    store = DeltaStore(root=str(tmp_path))
    store.append("_models/registry", pl.DataFrame({"model_name": ["m"], "version": [1]}))
    with pytest.raises(ModelRegistryError, match="no column for the feature service"):
        project_catalog(store, WRITTEN_AT)
