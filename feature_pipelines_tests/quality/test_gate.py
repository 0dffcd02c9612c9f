"""The gate (quality.gate.judge): rule actions applied per partition to real-looking hours of 2013."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest

from feature_pipelines.quality.actions import drop, fail, warn
from feature_pipelines.quality.gate import GateVerdict, drop_allowance, judge
from feature_pipelines.quality.outcome import CheckOutcome, Finding, outcome
from feature_pipelines.quality.raw_rules import (
    FLIGHTS_KEY,
    FLIGHTS_PARTITION_COLUMN,
    FLIGHTS_RULES,
    ORIGINS,
    SOURCE_FILE,
    SOURCE_ROW,
    WEATHER_KEY,
    WEATHER_PARTITION_COLUMN,
    WEATHER_RULES,
    LandingFacts,
    delivery_index,
    flights_schema,
    validate_raw_flights_partitions,
    validate_raw_weather_partitions,
    weather_schema,
)
from feature_pipelines.quality.suites import assign_partitions
from feature_pipelines.sources import nycflights
from feature_pipelines.timeutil import PartitionWindow

HOUR = timedelta(hours=1)
START = datetime(2013, 3, 1, 16, tzinfo=timezone.utc)  # 11:00-14:00 in New York
WINDOWS = [PartitionWindow((START + i * HOUR).strftime("%Y-%m-%d-%H:%M"), START + i * HOUR, START + (i + 1) * HOUR) for i in range(3)]
KEYS = [w.key for w in WINDOWS]
H0, H1, H2 = KEYS


@pytest.fixture(scope="module")
def flights() -> pl.DataFrame:
    """Three real hours of departures, as one landed file."""
    events = nycflights.flights().filter(pl.col(FLIGHTS_PARTITION_COLUMN) >= START, pl.col(FLIGHTS_PARTITION_COLUMN) < WINDOWS[-1].end)
    return _landed(events.sort(FLIGHTS_PARTITION_COLUMN, *FLIGHTS_KEY))


@pytest.fixture(scope="module")
def weather() -> pl.DataFrame:
    events = nycflights.weather().filter(pl.col(WEATHER_PARTITION_COLUMN) >= START, pl.col(WEATHER_PARTITION_COLUMN) < WINDOWS[-1].end)
    return _landed(events.sort(WEATHER_PARTITION_COLUMN, "origin"))


def _landed(frame: pl.DataFrame, file: str = "part-0000.parquet") -> pl.DataFrame:
    return frame.with_columns(pl.lit(file).alias(SOURCE_FILE), pl.int_range(pl.len(), dtype=pl.UInt32).alias(SOURCE_ROW))


def _partition_rows(frame: pl.DataFrame, column: str = FLIGHTS_PARTITION_COLUMN) -> np.ndarray:
    return assign_partitions(frame, column, WINDOWS, closed="left")


def _flights_verdict(frame: pl.DataFrame, landing: LandingFacts | None = None) -> tuple[dict[str, list[CheckOutcome]], GateVerdict]:
    results = validate_raw_flights_partitions(frame, partitions=WINDOWS, landing=landing)
    return results, judge("raw_flights", _partition_rows(frame), KEYS, results, FLIGHTS_RULES)


def _weather_verdict(frame: pl.DataFrame, landing: LandingFacts | None = None) -> tuple[dict[str, list[CheckOutcome]], GateVerdict]:
    results = validate_raw_weather_partitions(frame, partitions=WINDOWS, landing=landing)
    return results, judge("raw_weather", _partition_rows(frame, WEATHER_PARTITION_COLUMN), KEYS, results, WEATHER_RULES)


def _dropped(verdict: GateVerdict) -> dict[str, dict[str, list[int]]]:
    return {p.partition: {check: rows.tolist() for check, rows in p.dropped.items()} for p in verdict.partitions if p.dropped}


def _acted(verdict: GateVerdict, key: str, check: str) -> CheckOutcome:
    partition = next(p for p in verdict.partitions if p.partition == key)
    return next(o for o in partition.outcomes if o.check_name == check)


def _set_rows(frame: pl.DataFrame, rows: Sequence[int], column: str, value: object) -> pl.DataFrame:
    hit = pl.int_range(pl.len()).is_in(list(rows))
    return frame.with_columns(pl.when(hit).then(pl.lit(value)).otherwise(pl.col(column)).alias(column))


def _rows_of(frame: pl.DataFrame, key: str) -> list[int]:
    return np.flatnonzero(_partition_rows(frame) == KEYS.index(key)).tolist()


def test_drop_allowance() -> None:
    one_percent = drop("a bad reading")
    assert [drop_allowance(one_percent, rows) for rows in (0, 1, 3, 52, 199, 200, 299, 300, 1000)] == [1, 1, 1, 1, 1, 2, 2, 3, 10]
    everything = drop("identical copies", budget=1.0)
    assert [drop_allowance(everything, rows) for rows in (0, 1, 52)] == [0, 1, 52]
    half = drop("half", budget=0.5)
    assert [drop_allowance(half, rows) for rows in (1, 3, 4, 9)] == [1, 1, 2, 4]
    # 0.29 x 100 is 28.999999999999996 in floating point; the allowance is still 29 rows.
    assert drop_allowance(drop("a share", budget=0.29), 100) == 29
    with pytest.raises(ValueError, match="drop_budget"):
        drop("nothing", budget=0)
    with pytest.raises(ValueError, match="reason"):
        fail(" ")


def test_real_hours_pass_whole(flights: pl.DataFrame) -> None:
    results, verdict = _flights_verdict(flights)
    assert verdict.passed_keys == KEYS and not verdict.failed and _dropped(verdict) == {}
    assert verdict.keep.tolist() == [True] * flights.height
    assert [p.rows for p in verdict.partitions] == [len(_rows_of(flights, key)) for key in KEYS]
    assert all(p.rows > 0 for p in verdict.partitions)
    assert [o.check_name for o in verdict.outcomes] == [o.check_name for key in KEYS for o in results[key]]


def test_fail_rule_holds_back_exactly_its_partition(flights: pl.DataFrame) -> None:
    rejection = "file 'part-0003.parquet': column 'dep_delay' has dtype String, declared Int64"
    _, verdict = _flights_verdict(flights, LandingFacts(rejected_hours={WINDOWS[1].start: [rejection]}))
    assert verdict.passed_keys == [H0, H2]
    assert [(p.partition, p.failed_checks) for p in verdict.failed] == [(H1, ["flights_landing_contract"])]
    assert verdict.keep.tolist() == [row not in _rows_of(flights, H1) for row in range(flights.height)]
    assert _dropped(verdict) == {} and verdict.dropped_by_check() == {}
    held = _acted(verdict, H1, "flights_landing_contract")
    assert not held.passed and held.blocking and held.metadata["action"] == "fail"
    assert held.message.endswith("; action fail: the partition is held back") and rejection in held.message
    assert _acted(verdict, H0, "flights_landing_contract").passed and _acted(verdict, H2, "flights_landing_contract").passed


def test_drop_within_budget_drops_exactly_the_failing_rows(flights: pl.DataFrame) -> None:
    bad = _rows_of(flights, H1)[7]
    results, verdict = _flights_verdict(_set_rows(flights, [bad], "distance", -5))
    assert results[H1][[o.check_name for o in results[H1]].index("flights_values_in_range")].passed is False
    assert verdict.passed_keys == KEYS
    assert _dropped(verdict) == {H1: {"flights_values_in_range": [bad]}}
    assert np.flatnonzero(~verdict.keep).tolist() == [bad]
    rows = len(_rows_of(flights, H1))
    acted = _acted(verdict, H1, "flights_values_in_range")
    assert acted.passed and acted.blocking
    assert (acted.metadata["dropped_rows"], acted.metadata["drop_allowance"]) == (1, 1)
    assert acted.metadata["dropped_share"] == pytest.approx(1 / rows)
    assert f"action drop: 1 of {rows} rows" in acted.message and "dropped to quarantine, within the budget of 1" in acted.message
    assert verdict.dropped_by_check() == {"flights_values_in_range": 1}


def test_whole_identical_redelivery_is_dropped_within_its_budget(flights: pl.DataFrame) -> None:
    """Budget 1.0: a second file that repeats an hour is dropped row for row, the first one kept."""
    h1 = flights.filter(pl.col(FLIGHTS_PARTITION_COLUMN) >= WINDOWS[1].start, pl.col(FLIGHTS_PARTITION_COLUMN) < WINDOWS[1].end)
    frame = pl.concat([flights, _landed(h1.drop(SOURCE_FILE, SOURCE_ROW), "part-0001.parquet")])
    _, verdict = _flights_verdict(frame)
    copies = list(range(flights.height, frame.height))
    assert verdict.passed_keys == KEYS
    assert _dropped(verdict) == {H1: {"flights_redelivered": copies}}
    assert verdict.keep.tolist() == [row < flights.height for row in range(frame.height)]
    acted = _acted(verdict, H1, "flights_redelivered")
    assert acted.passed and acted.metadata["dropped_rows"] == h1.height and acted.metadata["drop_allowance"] == 2 * h1.height


def test_drop_over_budget_fails_only_its_partition(flights: pl.DataFrame) -> None:
    over = _rows_of(flights, H1)[:2]  # 2 bad rows where the allowance is 1
    within = _rows_of(flights, H0)[-1:]
    _, verdict = _flights_verdict(_set_rows(flights, [*over, *within], "distance", -5))
    assert verdict.passed_keys == [H0, H2]
    assert [(p.partition, p.failed_checks, dict(p.dropped)) for p in verdict.failed] == [(H1, ["flights_values_in_range"], {})]
    held = _acted(verdict, H1, "flights_values_in_range")
    rows = len(_rows_of(flights, H1))
    assert not held.passed and held.metadata["dropped_rows"] == 0 and held.metadata["drop_allowance"] == 1
    assert f"2 of {rows} rows" in held.message and "over the budget of 1 (1.00%): the partition is held back" in held.message
    # The failed partition is held back whole; its neighbours lose only their own bad row.
    assert _dropped(verdict) == {H0: {"flights_values_in_range": within}}
    held_back = set(_rows_of(flights, H1)) | set(within)
    assert verdict.keep.tolist() == [row not in held_back for row in range(flights.height)]


def test_warn_keeps_every_row_and_never_blocks(flights: pl.DataFrame) -> None:
    departed = flights.with_row_index().filter(~pl.col("cancelled"), pl.col(FLIGHTS_PARTITION_COLUMN) >= WINDOWS[1].start,
                                               pl.col(FLIGHTS_PARTITION_COLUMN) < WINDOWS[1].end)["index"].to_list()
    missing = departed[: len(departed) // 3]
    known = {"carrier": frozenset(nycflights.airlines()["carrier"].to_list()), "origin": frozenset(ORIGINS),
             "dest": frozenset(nycflights.airports()["faa"].to_list()) | frozenset(nycflights.KNOWN_MISSING_AIRPORTS),
             "tailnum": frozenset(nycflights.planes()["tailnum"].to_list())}
    frame = _set_rows(flights, missing, "tailnum", None)
    results, verdict = _flights_verdict(frame, LandingFacts(known_keys=known))
    assert verdict.passed_keys == KEYS and verdict.keep.tolist() == [True] * frame.height and _dropped(verdict) == {}
    unjudged = {(key, o.check_name): o.message for key, outcomes in results.items() for o in outcomes if not o.passed}
    assert {(o.partition, o.check_name): o.message for o in verdict.outcomes if not o.passed} == unjudged
    tails = _acted(verdict, H1, "flights_tailnum_present")
    assert not tails.passed and not tails.blocking and tails.metadata["severity"] == "WARN"
    assert tails.message.startswith(f"table 'raw_flights' partition {H1}: column 'tailnum' rule expect_column_values_to_not_be_null")
    aircraft = [_acted(verdict, key, "flights_known_aircraft") for key in KEYS]
    assert all(not o.passed and not o.blocking and o.failing_rows is not None and o.failing_rows.size for o in aircraft)
    assert all(not p.failed_checks for p in verdict.partitions)


def test_drop_rule_without_failing_rows_fails_the_partition(weather: pl.DataFrame) -> None:
    results = validate_raw_weather_partitions(weather, partitions=WINDOWS)
    assert all(o.passed for outcomes in results.values() for o in outcomes if o.check_name != "row_volume_within_tolerance")
    # A share or table-level finding names no rows: there is nothing a drop could remove.
    whole = outcome("weather_wind_speed_plausible", "raw_weather", H2,
                    [Finding("expect_column_values_to_be_between(max=100)", ("wind_speed",), False, "GX error: boom")])
    assert whole.failing_rows is None
    edited = {**results, H2: [whole if o.check_name == "weather_wind_speed_plausible" else o for o in results[H2]]}
    verdict = judge("raw_weather", _partition_rows(weather, WEATHER_PARTITION_COLUMN), KEYS, edited, WEATHER_RULES)
    assert verdict.passed_keys == [H0, H1] and [p.failed_checks for p in verdict.failed] == [["weather_wind_speed_plausible"]]
    acted = _acted(verdict, H2, "weather_wind_speed_plausible")
    assert acted.message.endswith("action drop cannot apply (the rule judges the partition as a whole): the partition is held back")
    in_h2 = _partition_rows(weather, WEATHER_PARTITION_COLUMN) == 2
    assert verdict.keep.tolist() == (~in_h2).tolist() and _dropped(verdict) == {}

    # The same from the data: a wind speed GX cannot compare is no row-level verdict.
    broken = weather.with_columns(pl.col("wind_speed").cast(pl.String))
    results, verdict = _weather_verdict(broken)
    wind = next(o for o in results[H0] if o.check_name == "weather_wind_speed_plausible")
    assert not wind.passed and wind.failing_rows is None
    assert verdict.passed_keys == [] and verdict.keep.tolist() == [False] * broken.height
    assert all(p.failed_checks == ["weather_schema_matches", "weather_values_in_range", "weather_wind_speed_plausible"]
               for p in verdict.partitions)


def test_unknown_check_is_refused(weather: pl.DataFrame) -> None:
    results = validate_raw_weather_partitions(weather, partitions=WINDOWS)
    with pytest.raises(KeyError, match="weather_wind_speed_plausible"):
        judge("raw_weather", _partition_rows(weather, WEATHER_PARTITION_COLUMN), KEYS, results,
              {k: v for k, v in WEATHER_RULES.items() if k != "weather_wind_speed_plausible"})


def _verdict_facts(verdict: GateVerdict) -> list[object]:
    return [verdict.keep.tolist(), verdict.passed_keys, _dropped(verdict),
            [(p.partition, p.rows, p.failed_checks, [(o.check_name, o.passed, o.message, o.metadata) for o in p.outcomes])
             for p in verdict.partitions]]


def test_same_outcomes_same_verdict(flights: pl.DataFrame) -> None:
    frame = _set_rows(_set_rows(flights, _rows_of(flights, H1)[:2], "distance", -5), _rows_of(flights, H2)[3:4], "carrier", None)
    results, first = _flights_verdict(frame)
    again = judge("raw_flights", _partition_rows(frame), KEYS, results, FLIGHTS_RULES)
    revalidated = _flights_verdict(frame)[1]
    assert _verdict_facts(first) == _verdict_facts(again) == _verdict_facts(revalidated)
    # Judging does not change the outcomes it was given (a rerun judges the same thing).
    assert _verdict_facts(judge("raw_flights", _partition_rows(frame), KEYS, results, FLIGHTS_RULES)) == _verdict_facts(first)
    assert first.passed_keys == [H0, H2] and _dropped(first) == {H2: {"flights_required_columns_not_null": _rows_of(flights, H2)[3:4]}}
    # The mapping's order is not the verdict's: partitions follow partition_keys.
    reordered = judge("raw_flights", _partition_rows(frame), KEYS, dict(reversed(list(results.items()))), FLIGHTS_RULES)
    assert _verdict_facts(reordered) == _verdict_facts(first)


def test_nan_weather_value_is_dropped_as_nan(weather: pl.DataFrame) -> None:
    row = int(np.flatnonzero(_partition_rows(weather, WEATHER_PARTITION_COLUMN) == 1)[1])
    frame = _set_rows(weather, [row], "dewp", float("nan"))
    results, verdict = _weather_verdict(frame)
    failed = {(key, o.check_name) for key, outcomes in results.items() for o in outcomes if not o.passed}
    assert failed == {(H1, "weather_values_not_nan")}  # GX would see a missing value; no null rule fires
    nan = next(o for o in results[H1] if o.check_name == "weather_values_not_nan")
    assert nan.failing_rows.tolist() == [row]  # type: ignore[union-attr]
    assert nan.message.startswith(f"table 'raw_weather' partition {H1}: column 'dewp' rule values_are_not_nan failed: "
                                  "1 of 3 rows NaN (not a value, not a null)")
    assert " null)" in nan.message and "rows null" not in nan.message
    assert verdict.passed_keys == KEYS and _dropped(verdict) == {H1: {"weather_values_not_nan": [row]}}
    assert np.flatnonzero(~verdict.keep).tolist() == [row]
    # A null is not NaN: it is a missing reading, which weather allows.
    assert all(o.passed for o in validate_raw_weather_partitions(_set_rows(weather, [row], "dewp", None), partitions=WINDOWS)[H1]
               if o.check_name != "row_volume_within_tolerance")


def _redelivered(flights: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, tuple[str, int]]]:
    """The three hours plus a second file: an identical copy of a flight of H0, and a corrected copy
    of H0's last departure that now departs 30 minutes later, in H1."""
    h0 = flights.filter(pl.col(FLIGHTS_PARTITION_COLUMN) < WINDOWS[0].end, ~pl.col("cancelled"))
    identical, corrected = h0.head(1), h0.tail(1)
    later = timedelta(minutes=30)
    corrected = corrected.with_columns(
        pl.col("departed_at") + later, pl.col("dep_known_at") + later, pl.col("arrived_at") + later,
        pl.col("dep_delay") + 30, pl.col("arr_delay") + 30)
    assert corrected[0, FLIGHTS_PARTITION_COLUMN] >= WINDOWS[1].start
    second = _landed(pl.concat([corrected, identical]).drop(SOURCE_FILE, SOURCE_ROW), "part-0001.parquet")
    names = {"corrected": ("part-0001.parquet", 0), "identical": ("part-0001.parquet", 1),
             "corrected_first": (corrected[0, SOURCE_FILE], int(corrected[0, SOURCE_ROW])),
             "identical_first": (identical[0, SOURCE_FILE], int(identical[0, SOURCE_ROW]))}
    return pl.concat([flights, second]), names


