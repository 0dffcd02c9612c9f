"""Feature services end to end in real Dagster runs: the training set is built from its service and
records it, the statistics asset fits numbered versions on it, and every read applies the pinned one."""

from __future__ import annotations

import pytest
from dagster import AssetKey, materialize

from feature_pipelines.feature_store import FeatureStore
from feature_pipelines.features.references import UnknownFeatureError
from feature_pipelines.features.services import (
    FEATURE_SERVICES,
    apply_service_transforms,
    raw_service_schema,
    service_schema,
)
from feature_pipelines.offline.fitted_statistics import StatisticsNotFoundError, load_fitted_statistics
from feature_pipelines.orchestration.runs import materialize_range
from feature_pipelines.orchestration.schedules import (
    DAILY_SNAPSHOT_JOB,
    HOURLY_SNAPSHOT_JOB,
    RAW_HOURLY_JOB,
    TRAINING_JOB,
)
from feature_pipelines.orchestration.statistics_assets import statistics_asset_name
from feature_pipelines.training.frames import training_frame
from feature_pipelines.training.spec import FLIGHT_DELAY_TRAINING_SET, LABELS_TABLE, PREDICTION_TIMESTAMP
from feature_pipelines_tests.conftest import Pipeline

SPEC = FLIGHT_DELAY_TRAINING_SET
V1, V2 = FEATURE_SERVICES["flight_delay_v1"], FEATURE_SERVICES["flight_delay_v2"]
ROW_KEY = ["carrier", "flight_number", "origin", "scheduled_departure_at"]


def _build_training_set(pipeline: Pipeline) -> dict:
    for job, first, last in [
        (RAW_HOURLY_JOB, "2013-01-01-00:00", "2013-01-05-23:00"),
        (HOURLY_SNAPSHOT_JOB, "2013-01-01", "2013-01-04"),
        (DAILY_SNAPSHOT_JOB, "2013-01-01", "2013-01-04"),
        (TRAINING_JOB, "2013-01-02", "2013-01-03"),
    ]:
        assert materialize_range(pipeline.defs, job, first, last, instance=pipeline.instance).result.success
    event = pipeline.instance.get_latest_materialization_event(AssetKey(SPEC.name))
    return {key: getattr(value, "value", value) for key, value in event.asset_materialization.metadata.items()}


def _fit(pipeline: Pipeline) -> dict:
    statistics = pipeline.defs.resolve_assets_def(statistics_asset_name(V2))
    result = materialize([statistics], instance=pipeline.instance)  # its resources come bound from the Definitions
    assert result.success
    [event] = result.get_asset_materialization_events()
    return {key: getattr(value, "value", value) for key, value in event.materialization.metadata.items()}


def test_service_training_set_statistics_and_reads_agree(pipeline: Pipeline) -> None:
    metadata = _build_training_set(pipeline)
    assert (metadata["feature_service"], metadata["feature_service_version"]) == ("flight_delay_v1", V1.version)
    assert metadata["features"] == list(V1.features)
    assert set(metadata["null_rates"]) == set(V1.column_names)

    table = pipeline.store.read(SPEC.name)
    vector = [name for name in table.columns if name in set(V1.column_names)]
    assert vector == V1.column_names  # in the service's order
    assert {name: table.schema[name] for name in vector} == raw_service_schema(V1)
    assert table["route_dep_delay_ratio_24h_7d"].drop_nulls().len() > 100  # on-demand, computed offline
    assert "route_dep_delay_mean_7d" not in table.columns  # its input was read, then dropped

    store = FeatureStore(lake=pipeline.store)
    labels = pipeline.store.read(LABELS_TABLE)  # the rows of the training set's days, read before it grows
    with pytest.raises(StatisticsNotFoundError, match=f"'flight_delay_v2' version {V2.version}: no statistics version 1"):
        store.get_historical_features(labels, feature_service="flight_delay_v2", timestamp_column=PREDICTION_TIMESTAMP)

    first = _fit(pipeline)
    assert (first["feature_service"], first["feature_service_version"]) == ("flight_delay_v2", V2.version)
    assert (first["statistics_version"], first["pinned_statistics_version"]) == (1, 1)
    assert first["training_set_version"] == pipeline.store.version(SPEC.name)
    assert first["training_rows"] == table.height
    # A day more of training rows, then a refit: version 2, on the table's next version.
    assert materialize_range(pipeline.defs, TRAINING_JOB, "2013-01-04", "2013-01-04", instance=pipeline.instance).result.success
    second = _fit(pipeline)
    assert (second["statistics_version"], second["fitted_versions"]) == (2, [1, 2])
    assert second["training_set_version"] > first["training_set_version"]
    assert second["training_rows"] > first["training_rows"]

    built = store.get_historical_features_with_versions(labels, feature_service="flight_delay_v2",
                                                        timestamp_column=PREDICTION_TIMESTAMP)
    assert built.statistics_version == 1  # the pin, not the newest fit
    assert built.frame.columns == [*labels.columns, *V2.column_names]
    assert {name: built.frame.schema[name] for name in V2.column_names} == service_schema(V2)
    assert built.frame["route_dep_delay_mean_24h"].null_count() == 0
    pinned = load_fitted_statistics(pipeline.store, V2)
    expected = apply_service_transforms(table.select(*ROW_KEY, *V2.column_names), V2, pinned)
    assert built.frame.select(*ROW_KEY, *V2.column_names).sort(ROW_KEY).equals(expected.sort(ROW_KEY))

    model_frame = training_frame(pipeline.store, SPEC, service=V2, table_version=first["training_set_version"])
    assert model_frame.statistics == pinned
    assert model_frame.frame.select(*ROW_KEY, *V2.column_names).sort(ROW_KEY).equals(expected.sort(ROW_KEY))
    newer = training_frame(pipeline.store, SPEC, service=V2, statistics_version=2, table_version=first["training_set_version"])
    assert newer.statistics is not None and newer.statistics.steps != pinned.steps
    assert not newer.frame.select(V2.column_names).equals(model_frame.frame.select(V2.column_names))

    with pytest.raises(UnknownFeatureError, match="unknown feature service 'flight_delay_v9'"):
        store.get_historical_features(labels, feature_service="flight_delay_v9", timestamp_column=PREDICTION_TIMESTAMP)
