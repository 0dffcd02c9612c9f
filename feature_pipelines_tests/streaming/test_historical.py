"""Offline temporal accuracy: a training row of a streaming view at prediction time p gets exactly
what the stream serves at p (bit for bit), not the last snapshot before p; the raw hours it reads
are quality-gated as a snapshot read's feature partitions are."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
import redis

from feature_pipelines.compute.snapshots import snapshot_features
from feature_pipelines.features.flights import aircraft_utilisation
from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.offline.historical import get_historical_features, raw_hours_of, stamp_column
from feature_pipelines.quality.ledger import FailedPartitionError, QualityLedger
from feature_pipelines.quality.outcome import CheckOutcome
from feature_pipelines.streaming.consumer import StreamConsumer
from feature_pipelines.streaming.online import read_streaming_features
from feature_pipelines.streaming.producer import push_events
from feature_pipelines.training.audit import audit_recomputation
from feature_pipelines_tests.streaming.conftest import (
    DAY,
    KEYS,
    REPLAY_DAY,
    assert_identical,
    drain,
    random_rows,
    replay_events,
)

VIEW = aircraft_utilisation
RAW = VIEW.source.asset
FEATURES = [f"{VIEW.name}:{name}" for name in VIEW.feature_names]
PREDICTION = "prediction_timestamp"


@pytest.fixture
def lake(tmp_path: Path) -> tuple[DeltaStore, pl.DataFrame]:
    """A lake holding two days of raw flights (the replay day and the day before), and the view's
    daily snapshots of them (what a non-streaming read joins)."""
    store = DeltaStore(str(tmp_path / "lake"))
    events = replay_events(RAW)
    store.write(RAW, events, time_slice=None)
    snapshots = snapshot_features(events, VIEW, start=REPLAY_DAY - DAY, end=REPLAY_DAY + DAY)
    store.write(VIEW.name, snapshots.with_columns(pl.col("event_timestamp").alias("created_timestamp")), time_slice=None)
    return store, events


def _rows(events: pl.DataFrame, n: int = 1500) -> pl.DataFrame:
    return random_rows(VIEW, events, n, seed=15).rename({"event_timestamp": PREDICTION})


def test_training_row_at_p_equals_the_stream_at_p_and_not_the_last_snapshot(
    lake: tuple[DeltaStore, pl.DataFrame], stream_client: redis.Redis
) -> None:
    store, events = lake
    push_events(stream_client, RAW, events, keys=KEYS)
    assert drain(StreamConsumer(stream_client, [VIEW], table=RAW, keys=KEYS, block_ms=1)) == events.height
    rows = _rows(events)

    built = get_historical_features(store, {VIEW.name: VIEW}, rows, FEATURES, timestamp_column=PREDICTION,
                                    include_event_timestamps=True, streaming_views="at_instant")
    served = read_streaming_features(stream_client, VIEW, rows, at=PREDICTION, keys=KEYS)
    assert built.versions == {RAW: store.version(RAW)}
    assert built.frame[stamp_column(VIEW.name)].equals(rows[PREDICTION], check_names=False)  # stamped at p itself
    assert_identical(built.frame.drop(stamp_column(VIEW.name)), served)

    # The same rows joined to the last daily snapshot before p: stale wherever the aircraft flew since.
    stale = get_historical_features(store, {VIEW.name: VIEW}, rows, FEATURES, timestamp_column=PREDICTION,
                                    streaming_views="snapshots").frame
    count = "aircraft_flights_count_24h"
    flew_since_midnight = rows.join(
        events.select(pl.col("tailnum"), pl.col("dep_known_at")), on="tailnum", how="left"
    ).filter(pl.col("dep_known_at") >= REPLAY_DAY, pl.col("dep_known_at") < pl.col(PREDICTION))["tailnum"].n_unique()
    differing = built.frame.filter(pl.col(count).ne_missing(stale[count])).height
    assert flew_since_midnight > 100 and differing > 100, (flew_since_midnight, differing)
    at_midnight = rows.with_columns(pl.lit(REPLAY_DAY).dt.cast_time_unit("us").alias(PREDICTION))
    assert_identical(  # at the snapshot instant itself the two agree, bit for bit
        get_historical_features(store, {VIEW.name: VIEW}, at_midnight, FEATURES, timestamp_column=PREDICTION,
                                streaming_views="at_instant").frame,
        get_historical_features(store, {VIEW.name: VIEW}, at_midnight, FEATURES, timestamp_column=PREDICTION,
                                streaming_views="snapshots").frame
        .with_columns(pl.col(count).fill_null(0)),  # no snapshot row is a count of 0 at the instant
    )


def test_rows_without_entity_or_instant_get_nulls_and_the_audit_reproduces_the_rest(
    lake: tuple[DeltaStore, pl.DataFrame],
) -> None:
    store, events = lake
    rows = pl.concat([
        _rows(events, 50),
        pl.DataFrame({"tailnum": [None, "N14228"], PREDICTION: [REPLAY_DAY, None]},
                     schema={"tailnum": pl.String, PREDICTION: pl.Datetime("us", "UTC")}),
    ])
    built = get_historical_features(store, {VIEW.name: VIEW}, rows, FEATURES, timestamp_column=PREDICTION,
                                    include_event_timestamps=True, streaming_views="at_instant").frame
    assert built.height == rows.height and built.columns[:2] == rows.columns
    assert built.tail(2).select(VIEW.feature_names).null_count().row(0) == (2, 2, 2)
    report = audit_recomputation(built.head(50), VIEW, VIEW.feature_names, events, trusted_known_at="dep_known_at",
                                 at_instant=True)
    assert report.passed, report.message()
    tampered = built.head(50).with_columns(pl.col("aircraft_flights_count_24h") + 1)
    assert not audit_recomputation(tampered, VIEW, VIEW.feature_names, events, trusted_known_at="dep_known_at",
                                   at_instant=True).passed


def test_a_raw_hour_whose_blocking_check_failed_is_refused(lake: tuple[DeltaStore, pl.DataFrame]) -> None:
    store, events = lake
    rows = _rows(events, 200)
    hours = raw_hours_of(VIEW, rows[PREDICTION])
    assert hours[0] == (REPLAY_DAY - DAY).strftime("%Y-%m-%d-%H:%M") and len(hours) == 48
    # A held-back hour the windows read: refused, naming it; another table's failure is not ours.
    failed = (REPLAY_DAY - timedelta(hours=3)).strftime("%Y-%m-%d-%H:%M")
    QualityLedger(store).record([
        CheckOutcome("flights_schema_matches", False, RAW, failed, "a column is missing", blocking=True),
        CheckOutcome("weather_schema_matches", False, "raw_weather", hours[-1], "a column is missing", blocking=True),
    ], run_id="test", row_counts={})
    with pytest.raises(FailedPartitionError, match=failed):
        get_historical_features(store, {VIEW.name: VIEW}, rows, FEATURES, timestamp_column=PREDICTION, ledger=QualityLedger(store),
                                streaming_views="at_instant")
    taken = get_historical_features(store, {VIEW.name: VIEW}, rows, FEATURES, timestamp_column=PREDICTION,
                                    ledger=QualityLedger(store), allow_failed_checks=True, streaming_views="at_instant")
    assert taken.frame.height == rows.height
    # Rows whose windows end before the failed hour read nothing of it.
    early = rows.with_columns(pl.lit(REPLAY_DAY - timedelta(hours=4)).dt.cast_time_unit("us").alias(PREDICTION))
    get_historical_features(store, {VIEW.name: VIEW}, early, FEATURES, timestamp_column=PREDICTION, ledger=QualityLedger(store),
                                streaming_views="at_instant")
