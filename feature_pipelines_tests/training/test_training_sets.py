"""Training sets end to end: real Dagster runs, point-in-time values, reproducible by version,
and a leakage audit that catches a view stamped before its inputs were known."""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from feature_pipelines.compute.snapshots import snapshot_features
from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.features.flights import carrier_delay_stats
from feature_pipelines.offline.historical import get_historical_features, stamp_column
from feature_pipelines.orchestration.runs import materialize_range
from feature_pipelines.orchestration.schedules import (
    DAILY_SNAPSHOT_JOB,
    HOURLY_SNAPSHOT_JOB,
    RAW_HOURLY_JOB,
    TRAINING_JOB,
)
from feature_pipelines.sources import nycflights
from feature_pipelines.training.audit import audit_recomputation, audit_stamps
from feature_pipelines.training.spec import FLIGHT_DELAY_TRAINING_SET, PREDICTION_TIMESTAMP
from feature_pipelines_tests.conftest import Pipeline

SPEC = FLIGHT_DELAY_TRAINING_SET


def _build(pipeline: Pipeline) -> object:
    for job, first, last in [
        (RAW_HOURLY_JOB, "2013-01-01-00:00", "2013-01-05-23:00"),
        (HOURLY_SNAPSHOT_JOB, "2013-01-01", "2013-01-04"),
        (DAILY_SNAPSHOT_JOB, "2013-01-01", "2013-01-04"),
    ]:
        assert materialize_range(pipeline.defs, job, first, last, instance=pipeline.instance).result.success
    run = materialize_range(pipeline.defs, TRAINING_JOB, "2013-01-02", "2013-01-03", instance=pipeline.instance)
    assert run.result.success
    return run


def _training_metadata(run: object) -> dict:
    events = [e for e in run.result.get_asset_materialization_events() if e.asset_key.to_user_string() == SPEC.name]  # type: ignore[attr-defined]
    return events[0].materialization.metadata


