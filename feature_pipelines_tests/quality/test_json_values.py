"""The one rule for values written as JSON: non-finite floats as strings, missing as null."""

from __future__ import annotations

import json
import math
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest

from feature_pipelines.monitoring.values import json_safe
from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.json_values import json_text, json_value
from feature_pipelines.quality.ledger import QualityLedger
from feature_pipelines.quality.outcome import CheckOutcome, Finding, outcome

AT = datetime(2013, 3, 10, 7, 0, tzinfo=timezone.utc)
KEY = "2013-03-10-07:00"
AT_TEXT = "2013-03-10T07:00:00+00:00"


def _strict_loads(text: str) -> object:
    """JSON as a strict parser reads it: the NaN and Infinity tokens are no JSON."""
    def refuse(token: str) -> object:
        raise ValueError(f"invalid JSON token {token}")
    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize(("value", "expected"), [
    (math.nan, "NaN"), (math.inf, "Infinity"), (-math.inf, "-Infinity"),
    (None, None), (0.1, 0.1), (-0.0, -0.0), (3, 3), (True, True), ("NaN", "NaN"),
])
def test_non_finite_floats_are_strings_and_none_stays_null(value: object, expected: object) -> None:
    shown = json_value(value)
    assert shown == expected and type(shown) is type(expected)
    if isinstance(value, float) and not math.isfinite(value):
        assert float(shown) == value or (math.isnan(value) and math.isnan(float(shown)))  # type: ignore[arg-type]


def test_nested_values_and_text_are_valid_json() -> None:
    value = {"observed": [math.nan, 1.5, None], "inner": {"max": math.inf, "min": (-math.inf, 2)}, 7: {"s"}}
    expected = {"observed": ["NaN", 1.5, None], "inner": {"max": "Infinity", "min": ["-Infinity", 2]}, "7": ["s"]}
    assert json_value(value) == expected
    assert _strict_loads(json_text(value)) == expected
    # A NaN and a null stay apart after the round trip.
    assert _strict_loads(json_text([math.nan, None])) == ["NaN", None]


def test_numpy_scalars_and_arrays() -> None:
    assert json_value(np.float64("nan")) == "NaN" and json_value(np.float32("-inf")) == "-Infinity"
    assert json_value(np.int64(7)) == 7 and type(json_value(np.int64(7))) is int
    assert json_value(np.bool_(True)) is True
    assert type(json_value(np.float64(0.5))) is float
    assert json_value(np.datetime64("NaT")) is None
    assert json_value(np.array([1.0, np.nan, np.inf])) == [1.0, "NaN", "Infinity"]
    assert json_text({"v": np.float64("nan")}) == '{"v": "NaN"}'


def test_polars_values() -> None:
    frame = pl.DataFrame({
        "at": [AT], "day": [date(2013, 3, 10)], "wait": [timedelta(minutes=90)], "x": [float("nan")],
        "xs": [[1.0, float("inf")]], "missing": pl.Series([None], dtype=pl.Float64),
    })
    row = {key: json_value(value) for key, value in frame.row(0, named=True).items()}
    assert row == {"at": AT_TEXT, "day": "2013-03-10", "wait": "1:30:00", "x": "NaN",
                   "xs": [1.0, "Infinity"], "missing": None}
    assert json_value(frame["x"].item()) == "NaN"
    assert json_value(pl.Series([1.0, None, float("-inf")])) == [1.0, None, "-Infinity"]


def test_times_missing_markers_and_other_objects() -> None:
    assert json_value(AT) == AT_TEXT and json_value(time(6, 30)) == "06:30:00"
    assert json_value(timedelta(hours=-1)) == "-1 day, 23:00:00"
    assert json_value(pd.NaT) is None and json_value(pd.NA) is None
    assert json_value(Decimal("1.25")) == "1.25"


def test_check_metadata_and_monitoring_follow_the_rule() -> None:
    examples = ({"temp": math.nan},)
    finding = Finding("values_are_not_nan", ("temp",), False, "1 of 3 rows NaN", {"max": math.inf}, examples)
    checked = outcome("weather_values_not_nan", "raw_weather", KEY, [finding], blocking=False,
                      details={"worst": -math.inf})
    failure = checked.metadata["failures"][0]  # type: ignore[index]
    assert failure["observed"] == {"max": "Infinity"} and failure["examples"] == [{"temp": "NaN"}]
    assert checked.metadata["worst"] == "-Infinity"
    assert _strict_loads(json_text(checked.metadata))["failures"][0]["examples"] == [{"temp": "NaN"}]  # type: ignore[index]
    assert [json_safe(v) for v in (math.nan, math.inf, None, AT)] == ["NaN", "Infinity", None, AT_TEXT]


def test_blocking_is_a_field_that_metadata_shows() -> None:
    warned = CheckOutcome("a", False, "raw_flights", KEY, "m", {"action": "warn"}, None, False)
    assert (warned.blocking, warned.severity) == (False, "WARN")
    assert warned.metadata == {"blocking": False, "severity": "WARN", "action": "warn"}
    assert CheckOutcome("b", True, "raw_flights", KEY, "m").metadata == {"blocking": True, "severity": "ERROR"}


def test_ledger_records_blocking_and_valid_json_metadata(tmp_path: Path) -> None:
    ledger = QualityLedger(DeltaStore(str(tmp_path / "lake")))
    finding = Finding("values_are_not_nan", ("temp",), False, "1 of 3 rows NaN", None, ({"temp": math.nan},))
    warned = outcome("weather_null_rate", "raw_weather", KEY, [finding], blocking=False)
    failed = outcome("weather_values_not_nan", "raw_weather", KEY, [finding])
    ledger.record([warned, failed], run_id="r1", row_counts={KEY: 3})
    rows = ledger.last_runs().sort("check_name")
    assert rows["blocking"].to_list() == [False, True]
    recorded = [_strict_loads(text) for text in rows["metadata_json"]]
    assert [(m["blocking"], m["severity"]) for m in recorded] == [(False, "WARN"), (True, "ERROR")]  # type: ignore[index]
    assert recorded[0]["failures"][0]["examples"] == [{"temp": "NaN"}]  # type: ignore[index]
    # Only the blocking failure holds the partition back.
    assert ledger.failed_partitions("raw_weather", [KEY])["check_name"].to_list() == ["weather_values_not_nan"]