@pytest.mark.parametrize("order", ["delivered", "reversed", "shuffled-1", "shuffled-2"])
@pytest.mark.parametrize("with_facts", [False, True])
def test_redeliveries_are_told_apart_by_delivery_order(flights: pl.DataFrame, order: str, with_facts: bool) -> None:
    landed, names = _redelivered(flights)
    frame = {"delivered": landed, "reversed": landed.reverse()}.get(order)
    if frame is None:
        frame = landed.sample(fraction=1.0, shuffle=True, seed=int(order.split("-")[1]))
    facts = LandingFacts(first_delivery=delivery_index(landed, FLIGHTS_KEY, flights_schema())) if with_facts else None
    results, verdict = _flights_verdict(frame, facts)

    def origin(rows: Sequence[int]) -> list[tuple[str, int]]:
        return frame[list(rows)].select(SOURCE_FILE, SOURCE_ROW).rows()

    failed = {(key, o.check_name): origin(o.failing_rows.tolist()) for key, outcomes in results.items()  # type: ignore[union-attr]
              for o in outcomes if not o.passed}
    assert failed == {(H0, "flights_redelivered"): [names["identical"]], (H1, "flights_unique"): [names["corrected"]]}
    conflict = next(o for o in results[H1] if o.check_name == "flights_unique")
    assert "re-delivered with other values than their first delivery" in conflict.message
    assert verdict.passed_keys == KEYS
    assert {key: {c: origin(r) for c, r in checks.items()} for key, checks in _dropped(verdict).items()} == {
        H0: {"flights_redelivered": [names["identical"]]}, H1: {"flights_unique": [names["corrected"]]}}
    kept = set(frame.filter(pl.Series(verdict.keep)).select(SOURCE_FILE, SOURCE_ROW).rows())
    assert names["identical_first"] in kept and names["corrected_first"] in kept
    assert len(kept) == flights.height