def _ipc_bytes(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_ipc(buffer)
    return buffer.getvalue()


def test_training_set_is_point_in_time_and_audited(pipeline: Pipeline) -> None:
    run = _build(pipeline)
    frame = pipeline.store.read(SPEC.name)
    labels = pipeline.store.read("flight_delay_labels")
    assert frame.height == labels.height > 1000
    # Prediction time is the declared lead before the scheduled departure, never the departure.
    assert (frame["scheduled_departure_at"] - frame[PREDICTION_TIMESTAMP] == SPEC.lead_time).all()
    for view in {ref.split(":")[0] for ref in SPEC.features}:
        stamps = frame[stamp_column(view)]
        assert (stamps.drop_nulls() <= frame.filter(stamps.is_not_null())[PREDICTION_TIMESTAMP]).all()
    checks = {c.check_name: c.passed for c in run.result.get_asset_check_evaluations()}  # type: ignore[attr-defined]
    assert checks == {"no_feature_leakage": True, "upstream_partitions_ready": True, "entity_forgotten": True}
    metadata = _training_metadata(run)
    # A streaming view is computed at each row's instant from its raw table: that table's version is pinned.
    read = [FEATURE_VIEWS[name] for name in {ref.split(":")[0] for ref in SPEC.features}]
    assert set(metadata["feature_table_versions"].data) == {v.source.asset if v.streaming else v.name for v in read}
    assert metadata["dagster/row_count"].value == frame.height
    assert set(metadata["null_rates"].data) == set(SPEC.column_names)  # the service's vector, on-demand included


def test_carrier_value_equals_the_snapshot_at_or_before_prediction_time(pipeline: Pipeline) -> None:
    _build(pipeline)
    frame = pipeline.store.read(SPEC.name).filter(pl.col("carrier") == "UA").sort(PREDICTION_TIMESTAMP).slice(200, 1)
    row = frame.row(0, named=True)
    hour = row[PREDICTION_TIMESTAMP].replace(minute=0, second=0, microsecond=0)
    expected = snapshot_features(
        nycflights.flights().filter(pl.col("carrier") == "UA"), carrier_delay_stats, start=hour - timedelta(hours=1), end=hour
    ).row(0, named=True)
    assert row["carrier_dep_delay_mean_24h"] == expected["carrier_dep_delay_mean_24h"]
    assert row[stamp_column("carrier_delay_stats")] == hour


def test_rebuild_with_recorded_versions_is_byte_identical_after_rematerialization(pipeline: Pipeline) -> None:
    run = _build(pipeline)
    versions = _training_metadata(run)["feature_table_versions"].data
    labels = pipeline.store.read("flight_delay_labels").filter(pl.col("scheduled_departure_at") < datetime(2013, 1, 3, tzinfo=UTC))
    first = get_historical_features(pipeline.store, FEATURE_VIEWS, labels, SPEC.features, timestamp_column=PREDICTION_TIMESTAMP, as_of=versions)
    # Re-materialise the feature tables: new versions, new created_timestamps.
    assert materialize_range(pipeline.defs, HOURLY_SNAPSHOT_JOB, "2013-01-01", "2013-01-04", instance=pipeline.instance).result.success
    assert materialize_range(pipeline.defs, DAILY_SNAPSHOT_JOB, "2013-01-01", "2013-01-04", instance=pipeline.instance).result.success
    assert all(pipeline.store.version(table) > version for table, version in versions.items() if table in FEATURE_VIEWS)
    again = get_historical_features(pipeline.store, FEATURE_VIEWS, labels, SPEC.features, timestamp_column=PREDICTION_TIMESTAMP, as_of=versions)
    assert again.versions == versions
    assert _ipc_bytes(again.frame) == _ipc_bytes(first.frame)


def test_leakage_audit_catches_a_view_stamped_by_schedule(pipeline: Pipeline) -> None:
    """A view that stamps flights by scheduled departure uses delays not yet known at the stamp."""
    leaky = replace(carrier_delay_stats, source=replace(carrier_delay_stats.source, known_at_column="scheduled_departure_at"))
    flights = nycflights.flights().filter(pl.col("dep_known_at") < datetime(2013, 1, 5, tzinfo=UTC))
    start, end = datetime(2013, 1, 1, tzinfo=UTC), datetime(2013, 1, 4, tzinfo=UTC)
    for view in (leaky, carrier_delay_stats):
        table = snapshot_features(flights, view, start=start, end=end).with_columns(
            pl.lit(end).dt.cast_time_unit("us").alias("created_timestamp")
        )
        pipeline.store.write(view.name, table, time_slice=None)
        labels = pl.DataFrame(
            {"carrier": ["UA", "AA", "DL", "B6"] * 20, PREDICTION_TIMESTAMP: [start + timedelta(hours=30 + i) for i in range(80)]},
            schema_overrides={PREDICTION_TIMESTAMP: pl.Datetime("us", "UTC")},
        )
        names = ["carrier_dep_delay_mean_24h", "carrier_dep_delay_p90_24h"]
        built = get_historical_features(
            pipeline.store, {view.name: view}, labels, [f"{view.name}:{n}" for n in names],
            timestamp_column=PREDICTION_TIMESTAMP, include_event_timestamps=True,
        )
        assert audit_stamps(built.frame, [view.name], prediction_column=PREDICTION_TIMESTAMP).passed
        report = audit_recomputation(built.frame, view, names, flights, trusted_known_at="dep_known_at", sample=40)
        assert report.passed is (view is carrier_delay_stats), report.message()
        if view is leaky:
            assert "not reproducible from data known at their stamp" in report.message()


def test_audit_catches_a_feature_stamped_after_prediction_time() -> None:
    frame = pl.DataFrame(
        {PREDICTION_TIMESTAMP: [datetime(2013, 1, 2, tzinfo=UTC)] * 2,
         "v__event_timestamp": [datetime(2013, 1, 1, tzinfo=UTC), datetime(2013, 1, 2, 1, tzinfo=UTC)]}
    )
    report = audit_stamps(frame, ["v"], prediction_column=PREDICTION_TIMESTAMP)
    assert not report.passed and report.violations == {"v stamped after prediction time": 1}


def test_training_read_refuses_unknown_features_and_naive_times(pipeline: Pipeline) -> None:
    entity = pl.DataFrame({"carrier": ["UA"], PREDICTION_TIMESTAMP: [datetime(2013, 1, 2)]})
    with pytest.raises(KeyError, match="has no feature 'carrier_magic_24h'"):
        get_historical_features(pipeline.store, FEATURE_VIEWS, entity, ["carrier_delay_stats:carrier_magic_24h"], timestamp_column=PREDICTION_TIMESTAMP)
