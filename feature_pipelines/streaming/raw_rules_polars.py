"""The raw tables' rules (`quality/raw_rules.py`) with their suites evaluated by polars, for the stream.

Same suites (read from the suite objects), same polars rules, same findings and outcomes as
`validate_raw_flights_partitions` / `validate_raw_weather_partitions`; only the evaluation of the
suites' expectations differs (`streaming/expectations.py`, GX for what polars cannot decide exactly).
A frame that does not have its table's declared columns and dtypes goes to the GX path whole: its
findings carry GX's own error texts, which polars cannot reproduce. The stream never builds such a
frame (`rows_frame` casts every event to the contract), so that path costs it nothing.

The orchestration below follows raw_rules' own step by step; it is repeated, not shared, because
raw_rules runs its suites through GX inside `_run` and offers no other evaluator.
"""

from __future__ import annotations

from collections.abc import Sequence

import great_expectations as gx
import numpy as np
import polars as pl

from feature_pipelines.quality import raw_rules as rr
from feature_pipelines.quality.gx_adapter import gx_findings
from feature_pipelines.quality.outcome import CheckOutcome, Finding
from feature_pipelines.quality.suites import PartitionWindow, assign_partitions, dtype_findings
from feature_pipelines.streaming.expectations import evaluate_suite


def _conforms(frame: pl.DataFrame, schema: dict[str, pl.DataType]) -> bool:
    declared = [c for c in frame.columns if c not in (rr.SOURCE_FILE, rr.SOURCE_ROW)]
    return declared == list(schema) and all(frame.schema[c] == t for c, t in schema.items())


def _run(
    table: str, suite: gx.ExpectationSuite, frame: pl.DataFrame, partitions: Sequence[PartitionWindow],
    time_column: str, identity: Sequence[str], schema: dict[str, pl.DataType],
) -> tuple[list[dict[str, list[Finding]]], np.ndarray]:
    """raw_rules._run with the suite evaluated by `evaluate_suite`."""
    rows = assign_partitions(frame, time_column, partitions, closed="left")
    parameters = {"window_start": partitions[0].start, "window_end": partitions[-1].end}
    # One chunk: polars 2.1 evaluates a literal mask (`pl.lit(True).fill_null(False)`, as
    # gx_adapter's row count builds it) once per chunk. GX's path rechunks in its to_pandas.
    declared = frame.select([c for c in frame.columns if c not in (rr.SOURCE_FILE, rr.SOURCE_ROW)]).rechunk()
    result = evaluate_suite(suite, declared, n_partitions=len(partitions), parameters=parameters)
    found = gx_findings(result, declared, row_partition=rows, n_partitions=len(partitions), identity=identity)
    schema_check = f"{table.removeprefix('raw_')}_schema_matches"
    exact = dtype_findings(declared, schema)
    for per_check in found:
        per_check.setdefault(schema_check, []).extend(exact)
    return found, rows


def validate_flights_partitions(
    frame: pl.DataFrame, *, partitions: Sequence[PartitionWindow], landing: rr.LandingFacts | None = None
) -> dict[str, list[CheckOutcome]]:
    """`raw_rules.validate_raw_flights_partitions`, its suite evaluated by polars."""
    if not _conforms(frame, rr.flights_schema()):
        return rr.validate_raw_flights_partitions(frame, partitions=partitions, landing=landing)
    facts = landing or rr.LandingFacts()
    single_small = len(partitions) == 1 and frame.height < rr.MIN_FLIGHTS_FOR_NULL_RATE
    suite = rr._flights_suite(with_null_rate=not single_small)
    found, row_partition = _run(rr.FLIGHTS_TABLE, suite, frame, partitions, rr.FLIGHTS_PARTITION_COLUMN,
                                rr.FLIGHTS_KEY, rr.flights_schema())
    rows = rr._row_rules(rr.FLIGHTS_TABLE, frame, found, row_partition, partitions, rr.FLIGHTS_KEY, rr.flights_schema(), facts)
    known = facts.known_keys
    if known is not None:
        rr._add(found, "flights_known_carrier", rr._known_key_findings(rows, {"carrier": known["carrier"]}, "carrier_in(raw_airlines)"))
        rr._add(found, "flights_known_airports", rr._known_key_findings(
            rows, {"origin": known["origin"], "dest": known["dest"]}, "origin_in(EWR, JFK, LGA), dest_in(raw_airports)"))
        rr._add(found, "flights_known_aircraft", rr._known_key_findings(rows, {"tailnum": known["tailnum"]}, "tailnum_in(raw_planes)"))
    counts = np.bincount(row_partition, minlength=len(partitions))
    volumes = rr._volume_outcomes(rr.FLIGHTS_TABLE, rows, rr.FLIGHTS_PARTITION_COLUMN, facts)
    results = {}
    for part, window in enumerate(partitions):
        if counts[part] < rr.MIN_FLIGHTS_FOR_NULL_RATE:
            found[part]["flights_null_rate"] = [Finding(
                f"expect_column_values_to_not_be_null(mostly={1 - rr.MAX_DEP_DELAY_NULL_FRACTION:g})", ("dep_delay",),
                True, f"skipped: {counts[part]} flights, fewer than {rr.MIN_FLIGHTS_FOR_NULL_RATE}")]
        results[window.key] = [*rr._outcomes(rr.FLIGHTS_TABLE, rr.FLIGHTS_RULES, window.key, found[part]),
                               volumes[part].under(rr.FLIGHTS_RULES[rr.RAW_VOLUME])]
    return results


def validate_weather_partitions(
    frame: pl.DataFrame, *, partitions: Sequence[PartitionWindow], landing: rr.LandingFacts | None = None
) -> dict[str, list[CheckOutcome]]:
    """`raw_rules.validate_raw_weather_partitions`, its suite evaluated by polars."""
    if not _conforms(frame, rr.weather_schema()):
        return rr.validate_raw_weather_partitions(frame, partitions=partitions, landing=landing)
    facts = landing or rr.LandingFacts()
    found, row_partition = _run(rr.WEATHER_TABLE, rr._weather_suite(), frame, partitions, rr.WEATHER_PARTITION_COLUMN,
                                rr.WEATHER_KEY, rr.weather_schema())
    rows = rr._row_rules(rr.WEATHER_TABLE, frame, found, row_partition, partitions, rr.WEATHER_KEY, rr.weather_schema(), facts)
    coverage = rr._hours_covered(frame, partitions)
    volumes = rr._volume_outcomes(rr.WEATHER_TABLE, rows, rr.WEATHER_PARTITION_COLUMN, facts)
    results = {}
    for part, window in enumerate(partitions):
        found[part]["weather_hours_covered"] = [coverage[part]]
        results[window.key] = [*rr._outcomes(rr.WEATHER_TABLE, rr.WEATHER_RULES, window.key, found[part]),
                               volumes[part].under(rr.WEATHER_RULES[rr.RAW_VOLUME])]
    return results