def test_a_later_hour_alone_knows_the_first_delivery(flights: pl.DataFrame) -> None:
    """Run over H1 only: with the landing zone's facts the corrected copy still fails, as the first
    delivery sits in H0, outside the run; without them the run's frame is the whole source."""
    landed, names = _redelivered(flights)
    h1 = landed.filter(pl.col(FLIGHTS_PARTITION_COLUMN) >= WINDOWS[1].start, pl.col(FLIGHTS_PARTITION_COLUMN) < WINDOWS[1].end)
    window = WINDOWS[1:2]
    facts = LandingFacts(first_delivery=delivery_index(landed, FLIGHTS_KEY, flights_schema()))
    judged = validate_raw_flights_partitions(h1, partitions=window, landing=facts)[H1]
    unique = next(o for o in judged if o.check_name == "flights_unique")
    assert [name for name in (o.check_name for o in judged if not o.passed)] == ["flights_unique"]
    assert h1[unique.failing_rows.tolist()].select(SOURCE_FILE, SOURCE_ROW).rows() == [names["corrected"]]  # type: ignore[union-attr]
    alone = validate_raw_flights_partitions(h1, partitions=window)[H1]
    assert all(o.passed for o in alone)


def test_weather_redeliveries(weather: pl.DataFrame) -> None:
    """Weather keys carry their hour: both kinds of re-delivery sit in the hour of the first one."""
    first_row = int(np.flatnonzero(_partition_rows(weather, WEATHER_PARTITION_COLUMN) == 2)[0])
    original = weather[first_row].drop(SOURCE_FILE, SOURCE_ROW)
    second = _landed(pl.concat([original.with_columns(pl.col("temp") + 2.5), original]), "part-0001.parquet")
    landed = pl.concat([weather, second])
    facts = LandingFacts(first_delivery=delivery_index(landed, WEATHER_KEY, weather_schema()))
    for frame in (landed, landed.reverse(), landed.sample(fraction=1.0, shuffle=True, seed=3)):
        for landing in (None, facts):
            results, verdict = _weather_verdict(frame, landing)
            failed = {(key, o.check_name): frame[o.failing_rows.tolist()].select(SOURCE_FILE, SOURCE_ROW).rows()  # type: ignore[union-attr]
                      for key, outcomes in results.items() for o in outcomes if not o.passed}
            assert failed == {(H2, "weather_unique_observations"): [("part-0001.parquet", 0)],
                              (H2, "weather_redelivered"): [("part-0001.parquet", 1)]}
            # Two drop rules, each within its own allowance (1 of 5 rows; every row for copies).
            assert verdict.passed_keys == KEYS
            kept = frame.filter(pl.Series(verdict.keep)).select(SOURCE_FILE, SOURCE_ROW).rows()
            assert sorted(kept) == sorted(weather.select(SOURCE_FILE, SOURCE_ROW).rows())


