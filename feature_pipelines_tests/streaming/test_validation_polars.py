"""The stream's polars evaluation of the raw suites gives GX's verdicts: same outcomes, same rejections.

Each batch is judged twice, by the stream's validator (polars, GX forbidden) and by the batch path's
GX validator: real 2013 events, alone and with injected bad events that break every rule, in
batches that span many hours and in small single-hour ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pytest

from feature_pipelines.quality import raw_rules
from feature_pipelines.quality.raw_rules import LandingFacts
from feature_pipelines.sources import nycflights
from feature_pipelines.streaming import expectations
from feature_pipelines.streaming.events import StreamTable, hour_windows, stream_table
from feature_pipelines.streaming.validation import Rejection, judge_events
from feature_pipelines_tests.streaming.conftest import replay_events

GX_PATH = {
    raw_rules.FLIGHTS_TABLE: raw_rules.validate_raw_flights_partitions,
    raw_rules.WEATHER_TABLE: raw_rules.validate_raw_weather_partitions,
}


@pytest.fixture
def no_gx(monkeypatch: pytest.MonkeyPatch) -> None:
    """The polars path must decide every expectation of the raw suites itself."""
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the polars path called GX")
    monkeypatch.setattr(expectations, "validate_frame", refuse)


def _gx_table(table: StreamTable) -> StreamTable:
    return dataclasses.replace(table, validate=GX_PATH[table.name])


def _outcomes(validate: Callable[..., Any], frame: pl.DataFrame, facts: LandingFacts | None) -> list[tuple[Any, ...]]:
    times = frame["dep_known_at" if "dep_known_at" in frame.columns else "observed_at"].drop_nulls()
    partitions = hour_windows(times.dt.epoch("us").to_list() or [0])
    found = validate(frame, partitions=partitions, landing=facts)
    return [
        (key, o.check_name, o.passed, o.blocking, o.message, o.details,
         None if o.failing_rows is None else o.failing_rows.tolist())
        for key, outcomes in found.items() for o in outcomes
    ]


def _judged(table: StreamTable, frame: pl.DataFrame, known: dict[str, frozenset[str]] | None) -> list[Rejection]:
    polars_path = judge_events(table, frame, known_keys=known)
    gx_path = judge_events(_gx_table(table), frame, known_keys=known)
    assert polars_path == gx_path
    facts = LandingFacts(known_keys=known, hourly_counts={})  # as judge_events gives them
    assert _outcomes(table.validate, frame, facts) == _outcomes(GX_PATH[table.name], frame, facts)
    return polars_path


def _batches(frame: pl.DataFrame, size: int) -> Iterator[pl.DataFrame]:
    for start in range(0, frame.height, size):
        yield frame.slice(start, size)


def _known_keys(flights: pl.DataFrame) -> dict[str, frozenset[str]]:
    tails = flights["tailnum"].drop_nulls().unique().sort().to_list()
    return {
        "carrier": frozenset(flights["carrier"].drop_nulls().to_list()),
        "origin": frozenset(raw_rules.ORIGINS),
        "dest": frozenset(flights["dest"].drop_nulls().to_list()),
        "tailnum": frozenset(tails[::2]),  # half the real tails unknown: the warn rule fires
    }


def _set(row: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**row, **changes}


def _bad_flights(real: pl.DataFrame) -> pl.DataFrame:
    """One defect per row, on real departed and cancelled flights of the batch's hours."""
    departed = real.filter(~pl.col("cancelled")).to_dicts()
    cancelled = nycflights.flights().filter(pl.col("cancelled")).head(1).to_dicts()[0]
    at = departed[0]["dep_known_at"]
    cancelled = _set(cancelled, dep_known_at=at, scheduled_departure_at=at)
    one = departed[1]
    rows = [
        _set(one, flight_number=90001, distance=0), _set(one, flight_number=90002, distance=6000),
        _set(one, flight_number=90003, dep_delay=-121), _set(one, flight_number=90004, dep_delay=1441),
        _set(one, flight_number=90005, air_time=801), _set(one, flight_number=90006, air_time=-1),
        _set(one, flight_number=90007, carrier="ZZ"), _set(one, flight_number=90008, dest="XXX"),
        _set(one, flight_number=90009, origin="BOS"), _set(one, flight_number=90010, tailnum="N0NE"),
        _set(one, flight_number=90011, dep_delay=None), _set(one, flight_number=90012, departed_at=None),
        _set(one, flight_number=90013, departed_at=one["departed_at"] + timedelta(minutes=1)),
        _set(cancelled, flight_number=90014, departed_at=at), _set(cancelled, flight_number=90015, dep_delay=3),
        _set(cancelled, flight_number=90016, dep_known_at=at + timedelta(minutes=5)),
        _set(one, flight_number=90017, cancelled=None), _set(one, flight_number=90018, tailnum=None),
        departed[2], _set(departed[3], arr_delay=(departed[3]["arr_delay"] or 0) + 7),  # identical and conflicting copies
    ]
    rows += [_set(one, **{"flight_number": 90100 + i, column: None}) for i, column in enumerate(raw_rules.FLIGHTS_REQUIRED)]
    return pl.DataFrame(rows, schema=real.schema)


