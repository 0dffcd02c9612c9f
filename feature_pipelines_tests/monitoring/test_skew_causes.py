"""The skew monitor on hand-made Delta tables: on-demand features judged, snapshot age judged on its
own, streaming rows judged at the request instant, each mismatch split three ways by Delta time
travel (two kinds of restatement), and a root cause named; `monitor` prints whole descriptions."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.monitoring.cli import check_line
from feature_pipelines.monitoring.skew import FeatureSkew, SkewReport, compare_served_to_offline
from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.serving.request_log import ServedFeature, ServedRequest, requests_to_frame
from feature_pipelines.timeutil import floor_to, utc_now

CARRIER = FEATURE_VIEWS["carrier_delay_stats"]  # hourly snapshots, TTL 3h, freshness warn 2h
AIRCRAFT = FEATURE_VIEWS["aircraft_utilisation"]  # the streaming view
T0 = datetime(2013, 3, 1, 10, tzinfo=UTC)
H = timedelta(hours=1)
MEAN, MEAN_7D = "carrier_dep_delay_mean_24h", "carrier_dep_delay_mean_7d"
RATIO = "carrier_dep_delay_ratio_24h_7d"
HOUR_UTC = "scheduled_departure_hour_utc"
UTC_US = pl.Datetime("us", "UTC")
KEYS = {"carrier": pl.String(), "tailnum": pl.String()}


def carrier_table(rows: list[tuple[str, datetime, float | None, float | None]]) -> pl.DataFrame:
    """carrier_delay_stats rows (carrier, snapshot, mean_24h, mean_7d); other features null."""
    values = {MEAN: [r[2] for r in rows], MEAN_7D: [r[3] for r in rows]}
    return pl.DataFrame(
        {"carrier": [r[0] for r in rows], "event_timestamp": [r[1] for r in rows], "created_timestamp": [r[1] for r in rows]},
        schema={"carrier": pl.String, "event_timestamp": UTC_US, "created_timestamp": UTC_US},
    ).with_columns(pl.Series(name, values.get(name, [None] * len(rows)), dtype=dtype) for name, dtype in CARRIER.schema().items())


def column(view: str, feature: str, keys: tuple[str, ...], value: Any, stamp: datetime | None, status: str = "PRESENT") -> ServedFeature:
    return ServedFeature(view, feature, keys, [value], [status], [stamp])


def request(request_id: str, at: datetime, entities: dict[str, list[Any]], *features: ServedFeature) -> ServedRequest:
    return ServedRequest(request_id, at, entities, list(features))


def judge(store: DeltaStore, *requests: ServedRequest) -> SkewReport:
    return compare_served_to_offline(store, FEATURE_VIEWS, requests_to_frame(list(requests), KEYS))


def feature(report: SkewReport, name: str) -> FeatureSkew:
    return next(f for f in report.features if f.feature == name)


@pytest.fixture
def store(tmp_path: Path) -> DeltaStore:
    store = DeltaStore(root=str(tmp_path / "lake"))
    store.write(CARRIER.name, carrier_table([
        ("AA", T0, 5.0, 5.0), ("AA", T0 + H, 6.0, 3.0), ("AA", T0 + 3 * H, 5.0, 2.5),
        ("UA", T0, None, 4.0), ("UA", T0 + 3 * H, 8.0, 4.0),
    ]), time_slice=None)
    return store


# -- the four defects ---------------------------------------------------------------------------


def test_on_demand_features_are_recomputed_with_the_servers_expression_and_judged(store: DeltaStore) -> None:
    at = T0 + H + timedelta(minutes=20)  # expected: the 11:00 snapshot, 6.0 / 3.0 = 2.0
    departure = datetime(2013, 3, 1, 12, 30, tzinfo=UTC)
    right = request("r1", at, {"carrier": ["AA"]}, column(CARRIER.name, MEAN, ("carrier",), 6.0, T0 + H),
                    column("on_demand", RATIO, ("carrier",), 2.0, None))
    wrong = request("r2", at, {"carrier": ["AA"]}, column(CARRIER.name, MEAN, ("carrier",), 6.0, T0 + H),
                    column("on_demand", RATIO, ("carrier",), 6.0 - 3.0, None))  # a difference, not a ratio
    hours = request("r3", at, {"scheduled_departure": [departure]},
                    column("on_demand", HOUR_UTC, ("scheduled_departure",), 12, None))
    local = request("r4", at, {"scheduled_departure": [departure]},
                    column("on_demand", HOUR_UTC, ("scheduled_departure",), 7, None))  # New York's hour
    report = judge(store, right, wrong, hours, local)
    assert report.on_demand_compared == 2
    ratio, hour = feature(report, RATIO), feature(report, HOUR_UTC)
    assert (ratio.compared, ratio.mismatches, hour.compared, hour.mismatches) == (2, 1, 2, 1)
    assert ratio.examples[0]["request_id"] == "r2" and ratio.examples[0]["expected"] == 2.0
    assert {f.reference for f in report.failing} == {f"on_demand:{RATIO}", f"on_demand:{HOUR_UTC}"}


def test_a_stale_snapshot_is_stale_even_when_its_value_matches(store: DeltaStore) -> None:
    # At 13:30 training expects 13:00 (5.0); the 10:00 snapshot served is 3h behind (SLA 2h) and
    # happens to hold the same 5.0.
    report = judge(store, request("r1", T0 + 3 * H + timedelta(minutes=30), {"carrier": ["AA"]},
                                  column(CARRIER.name, MEAN, ("carrier",), 5.0, T0)))
    mean = feature(report, MEAN)
    assert not mean.passed and mean.stale_mismatches == 1 and mean.examples[0]["reason"] == "stale"


def test_a_value_served_past_the_ttl_is_stale(store: DeltaStore) -> None:
    # At 13:05 the 10:00 snapshot is past the 3h TTL; training sees 13:00 (5.0), the same number.
    report = judge(store, request("r1", T0 + 3 * H + timedelta(minutes=5), {"carrier": ["AA"]},
                                  column(CARRIER.name, MEAN, ("carrier",), 5.0, T0)))
    assert feature(report, MEAN).stale_mismatches == 1


def test_a_stale_null_is_counted_as_stale_not_null(store: DeltaStore) -> None:
    # UA's 10:00 snapshot holds a null mean; served at 13:30 it is 3h behind the 13:00 value 8.0.
    report = judge(store, request("r1", T0 + 3 * H + timedelta(minutes=30), {"carrier": ["UA"]},
                                  column(CARRIER.name, MEAN, ("carrier",), None, T0, "OUTSIDE_MAX_AGE")))
    mean = feature(report, MEAN)
    assert (mean.mismatches, mean.stale_mismatches, mean.null_mismatches) == (1, 1, 0)


def test_monitor_prints_a_check_description_whole() -> None:
    description = "; ".join(f"view:feature_{i}: 10/10 served values differ" for i in range(40))
    line = check_line("serving_skew:served_values_match_offline", False, "ERROR", description)
    assert len(description) > 400 and line.endswith("feature_39: 10/10 served values differ")


# -- streaming views ----------------------------------------------------------------------------


def test_a_streaming_view_served_from_its_tiles_is_judged_at_the_request_instant(tmp_path: Path) -> None:
    store = DeltaStore(root=str(tmp_path / "lake"))
    flights = pl.DataFrame(
        {"tailnum": ["N1", "N1", "N1", "N2"], "dep_known_at": [T0 - 20 * H, T0 - H, T0 + 2 * H, T0 + 5 * H],
         "distance": [100, 200, 400, 50], "dep_delay": [10.0, 20.0, 30.0, 0.0]},
        schema={"tailnum": pl.String, "dep_known_at": UTC_US, "distance": pl.Int64, "dep_delay": pl.Float64},
    )
    store.write("raw_flights", flights, time_slice=None)
    at = T0 + 3 * H  # the stream's value at 13:00: all three flights of [13:00 - 24h, 13:00)
    stream = request("r1", at, {"tailnum": ["N1"]},
                     column(AIRCRAFT.name, "aircraft_flights_count_24h", ("tailnum",), 3, at),
                     column(AIRCRAFT.name, "aircraft_distance_sum_24h", ("tailnum",), 700, at),
                     column(AIRCRAFT.name, "aircraft_dep_delay_mean_24h", ("tailnum",), 20.0, at))
    # A tile read that missed the last flight: the value of the daily snapshot, not of the instant.
    behind = request("r2", at, {"tailnum": ["N1"]},
                     column(AIRCRAFT.name, "aircraft_flights_count_24h", ("tailnum",), 2, at))
    # Read after the raw table's newest event (15:00): the lake cannot judge it yet, so it is left out.
    unjudged = request("r3", T0 + 6 * H, {"tailnum": ["N1"]},
                       column(AIRCRAFT.name, "aircraft_flights_count_24h", ("tailnum",), 99, T0 + 6 * H))
    report = judge(store, stream, behind, unjudged)
    count = feature(report, "aircraft_flights_count_24h")
    assert feature(report, "aircraft_distance_sum_24h").passed and feature(report, "aircraft_dep_delay_mean_24h").passed
    assert (count.compared, count.mismatches, count.stale_mismatches, count.lagged) == (2, 1, 0, 0)
    assert count.examples[0]["expected"] == 3.0 and count.examples[0]["reason"] == "value"
    assert report.awaiting_raw == {AIRCRAFT.name: 1}  # r3, counted and named, judged on a re-run
    assert "1 stream-served values read after the lake's newest raw event" in report.awaiting_note()


def test_a_stream_value_behind_by_less_than_its_freshness_sla_is_lagged_not_skew(tmp_path: Path) -> None:
    store = DeltaStore(root=str(tmp_path / "lake"))
    at = T0 + 3 * H
    just_known = at - timedelta(milliseconds=400)  # known 0.4 s before the read: within the 1 s SLA
    flights = pl.DataFrame(
        # N9's flight an hour later: the lake holds the hour of the reads.
        {"tailnum": ["N1", "N1", "N2", "N2", "N9"],
         "dep_known_at": [T0 - H, just_known, T0 - H, at - 5 * timedelta(seconds=1), at + H],
         "distance": [100, 200, 100, 200, 300], "dep_delay": [1.0, 2.0, 1.0, 2.0, 3.0]},
        schema={"tailnum": pl.String, "dep_known_at": UTC_US, "distance": pl.Int64, "dep_delay": pl.Float64},
    )
    store.write("raw_flights", flights, time_slice=None)
    count = "aircraft_flights_count_24h"
    # N1 served without the flight of 0.4 s ago: lagged. N2 without its flight of 5 s ago: past the SLA, skew.
    lagging = request("r1", at, {"tailnum": ["N1"]}, column(AIRCRAFT.name, count, ("tailnum",), 1, at))
    behind = request("r2", at, {"tailnum": ["N2"]}, column(AIRCRAFT.name, count, ("tailnum",), 1, at))
    result = feature(judge(store, lagging, behind), count)
    assert (result.compared, result.lagged, result.mismatches) == (2, 1, 1)


# -- three-way skew: two kinds of restatement ---------------------------------------------------


def _wait_a_commit_tick() -> None:
    time.sleep(0.02)  # commit times are milliseconds: keep the request strictly between commits


def test_mismatches_split_into_serving_bug_restatement_and_late_data(tmp_path: Path) -> None:
    store = DeltaStore(root=str(tmp_path / "lake"))
    snapshot = floor_to(utc_now(), H) - H
    first = store.write(CARRIER.name, carrier_table([("AA", snapshot, 5.0, 5.0), ("DL", snapshot, 1.0, 1.0)]),
                        time_slice=None, commit_metadata={"dagster_run_id": "run-first"})
    _wait_a_commit_tick()
    at = utc_now()
    served = [
        request("restated", at, {"carrier": ["AA"]}, column(CARRIER.name, MEAN, ("carrier",), 5.0, snapshot)),
        request("late", at, {"carrier": ["UA"]}, column(CARRIER.name, MEAN, ("carrier",), None, None, "NOT_FOUND")),
        request("bug", at, {"carrier": ["DL"]}, column(CARRIER.name, MEAN, ("carrier",), 9.0, snapshot)),
    ]
    _wait_a_commit_tick()
    # A later run restates the hour: AA's value changes, UA's row arrives (it was late).
    restated = store.write(CARRIER.name, carrier_table([("AA", snapshot, 6.0, 5.0), ("DL", snapshot, 1.0, 1.0),
                                                        ("UA", snapshot, 2.0, 2.0)]),
                           time_slice=None, commit_metadata={"dagster_run_id": "run-restate"})
    assert restated > first
    mean = feature(judge(store, *served), MEAN)
    assert (mean.mismatches, mean.serving_bugs, mean.restatements, mean.late_arrivals) == (3, 1, 1, 1)
    assert mean.changed_by == (f"carrier_delay_stats v{restated} (run run-restate)",)
    by_request = {e["request_id"]: e["three_way"] for e in mean.examples}
    assert by_request == {"restated": "restatement", "late": "late_arrival", "bug": "serving_bug"}
    assert "restated 1, late data 1" in mean.summary()


def test_a_value_the_lake_never_held_is_a_serving_bug_with_its_root_cause(store: DeltaStore) -> None:
    at = T0 + H + timedelta(minutes=30)  # expected 6.0 (11:00); served in seconds
    report = judge(store, request("r1", at, {"carrier": ["AA"]}, column(CARRIER.name, MEAN, ("carrier",), 360.0, T0 + H)))
    mean = feature(report, MEAN)
    assert mean.serving_bugs == 1 and mean.root_cause is not None and mean.root_cause.cause == "units x60"
    assert "100% of mismatches (1/1) equal *units x60*" in mean.summary()
    assert "raw table 'raw_flights' does not exist" in mean.summary()  # the window faults, named as not replayed