def test_feature_range_rule_drops_one_bad_snapshot() -> None:
    """The same gate on a feature table: an out-of-range value drops its row, within 1%."""
    from feature_pipelines.compute.snapshots import snapshot_features
    from feature_pipelines.features.catalog import FEATURE_VIEWS
    from feature_pipelines.names import CREATED_TIMESTAMP, EVENT_TIMESTAMP
    from feature_pipelines.quality.suites import validate_feature_partitions, view_rules

    view = FEATURE_VIEWS["carrier_delay_stats"]
    day = timedelta(days=1)
    start = datetime(2013, 3, 1, tzinfo=timezone.utc)
    windows = [PartitionWindow(f"2013-03-0{i + 1}", start + i * day, start + (i + 1) * day) for i in range(2)]
    frame = snapshot_features(nycflights.flights(), view, start=start, end=windows[-1].end)
    frame = frame.with_columns(pl.lit(windows[-1].end).dt.cast_time_unit("us").alias(CREATED_TIMESTAMP))
    rows = assign_partitions(frame, EVENT_TIMESTAMP, windows, closed="right")
    bad = int(np.flatnonzero(rows == 1)[10])
    frame = _set_rows(frame, [bad], "carrier_dep_delay_mean_24h", 10_000.0)
    results = validate_feature_partitions(view, frame, partitions=windows, source_rows={w.key: 1 for w in windows})
    verdict = judge(view.name, rows, [w.key for w in windows], results, view_rules(view))
    assert verdict.passed_keys == [w.key for w in windows]
    assert _dropped(verdict) == {"2013-03-02": {"feature_values_in_range": [bad]}}
    assert np.flatnonzero(~verdict.keep).tolist() == [bad]
    assert int((rows == 1).sum()) >= 100  # so that one row is within the 1% allowance
    # And a partition that lost its rows is held back whole; the other is written.
    verdict = judge(view.name, rows, [w.key for w in windows],
                    {**results, "2013-03-01": [*results["2013-03-01"][:-1],
                                                CheckOutcome("row_volume_within_tolerance", False, view.name, "2013-03-01", "lost", {})]},
                    view_rules(view))
    assert verdict.passed_keys == ["2013-03-02"] and verdict.keep.tolist() == [r == 1 and i != bad for i, r in enumerate(rows)]