def test_real_flights_batches_get_the_gx_verdicts(no_gx: None) -> None:
    events = replay_events("raw_flights", days=1)
    known = _known_keys(events)
    # The day in batches of 500, and its first 84 events in batches of 7 (each batch is judged by GX
    # as well, at ~0.5 s a batch: the whole day in sevens would cost a minute for no new case).
    batches = [*_batches(events, 500), *_batches(events.head(84), 7)]
    rejected = [r for batch in batches for r in _judged(stream_table("raw_flights"), batch, known)]
    assert {r.rule for r in rejected} == set()  # real data breaks no blocking rule


def test_bad_flights_get_the_gx_verdicts(no_gx: None) -> None:
    events = replay_events("raw_flights", days=1)
    known = _known_keys(events)
    real = events.head(300)
    batch = pl.concat([real, _bad_flights(real)])
    rejected = _judged(stream_table("raw_flights"), batch, known)
    assert {r.rule for r in rejected} == {
        "flights_required_columns_not_null", "flights_cancelled_have_null_times", "flights_unique",
        "flights_redelivered", "flights_values_in_range", "flights_known_carrier", "flights_known_airports",
    }
    # Every injected row but the two whose tail number only warns (unknown, missing).
    assert len(rejected) == 20 - 2 + len(raw_rules.FLIGHTS_REQUIRED)
    assert {90010, 90018}.isdisjoint(batch[[r.row for r in rejected]]["flight_number"].to_list())
    # Without dimension facts the key rules are not judged; with a null time the batch spans a null hour.
    assert {r.rule for r in _judged(stream_table("raw_flights"), batch, None)} >= {"flights_values_in_range"}
    # A small batch of one hour (the suite without the null rate), and the rows of one hour alone.
    small = pl.concat([real.head(5), _bad_flights(real).head(6)])
    assert len(_judged(stream_table("raw_flights"), small, known)) == 6


