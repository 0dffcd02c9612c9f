"""Skew classification on hand-made tables: match, publish lag within the SLA, null, stale, value."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest

from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.monitoring.skew import SkewInputError, compare_served_to_offline
from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.serving.request_log import ServedFeature, ServedRequest, requests_to_frame

VIEW = FEATURE_VIEWS["carrier_delay_stats"]  # hourly snapshots, TTL 3h, freshness warn 2h
T0 = datetime(2013, 3, 1, 10, tzinfo=timezone.utc)
H = timedelta(hours=1)
MEAN = "carrier_dep_delay_mean_24h"
COUNT = "carrier_flights_count_24h"


def table(rows: list[tuple[str, datetime, float | None, int]]) -> pl.DataFrame:
    """carrier_delay_stats rows: (carrier, snapshot, mean_24h, count_24h); other features null."""
    frame = pl.DataFrame(
        {
            "carrier": [r[0] for r in rows],
            "event_timestamp": [r[1] for r in rows],
            "created_timestamp": [r[1] for r in rows],
        },
        schema={"carrier": pl.String, "event_timestamp": pl.Datetime("us", "UTC"), "created_timestamp": pl.Datetime("us", "UTC")},
    )
    columns = []
    for name, dtype in VIEW.schema().items():
        if name == MEAN:
            columns.append(pl.Series(name, [r[2] for r in rows], dtype=dtype))
        elif name == COUNT:
            columns.append(pl.Series(name, [r[3] for r in rows], dtype=dtype))
        else:
            columns.append(pl.Series(name, [None] * len(rows), dtype=dtype))
    return frame.with_columns(columns)


@pytest.fixture
def store(tmp_path: Path) -> DeltaStore:
    store = DeltaStore(root=str(tmp_path / "lake"))
    store.write(
        VIEW.name,
        table(
            [
                ("AA", T0, 5.0, 10),
                ("AA", T0 + H, 7.0, 12),
                ("AA", T0 + 2 * H, 9.0, 14),
                ("UA", T0 + H, None, 0),  # no departed flights: the mean is null, the count 0
            ]
        ),
        time_slice=None,
    )
    return store


def served(request_id: str, at: datetime, carrier: str, mean: float | None, count: int, stamp: datetime | None) -> ServedRequest:
    def column(feature: str, value: float | int | None) -> ServedFeature:
        return ServedFeature(VIEW.name, feature, ("carrier",), [value], ["PRESENT" if stamp else "NOT_FOUND"], [stamp])

    return ServedRequest(request_id, at, {"carrier": [carrier]}, [column(MEAN, mean), column(COUNT, count)])


def log(*requests: ServedRequest) -> pl.DataFrame:
    return requests_to_frame(list(requests), {"carrier": pl.String(), "origin": pl.String()})


def by_feature(report) -> dict[str, object]:
    return {f.feature: f for f in report.features}


def test_exact_values_match(store: DeltaStore) -> None:
    report = compare_served_to_offline(store, FEATURE_VIEWS, log(served("r1", T0 + H + 30 * timedelta(minutes=1), "AA", 7.0, 12, T0 + H)))
    assert report.passed and by_feature(report)[MEAN].mismatches == 0 and by_feature(report)[MEAN].compared == 1


def test_one_publish_behind_within_the_sla_is_lag_not_skew(store: DeltaStore) -> None:
    # At 12:05 training expects the 12:00 snapshot; the store still served 11:00 (publish at :15).
    report = compare_served_to_offline(store, FEATURE_VIEWS, log(served("r1", T0 + 2 * H + timedelta(minutes=5), "AA", 7.0, 12, T0 + H)))
    mean = by_feature(report)[MEAN]
    assert report.passed and mean.lagged == 1 and mean.mismatches == 0


def test_zero_imputed_null_is_a_null_mismatch(store: DeltaStore) -> None:
    report = compare_served_to_offline(store, FEATURE_VIEWS, log(served("r1", T0 + H + timedelta(minutes=20), "UA", 0.0, 0, T0 + H)))
    mean, count = by_feature(report)[MEAN], by_feature(report)[COUNT]
    assert not report.passed and [f.reference for f in report.failing] == [f"carrier_delay_stats:{MEAN}"]
    assert mean.null_mismatches == 1 and mean.examples[0]["reason"] == "null" and mean.examples[0]["expected"] is None
    assert count.passed  # 0 flights is a real count, served correctly


def test_a_snapshot_older_than_the_sla_is_stale(store: DeltaStore) -> None:
    # At 12:40 training expects 12:00; serving the 10:00 snapshot is exactly 2h (warn_after) behind.
    at_limit = compare_served_to_offline(store, FEATURE_VIEWS, log(served("r1", T0 + 2 * H + timedelta(minutes=40), "AA", 5.0, 10, T0)))
    assert at_limit.passed and by_feature(at_limit)[MEAN].lagged == 1
    # Once 13:00 exists, the same 10:00 values are 3h behind: stale, even though they are exactly
    # what the lake holds for 10:00.
    store.append(VIEW.name, table([("AA", T0 + 3 * H, 11.0, 16)]))
    report = compare_served_to_offline(store, FEATURE_VIEWS, log(served("r2", T0 + 3 * H + timedelta(minutes=30), "AA", 5.0, 10, T0)))
    mean = by_feature(report)[MEAN]
    assert not mean.passed and mean.stale_mismatches == 1 and mean.max_abs_diff == pytest.approx(6.0)
    assert mean.examples[0]["reason"] == "stale" and mean.examples[0]["served_snapshot"] == T0.isoformat()


def test_another_window_is_a_value_mismatch_with_its_difference(store: DeltaStore) -> None:
    report = compare_served_to_offline(store, FEATURE_VIEWS, log(served("r1", T0 + 2 * H + timedelta(minutes=30), "AA", 8.5, 14, None)))
    mean = by_feature(report)[MEAN]
    assert mean.mismatches == 1 and mean.examples[0]["reason"] == "value"
    assert mean.max_abs_diff == pytest.approx(0.5) and by_feature(report)[COUNT].passed


def test_past_ttl_training_sees_null_so_serving_null_matches(store: DeltaStore) -> None:
    late = T0 + 2 * H + VIEW.ttl + timedelta(minutes=1)
    report = compare_served_to_offline(store, FEATURE_VIEWS, log(served("r1", late, "AA", None, None, None)))
    assert report.passed


def test_tolerance_is_per_feature(store: DeltaStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    from feature_pipelines.features.spec import FeatureMonitoring

    lenient = replace(VIEW, features=tuple(
        replace(f, monitoring=FeatureMonitoring(skew_tolerance=0.5)) if f.name == MEAN else f for f in VIEW.features
    ))
    requests = [served("r1", T0 + H + timedelta(minutes=30), "AA", 7.0, 12, T0 + H), served("r2", T0 + H + timedelta(minutes=30), "UA", 0.0, 0, T0 + H)]
    strict = compare_served_to_offline(store, FEATURE_VIEWS, log(*requests))
    relaxed = compare_served_to_offline(store, {**FEATURE_VIEWS, VIEW.name: lenient}, log(*requests))
    assert not strict.passed and relaxed.passed
    assert by_feature(relaxed)[MEAN].mismatch_rate == 0.5


def test_unknown_view_or_feature_is_named(store: DeltaStore) -> None:
    frame = log(served("r1", T0 + H, "AA", 7.0, 12, T0 + H))
    with pytest.raises(SkewInputError, match="unknown feature view.*'nope'"):
        compare_served_to_offline(store, FEATURE_VIEWS, frame.with_columns(pl.lit("nope").alias("view")))
    with pytest.raises(SkewInputError, match="carrier_delay_stats.*no feature.*'mystery'"):
        compare_served_to_offline(store, FEATURE_VIEWS, frame.with_columns(pl.lit("mystery").alias("feature")))
