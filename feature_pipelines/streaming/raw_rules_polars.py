"""The raw tables' rules (`quality/raw_rules.py`) with their suites evaluated by polars, for the stream.

The same validation functions as the batch gates, given another suite evaluator: the suites'
expectations (read from the suite objects) are decided by polars (`streaming/expectations.py`,
GX for what polars cannot decide exactly), and everything else (polars rules, findings,
outcomes) is raw_rules' own code. A frame that does not have its table's declared columns and
dtypes goes to GX whole: its findings carry GX's own error texts, which polars cannot reproduce.
The stream never builds such a frame (`rows_frame` casts every event to the contract), so that
path costs it nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

import great_expectations as gx
import polars as pl
from great_expectations.core import ExpectationSuiteValidationResult

from feature_pipelines.quality import raw_rules as rr
from feature_pipelines.quality.outcome import CheckOutcome
from feature_pipelines.streaming import expectations


def _conforms(frame: pl.DataFrame, schema: Mapping[str, pl.DataType]) -> bool:
    return frame.columns == list(schema) and all(frame.schema[c] == t for c, t in schema.items())


def polars_evaluator(schema: Mapping[str, pl.DataType]) -> rr.SuiteEvaluator:
    """A suite evaluator for frames of `schema`: polars for a conforming frame, GX for any other."""

    def evaluate(suite: gx.ExpectationSuite, frame: pl.DataFrame, *, n_partitions: int,
                 parameters: Mapping[str, object] | None = None) -> ExpectationSuiteValidationResult:
        if not _conforms(frame, schema):
            return expectations.validate_frame(suite, frame, n_partitions=n_partitions, parameters=parameters)
        return expectations.evaluate_suite(suite, frame, n_partitions=n_partitions, parameters=parameters)

    return evaluate


validate_flights_partitions: Callable[..., dict[str, list[CheckOutcome]]] = functools.partial(
    rr.validate_raw_flights_partitions, evaluate=polars_evaluator(rr.flights_schema())
)
validate_weather_partitions: Callable[..., dict[str, list[CheckOutcome]]] = functools.partial(
    rr.validate_raw_weather_partitions, evaluate=polars_evaluator(rr.weather_schema())
)