def test_flights_hour_rules_get_the_gx_verdicts(no_gx: None) -> None:
    """Share rules: too many departed flights without a tail number (warn), an hour of cancellations
    whose columns are all null (the February 2013 blizzard), too many delays missing (warn)."""
    events = replay_events("raw_flights", days=1)
    busiest = events["dep_known_at"].dt.truncate("1h").mode().min()
    hour = events.filter(pl.col("dep_known_at").dt.truncate("1h") == busiest)
    no_tails = hour.with_columns(pl.when(pl.int_range(pl.len()) % 10 == 0).then(None).otherwise(pl.col("tailnum")).alias("tailnum"))
    blizzard = nycflights.flights().filter(
        pl.col("cancelled") & pl.col("dep_known_at").is_between(datetime(2013, 2, 9, 12, tzinfo=UTC), datetime(2013, 2, 9, 16, tzinfo=UTC)))
    assert blizzard["departed_at"].null_count() == blizzard.height > 20
    # One departed flight without a tail among more than 50: within the 2% the rule allows.
    assert hour.filter(~pl.col("cancelled")).height > 50
    one_tail = hour.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(None).otherwise(pl.col("tailnum")).alias("tailnum"))
    # Some delays missing, fewer than half: within the null rate.
    some_delays = hour.with_columns(pl.when(pl.int_range(pl.len()) % 3 == 0).then(None).otherwise(pl.col("dep_delay")).alias("dep_delay"))
    # Two departed flights without a tail, beside many cancelled ones in the same hour: the 2% is
    # of departed flights only, so the hour warns (over all its flights it would not).
    instants = [c for c, t in blizzard.schema.items() if isinstance(t, pl.Datetime)]
    moved = blizzard.with_columns(pl.col(instants) + (busiest - blizzard["dep_known_at"].dt.truncate("1h").min()),
                                  pl.col("flight_number") + 50_000).filter(pl.col("dep_known_at").dt.truncate("1h") == busiest)
    two_tails = pl.concat([hour.with_columns(pl.when(pl.int_range(pl.len()) < 2).then(None).otherwise(pl.col("tailnum")).alias("tailnum")), moved])
    assert 0.02 * hour.filter(~pl.col("cancelled")).height < 2 < 0.02 * two_tails.height
    batches = (no_tails, one_tail, two_tails, some_delays, blizzard, blizzard.head(3), pl.concat([hour, blizzard]).sort("dep_known_at"))
    for batch in batches:
        _judged(stream_table("raw_flights"), batch, _known_keys(events))
    outcomes = _outcomes(stream_table("raw_flights").validate, no_tails, None)
    assert any(check == "flights_tailnum_present" and not passed for _, check, passed, *_ in outcomes)


def _bad_weather(real: pl.DataFrame) -> pl.DataFrame:
    one = real.to_dicts()[0]
    later = [_set(one, observed_at=one["observed_at"] + timedelta(minutes=i)) for i in range(1, 13)]
    rows = [
        _set(later[0], origin="XXX"), _set(later[1], temp=131.0), _set(later[2], temp=-41.0),
        _set(later[3], humid=101.0), _set(later[4], humid=-0.5), _set(later[5], wind_speed=-1.0),
        _set(later[6], wind_speed=150.0), _set(later[7], temp=float("nan")), _set(later[8], origin=None),
        _set(later[9], observed_at=None), real.row(1, named=True),
        _set(real.row(2, named=True), temp=(real.row(2, named=True)["temp"] or 0.0) + 1.5),
        _set(later[10], temp=None, humid=float("nan")),
    ]
    return pl.DataFrame(rows, schema=real.schema)


def test_weather_batches_get_the_gx_verdicts(no_gx: None) -> None:
    events = replay_events("raw_weather", days=2)
    table = stream_table("raw_weather")
    for size in (40, 3):
        assert [r for batch in _batches(events, size) for r in _judged(table, batch, None)] == []
    batch = pl.concat([events.head(30), _bad_weather(events.head(30))])
    rejected = _judged(table, batch, None)
    assert {r.rule for r in rejected} == {
        "weather_keys_not_null", "weather_values_in_range", "weather_values_not_nan", "weather_wind_speed_plausible",
        "weather_unique_observations", "weather_redelivered",
    }
    assert len(rejected) == 13


@pytest.mark.parametrize("table", ["raw_flights", "raw_weather"])
def test_frames_off_the_contract_get_the_gx_verdicts(table: str) -> None:
    """Wrong dtypes and missing columns (the stream casts to the contract; the validator still
    answers exactly as GX does for other frames)."""
    events = replay_events(table, days=1).head(50)
    column = "distance" if table == "raw_flights" else "temp"
    schema_rule = stream_table(table).schema_rule
    for frame in (events.with_columns(pl.col(column).cast(pl.String)), events.drop(column)):
        polars_path = _outcomes(stream_table(table).validate, frame, None)
        assert polars_path == _outcomes(GX_PATH[table], frame, None)
        assert any(check == schema_rule and not passed for _, check, passed, *_ in polars_path)
