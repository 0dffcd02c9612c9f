"""Fitted statistics through a real Delta table: numbered versions, exact round trip, loud failures;
and a service's training frame read from real feature tables with them applied."""

from __future__ import annotations

import struct
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from feature_pipelines.compute.snapshots import snapshot_features
from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.features.flights import carrier_delay_stats
from feature_pipelines.features.services import (
    FEATURE_SERVICES,
    FeatureService,
    apply_service_transforms,
    raw_service_schema,
    service_schema,
)
from feature_pipelines.features.transforms import ClipQuantiles, FittedStatistics, Impute, ImputeStrategy, Standardize
from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.offline.fitted_statistics import (
    STATISTICS_TABLE,
    StatisticsNotFoundError,
    StatisticsNotPinnedError,
    fit_statistics,
    fitted_versions,
    load_fitted_statistics,
    write_fitted_statistics,
)
from feature_pipelines.offline.historical import get_historical_features
from feature_pipelines.sources import nycflights

V2 = FEATURE_SERVICES["flight_delay_v2"]
T0 = datetime(2013, 1, 1, tzinfo=UTC)


def _raw_vector(rows: int, seed: int) -> pl.DataFrame:
    """A training frame of V2's raw vector: every column varied, some nulls."""
    schema = raw_service_schema(V2)
    data: dict[str, list[object]] = {}
    for position, (name, dtype) in enumerate(schema.items()):
        values = [((i * 7919 + seed * 104729 + position * 31) % 997) for i in range(rows)]
        if dtype == pl.Float64:
            data[name] = [None if (i + position + seed) % 11 == 0 else v / 13.0 for i, v in enumerate(values)]
        else:
            data[name] = values
    return pl.DataFrame(data, schema=schema)


def _write(store: DeltaStore, service: FeatureService, frame: pl.DataFrame, minute: int = 0) -> FittedStatistics:
    return write_fitted_statistics(
        store, service, fit_statistics(frame, service), training_set="flight_delay_training_set",
        training_set_version=minute, training_rows=frame.height, fitted_at=T0 + timedelta(minutes=minute),
    )


def _bits(values: list[object]) -> list[object]:
    return [struct.pack("<d", v) if isinstance(v, float) else v for v in values]


def test_versions_round_trip_exactly_through_delta(tmp_path: Path) -> None:
    store = DeltaStore(str(tmp_path / "lake"))
    first = _write(store, V2, _raw_vector(500, seed=1), minute=1)
    second = _write(store, V2, _raw_vector(400, seed=2), minute=2)
    assert (first.version, second.version) == (1, 2)
    assert fitted_versions(store, V2.name) == {V2.version: [1, 2]}
    assert store.version(STATISTICS_TABLE) == 2  # created empty, then one commit per fit
    assert load_fitted_statistics(store, V2) == first  # the pin: version 1, not the newest
    assert load_fitted_statistics(store, V2, 2) == second
    assert first.steps != second.steps
    for loaded, written in ((load_fitted_statistics(store, V2, 1), first), (load_fitted_statistics(store, V2, 2), second)):
        for got, want in zip(loaded.steps, written.steps, strict=True):
            assert _bits(list(got.values.values())) == _bits(list(want.values.values()))
    assert load_fitted_statistics(store, V2).fitted_at == T0 + timedelta(minutes=1)


def test_an_unknown_version_names_the_service_the_version_and_what_exists(tmp_path: Path) -> None:
    store = DeltaStore(str(tmp_path / "lake"))
    with pytest.raises(StatisticsNotFoundError, match="does not exist yet"):
        load_fitted_statistics(store, V2)
    _write(store, V2, _raw_vector(300, seed=1))
    _write(store, V2, _raw_vector(300, seed=2))
    with pytest.raises(StatisticsNotFoundError) as raised:
        load_fitted_statistics(store, V2, 3)
    text = str(raised.value)
    assert f"'flight_delay_v2' version {V2.version}: no statistics version 3" in text
    assert "fitted for this service version: [1, 2]" in text
    with pytest.raises(StatisticsNotPinnedError, match=rf"pins no statistics version.*'{V2.version}': \[1, 2\]"):
        load_fitted_statistics(store, replace(V2, statistics_version=None))


