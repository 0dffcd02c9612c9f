"""Raw events on the stream: the tables that stream, their event ids, and the JSON codec of a row.

An event is one row of a raw table (`sources/raw_tables.py`), encoded as JSON with datetimes as
integer microseconds since the epoch (exact) and floats in their shortest round-trip form
(exact). Its id is its record key (the columns the batch uniqueness rules judge), so a re-delivery
of the same record is recognised by the stream as by the batch gates.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import polars as pl

from feature_pipelines.quality import raw_rules
from feature_pipelines.quality.actions import RuleAction
from feature_pipelines.quality.outcome import CheckOutcome
from feature_pipelines.sources.raw_tables import RAW_TABLES, declared_schema
from feature_pipelines.streaming.raw_rules_polars import validate_flights_partitions, validate_weather_partitions
from feature_pipelines.timeutil import PartitionWindow

EVENT_ID, PAYLOAD = "event_id", "payload"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class StreamEventError(ValueError):
    """An event that cannot be pushed or decoded (unknown table, not a row of its table)."""


Validator = Callable[..., dict[str, list[CheckOutcome]]]


@dataclass(frozen=True)
class StreamTable:
    """A raw table whose events stream: its contract, record key, known-at column and rules."""

    name: str
    schema: Mapping[str, pl.DataType]
    key: tuple[str, ...]
    time_column: str
    rules: Mapping[str, RuleAction]
    validate: Validator
    redelivered_rule: str
    conflict_rule: str
    schema_rule: str

    @cached_property
    def column_checks(self) -> tuple[tuple[str, pl.DataType, Callable[[Any], bool]], ...]:
        """Each column's type check, worked out once (a dtype comparison per value costs)."""
        return tuple((column, dtype, _accepts(dtype)) for column, dtype in self.schema.items())

    def event_id(self, row: Mapping[str, Any]) -> str:
        """The record key as text: the same record always has the same id."""
        return json.dumps([row.get(k) for k in self.key], separators=(",", ":"))


def _table(name: str, key: tuple[str, ...], validate: Validator, rules: Mapping[str, RuleAction], unique: str) -> StreamTable:
    raw = next(t for t in RAW_TABLES if t.name == name)
    assert raw.time_column is not None
    prefix = name.removeprefix("raw_")
    return StreamTable(
        name=name, schema=dict(declared_schema(raw)), key=key, time_column=raw.time_column, rules=rules,
        validate=validate, redelivered_rule=f"{prefix}_redelivered", conflict_rule=unique,
        schema_rule=f"{prefix}_schema_matches",
    )


# The raw rules with their suites evaluated by polars (streaming/raw_rules_polars.py): the batch
# path's verdicts without GX's per-call cost on every batch.
STREAM_TABLES: dict[str, StreamTable] = {
    raw_rules.FLIGHTS_TABLE: _table(
        raw_rules.FLIGHTS_TABLE, raw_rules.FLIGHTS_KEY, validate_flights_partitions,
        raw_rules.FLIGHTS_RULES, "flights_unique",
    ),
    raw_rules.WEATHER_TABLE: _table(
        raw_rules.WEATHER_TABLE, raw_rules.WEATHER_KEY, validate_weather_partitions,
        raw_rules.WEATHER_RULES, "weather_unique_observations",
    ),
}


def stream_table(name: str) -> StreamTable:
    if name not in STREAM_TABLES:
        raise StreamEventError(f"table {name!r} does not stream; streaming tables: {sorted(STREAM_TABLES)}")
    return STREAM_TABLES[name]


def encode_rows(table: StreamTable, rows: pl.DataFrame) -> list[dict[str, Any]]:
    """The rows as JSON-ready dicts: datetimes as integer microseconds since the epoch."""
    datetimes = [c for c, t in rows.schema.items() if isinstance(t, pl.Datetime)]
    exact = rows.with_columns(pl.col(c).dt.epoch("us") for c in datetimes)
    return exact.to_dicts()


def _is_int(value: Any) -> bool:
    return type(value) is int  # bool is an int subclass, and not an integer value here


def _is_float(value: Any) -> bool:
    return type(value) is float or (type(value) is int and abs(value) <= 2**53)


def _is_bool(value: Any) -> bool:
    return type(value) is bool


def _is_str(value: Any) -> bool:
    return type(value) is str


def _never(_value: Any) -> bool:  # pragma: no cover - no such column in the raw contracts
    return False


def _accepts(dtype: pl.DataType) -> Callable[[Any], bool]:
    """Whether a JSON value can be a `dtype` value (nulls are judged by the rules, not here)."""
    if isinstance(dtype, pl.Datetime) or dtype == pl.Int64:
        return _is_int
    if dtype == pl.Float64:
        return _is_float
    if dtype == pl.Boolean:
        return _is_bool
    if dtype == pl.String:
        return _is_str
    return _never


def contract_problems(table: StreamTable, row: Mapping[str, Any]) -> list[str]:
    """How a decoded event breaks its table's contract: missing or unknown columns, wrong types."""
    checks = table.column_checks
    problems: list[str] = []
    if len(row) != len(checks) or any(c not in row for c, _, _ in checks):
        problems += [f"column {c!r} is missing" for c, _, _ in checks if c not in row]
        problems += [f"column {c!r} is not in the contract" for c in row if c not in table.schema]
    for column, dtype, accepts in checks:
        value = row.get(column)
        if value is not None and not accepts(value):
            problems.append(f"column {column!r} expects {dtype}, got {type(value).__name__} {value!r}")
    return problems


def decode_payload(text: str | bytes) -> dict[str, Any]:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise StreamEventError(f"an event payload must be a JSON object, got {type(value).__name__}")
    return value


def rows_frame(table: StreamTable, rows: Sequence[Mapping[str, Any]]) -> pl.DataFrame:
    """Contract-conforming rows as a frame of the table's declared schema (datetimes UTC, microseconds)."""
    physical = {c: (pl.Int64 if isinstance(t, pl.Datetime) else t) for c, t in table.schema.items()}
    frame = pl.DataFrame([{c: r[c] for c in table.schema} for r in rows], schema=physical, orient="row")
    return frame.with_columns(pl.col(c).cast(t) for c, t in table.schema.items() if isinstance(t, pl.Datetime))


def hour_windows(times_us: Sequence[int]) -> list[PartitionWindow]:
    """The contiguous UTC hours that hold these instants, as the raw rules' partitions."""
    hour = 3_600_000_000
    first, last = min(times_us) // hour, max(times_us) // hour
    windows = []
    for k in range(first, last + 1):
        start = datetime.fromtimestamp(k * 3600, tz=UTC)
        windows.append(PartitionWindow(start.isoformat(), start, datetime.fromtimestamp((k + 1) * 3600, tz=UTC)))
    return windows


def micros(moment: datetime) -> int:
    return (moment - _EPOCH) // _MICRO


_MICRO = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC) - _EPOCH
