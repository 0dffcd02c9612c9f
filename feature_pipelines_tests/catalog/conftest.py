"""A small real lake of states for the catalog: a written feature table, a quality run, drift and skew days
and a model registry, each written by the platform's own writers (Delta tables in a tmp dir)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from feature_pipelines.catalog.usage import MODEL_REGISTRY_TABLE
from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.monitoring.drift import drift_report
from feature_pipelines.monitoring.tables import SERVING_DRIFT, SKEW
from feature_pipelines.names import CREATED_TIMESTAMP, EVENT_TIMESTAMP
from feature_pipelines.offline.delta_store import DeltaStore, TimeSlice
from feature_pipelines.quality.ledger import QualityLedger
from feature_pipelines.quality.outcome import CheckOutcome

WRITTEN_AT = datetime(2013, 1, 8, 0, 30, tzinfo=UTC)  # when the aircraft table was last written
DAY = datetime(2013, 1, 7, tzinfo=UTC)
AIRCRAFT = FEATURE_VIEWS["aircraft_utilisation"]
ROUTE = FEATURE_VIEWS["route_delay_stats"]


def _write_aircraft_table(store: DeltaStore) -> None:
    """Two daily snapshots of the aircraft view, the later one written at WRITTEN_AT."""
    rows = {
        "tailnum": ["N14228", "N14228"],
        EVENT_TIMESTAMP: [DAY, DAY + timedelta(days=1)],
        "aircraft_flights_count_24h": [3, 4],
        "aircraft_distance_sum_24h": [2400, 3100],
        "aircraft_dep_delay_mean_24h": [5.0, None],
        CREATED_TIMESTAMP: [WRITTEN_AT - timedelta(days=1), WRITTEN_AT],
    }
    frame = pl.DataFrame(rows, schema_overrides={EVENT_TIMESTAMP: pl.Datetime("us", "UTC"),
                                                 CREATED_TIMESTAMP: pl.Datetime("us", "UTC")})
    store.write(AIRCRAFT.name, frame, time_slice=None)


def _record_quality(store: DeltaStore) -> None:
    """The aircraft table's run: all passed but the range rule on the mean delay; the route table's run: a
    volume failure (table-wide)."""
    outcome = CheckOutcome
    QualityLedger(store).record([
        outcome("schema_matches_declaration", True, AIRCRAFT.name, "2013-01-07", "all 5 rule(s) passed"),
        outcome("feature_values_in_range", False, AIRCRAFT.name, "2013-01-07",
                "table 'aircraft_utilisation' partition 2013-01-07: column 'aircraft_dep_delay_mean_24h' rule "
                "expect_column_values_to_be_between failed: 1 row(s) above 1440"),
    ], run_id="run-aircraft", row_counts={"2013-01-07": 2})
    QualityLedger(store).record([
        outcome("row_volume_within_tolerance", False, ROUTE.name, "2013-01-07",
                "table 'route_delay_stats' partition 2013-01-07: 0 rows but the source had 697 events"),
    ], run_id="run-route", row_counts={"2013-01-07": 0})


def _record_drift(store: DeltaStore) -> None:
    """A day of training-vs-serving drift: the aircraft count shifted by a lot, the distance not at all."""
    generator = np.random.default_rng(7)
    reference = pl.DataFrame({"aircraft_flights_count_24h": generator.integers(0, 6, 2000),
                              "aircraft_distance_sum_24h": generator.integers(0, 4000, 2000)})
    current = reference.with_columns(pl.col("aircraft_flights_count_24h") + 5)
    thresholds = {name: AIRCRAFT.feature(name).monitoring for name in reference.columns}
    drifts = drift_report(reference, current, thresholds)
    SERVING_DRIFT.write(store, SERVING_DRIFT.rows(DAY, drifts, comparison="training_vs_serving"), DAY,
                        DAY + timedelta(days=1))


def _skew_row(feature: str, compared: int, mismatches: int) -> dict[str, Any]:
    known = {"day": DAY, "view": AIRCRAFT.name, "feature": feature, "compared": compared, "mismatches": mismatches,
             "mismatch_rate": mismatches / compared, "passed": mismatches == 0}
    return {column: known.get(column) for column in SKEW.schema()}


def _record_skew(store: DeltaStore) -> None:
    rows = [_skew_row("aircraft_flights_count_24h", 200, 0), _skew_row("aircraft_distance_sum_24h", 200, 7)]
    frame = pl.DataFrame(rows, schema=SKEW.schema(), orient="row")
    store.write(SKEW.name, frame, time_slice=TimeSlice("day", DAY, DAY + timedelta(days=1)))


def register_model(store: DeltaStore, name: str, version: int, service: str) -> None:
    store.append(MODEL_REGISTRY_TABLE, pl.DataFrame(
        {"model_name": [name], "model_version": [version], "feature_service": [service]}))


@pytest.fixture(scope="module")
def state_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lake holding every state the catalog reads, but no model registry."""
    root = tmp_path_factory.mktemp("catalog_lake")
    store = DeltaStore(root=str(root))
    _write_aircraft_table(store)
    _record_quality(store)
    _record_drift(store)
    _record_skew(store)
    return root