def test_a_changed_definition_never_uses_the_old_definitions_statistics(tmp_path: Path) -> None:
    store = DeltaStore(str(tmp_path / "lake"))
    _write(store, V2, _raw_vector(300, seed=1))
    changed = replace(V2, transforms=(*V2.transforms, Standardize("origin_wind_speed_latest")))
    assert changed.version != V2.version and changed.statistics_version == 1
    with pytest.raises(StatisticsNotFoundError) as raised:
        load_fitted_statistics(store, changed)
    assert "fitted for this service version: none" in str(raised.value)
    assert f"other definitions): {{'{V2.version}': [1]}}" in str(raised.value)
    assert _write(store, changed, _raw_vector(300, seed=1)).version == 1  # numbered per service version
    assert fitted_versions(store, V2.name) == {V2.version: [1], changed.version: [1]}


PROBE = FeatureService(
    name="carrier_probe", owner="me@example.com", description="carrier delays, standardised",
    features=("carrier_delay_stats:carrier_dep_delay_mean_24h", "on_demand:carrier_dep_delay_ratio_24h_7d",
              "carrier_delay_stats:carrier_flights_count_24h"),
    transforms=(Impute("carrier_dep_delay_mean_24h", ImputeStrategy.MEAN), Standardize("carrier_dep_delay_mean_24h"),
                Impute("carrier_dep_delay_ratio_24h_7d", ImputeStrategy.MEDIAN),
                ClipQuantiles("carrier_dep_delay_ratio_24h_7d", 0.05, 0.95)),
    statistics_version=1,
)


@pytest.fixture
def carrier_lake(tmp_path: Path) -> DeltaStore:
    store = DeltaStore(str(tmp_path / "lake"))
    flights = nycflights.flights().filter(pl.col("dep_known_at") < datetime(2013, 1, 5, tzinfo=UTC))
    table = snapshot_features(flights, carrier_delay_stats, start=T0, end=datetime(2013, 1, 4, tzinfo=UTC))
    store.write(carrier_delay_stats.name, table.with_columns(pl.lit(T0).dt.cast_time_unit("us").alias("created_timestamp")),
                time_slice=None)
    return store


def _entities(rows: int) -> pl.DataFrame:
    carriers = ["UA", "AA", "DL", "B6", "EV", "ZZ"]  # ZZ flies nowhere: nulls to impute
    return pl.DataFrame(
        {"carrier": [carriers[i % len(carriers)] for i in range(rows)],
         "prediction_timestamp": [T0 + timedelta(hours=26, minutes=17 * i) for i in range(rows)]},
        schema_overrides={"prediction_timestamp": pl.Datetime("us", "UTC")},
    )


def test_historical_features_by_service_are_its_vector_with_its_fitted_version(carrier_lake: DeltaStore) -> None:
    entities = _entities(100)
    read = lambda frame, **options: get_historical_features(
        carrier_lake, FEATURE_VIEWS, frame, feature_service=PROBE, timestamp_column="prediction_timestamp", **options)
    raw = read(entities, untransformed=True)
    assert raw.frame.columns == [*entities.columns, *PROBE.column_names]  # the ratio's 7d input was read, then dropped
    assert raw.frame.schema == {**entities.schema, **raw_service_schema(PROBE)}
    assert raw.statistics_version is None and raw.service_version == PROBE.version
    with pytest.raises(StatisticsNotFoundError, match="'carrier_probe'"):
        read(entities)  # never a silent raw read when the statistics are missing
    fitted = write_fitted_statistics(carrier_lake, PROBE, fit_statistics(raw.frame, PROBE), training_set="probe",
                                     training_set_version=0, training_rows=raw.frame.height, fitted_at=T0)
    built = read(entities)
    assert built.frame.schema == {**entities.schema, **service_schema(PROBE)}
    assert (built.service, built.service_version, built.statistics_version) == (PROBE.name, PROBE.version, 1)
    served = apply_service_transforms(raw.frame, PROBE, load_fitted_statistics(carrier_lake, PROBE))
    assert built.frame.equals(served)
    assert built.frame["carrier_dep_delay_mean_24h"].null_count() == 0  # the unknown carrier got the training mean
    mean = fitted.steps[0].values["fill"]
    assert raw.frame.filter(pl.col("carrier") == "ZZ")["carrier_dep_delay_mean_24h"].null_count() > 0
    assert mean == raw.frame["carrier_dep_delay_mean_24h"].mean()
    for row in (0, 5, 37, 99):  # the same row read alone offline gives the same bits as in the batch
        alone = read(entities.slice(row, 1)).frame
        for name in PROBE.column_names:
            assert _bits(alone[name].to_list()) == _bits(built.frame[name].slice(row, 1).to_list())