def test_rule_actions_compose(flights: pl.DataFrame) -> None:
    """One partition, three rules failing at once: warn reports, drop removes its row, fail holds it back."""
    rows = _rows_of(flights, H0)
    rules: Mapping[str, object] = {"a": warn("reported only"), "b": drop("one bad row"), "c": fail("broken")}

    def made(name: str, passed: bool, failing: list[int] | None) -> CheckOutcome:
        return CheckOutcome(name, passed, "raw_flights", H0, f"{name} message", {},
                            None if failing is None else np.array(failing, dtype=np.int64))

    partition = _partition_rows(flights)
    written = judge("raw_flights", partition, KEYS, {H0: [made("a", False, rows[1:2]), made("b", False, rows[:1]), made("c", True, [])]}, rules)  # type: ignore[arg-type]
    assert written.passed_keys == KEYS and _dropped(written) == {H0: {"b": rows[:1]}}
    assert np.flatnonzero(~written.keep).tolist() == rows[:1]  # the warned row (within any drop allowance) stays
    warned = _acted(written, H0, "a")
    assert (warned.passed, warned.blocking, warned.message) == (False, False, "a message")
    assert warned.metadata == {"action": "warn", "blocking": False, "severity": "WARN"}
    held = judge("raw_flights", partition, KEYS, {H0: [made("a", False, rows[:5]), made("b", False, rows[:1]), made("c", False, None)]}, rules)  # type: ignore[arg-type]
    assert held.passed_keys == [H1, H2] and [p.failed_checks for p in held.failed] == [["c"]]
    assert _dropped(held) == {} and np.flatnonzero(~held.keep).tolist() == rows
