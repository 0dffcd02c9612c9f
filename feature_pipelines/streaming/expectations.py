"""A GX suite's expectation configurations evaluated with polars, as the GX results `gx_findings` reads.

The stream judges every batch with the raw suites; through GX a batch costs about 0.1-0.3 s of
bookkeeping whatever its size. The expectation types below are evaluated here on the polars frame,
with the semantics GX has on the pandas frame it would see (`quality.suites.to_pandas`): a NaN in
a float column is missing there, as pandas has it; column-map rules skip missing values; a row
condition keeps the rows where it is true. The results are GX's own result objects, so the same
`gx_findings` turns them into findings, messages and failing rows.

Any other expectation type, or a `mostly` on a type whose share GX counts over other rows than
`rows_considered`, goes to GX itself (`validate_frame`), alone: GX decides exactly those.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import great_expectations as gx
import numpy as np
import polars as pl
from great_expectations.core import ExpectationSuiteValidationResult, ExpectationValidationResult
from great_expectations.expectations.expectation_configuration import ExpectationConfiguration
from great_expectations.expectations.row_conditions import deserialize_row_condition

from feature_pipelines.quality.row_conditions import condition_mask
from feature_pipelines.quality.suites import gx_type, validate_frame

_NOT_NULL, _NULL = "expect_column_values_to_not_be_null", "expect_column_values_to_be_null"
_BETWEEN, _IN_SET = "expect_column_values_to_be_between", "expect_column_values_to_be_in_set"
_PAIR_EQUAL = "expect_column_pair_values_to_be_equal"
_OF_TYPE, _COLUMN_SET = "expect_column_values_to_be_of_type", "expect_table_columns_to_match_set"
ROW_TYPES = frozenset({_NOT_NULL, _NULL, _BETWEEN, _IN_SET, _PAIR_EQUAL})
TABLE_TYPES = frozenset({_OF_TYPE, _COLUMN_SET})


def evaluable(config: ExpectationConfiguration, frame: pl.DataFrame) -> bool:
    """Whether polars decides this expectation on `frame` exactly as GX would."""
    kwargs = config.kwargs
    if config.type in TABLE_TYPES:
        return True
    if config.type not in ROW_TYPES:
        return False
    columns = [kwargs[k] for k in ("column", "column_A", "column_B") if k in kwargs]
    if any(c not in frame.columns for c in columns):
        return False  # gx_findings reports a missing column itself; GX's own result is kept for it
    mostly = float(kwargs.get("mostly") or 1.0)
    # GX judges a not-null `mostly` over the rows the condition keeps; other types over their
    # non-missing rows, which rows_considered does not count: left to GX.
    return mostly >= 1 or config.type == _NOT_NULL


def evaluate_suite(
    suite: gx.ExpectationSuite, frame: pl.DataFrame, *, n_partitions: int, parameters: Mapping[str, object] | None = None
) -> ExpectationSuiteValidationResult:
    """The suite's results on `frame`, in suite order: polars for what it decides exactly, one GX
    call (as `validate_frame` makes it) for the rest, when there is a rest."""
    configs = [e.configuration for e in suite.expectations]
    by_gx = [i for i, config in enumerate(configs) if not evaluable(config, frame)]
    gx_results: dict[int, ExpectationValidationResult] = {}
    if by_gx:
        rest = gx.ExpectationSuite(name=f"{suite.name}_gx", expectations=[suite.expectations[i].copy(deep=True) for i in by_gx])
        validated = validate_frame(rest, frame, n_partitions=n_partitions, parameters=parameters)
        gx_order = [by_gx[k] for k in gx_result_order([configs[i] for i in by_gx])]
        gx_results = dict(zip(gx_order, validated.results))
    values = dict(parameters or {})
    results = [gx_results[i] if i in gx_results else _result(configs[i], frame, values) for i in gx_result_order(configs)]
    return ExpectationSuiteValidationResult(success=all(r.success for r in results), results=results, suite_name=suite.name)


def gx_result_order(configs: Sequence[ExpectationConfiguration]) -> list[int]:
    """The order GX reports a suite's results in: grouped by `column`, the groups (and the group
    of expectations without one) in order of first appearance, suite order within a group. A
    check's message lists its failed rules in this order."""
    groups: dict[object, list[int]] = {}
    for index, config in enumerate(configs):
        column = config.kwargs.get("column")
        groups.setdefault(column if isinstance(column, str) else None, []).append(index)
    return [index for group in groups.values() for index in group]


def _result(config: ExpectationConfiguration, frame: pl.DataFrame, parameters: Mapping[str, object]) -> ExpectationValidationResult:
    if config.type in TABLE_TYPES:
        passed, observed = _table_verdict(config, frame)
        return ExpectationValidationResult(success=passed, expectation_config=config, result={"observed_value": observed})
    kwargs = config.kwargs
    condition = deserialize_row_condition(kwargs.get("row_condition"))
    unexpected = _unexpected(config.type, kwargs, frame, parameters)
    if condition is not None:
        unexpected = condition_mask(condition).fill_null(False) & unexpected
    indices = np.flatnonzero(frame.select(unexpected.fill_null(False).alias("u")).to_series().to_numpy())
    bad = int(indices.size)
    if config.type == _NOT_NULL:
        total = frame.height if condition is None else int(frame.select(condition_mask(condition).fill_null(False).sum()).item())
        passed = total == 0 or (total - bad) / total >= float(kwargs.get("mostly") or 1.0)
    else:
        passed = bad == 0
    result = {"unexpected_index_list": indices.tolist(), "unexpected_count": bad}
    return ExpectationValidationResult(success=passed, expectation_config=config, result=result)


def _table_verdict(config: ExpectationConfiguration, frame: pl.DataFrame) -> tuple[bool, Any]:
    kwargs = config.kwargs
    if config.type == _COLUMN_SET:
        declared, observed = set(kwargs["column_set"]), set(frame.columns)
        passed = observed == declared if kwargs.get("exact_match", True) else declared <= observed
        return passed, list(frame.columns)
    column = kwargs["column"]
    if column not in frame.columns:
        return False, None
    observed = gx_type(frame.schema[column])
    return observed == kwargs["type_"], observed


def _missing(frame: pl.DataFrame, column: str) -> pl.Expr:
    """Missing as pandas sees it after `to_pandas`: null, and NaN in a float column."""
    expr = pl.col(column).is_null()
    return expr | pl.col(column).is_nan() if frame.schema[column].is_float() else expr


def _unexpected(kind: str, kwargs: Mapping[str, Any], frame: pl.DataFrame, parameters: Mapping[str, object]) -> pl.Expr:
    if kind == _PAIR_EQUAL:
        a, b = kwargs["column_A"], kwargs["column_B"]
        missing_a, missing_b = _missing(frame, a), _missing(frame, b)
        ignore = kwargs.get("ignore_row_if") or "both_values_are_missing"
        skipped = {"both_values_are_missing": missing_a & missing_b, "either_value_is_missing": missing_a | missing_b,
                   "neither": pl.lit(False)}
        if ignore not in skipped:
            raise ValueError(f"{kind}: ignore_row_if={ignore!r} (expected one of {sorted(skipped)})")
        return ~skipped[ignore] & ~(pl.col(a) == pl.col(b)).fill_null(False)
    column = kwargs["column"]
    missing = _missing(frame, column)
    if kind == _NOT_NULL:
        return missing
    if kind == _NULL:
        return ~missing
    if kind == _IN_SET:
        return ~missing & ~pl.col(column).is_in(list(kwargs["value_set"]))
    return ~missing & _out_of_range(pl.col(column), kwargs, parameters)


def _out_of_range(value: pl.Expr, kwargs: Mapping[str, Any], parameters: Mapping[str, object]) -> pl.Expr:
    low, high = _parameter(kwargs.get("min_value"), parameters), _parameter(kwargs.get("max_value"), parameters)
    below = pl.lit(False) if low is None else (value <= low if kwargs.get("strict_min") else value < low)
    above = pl.lit(False) if high is None else (value >= high if kwargs.get("strict_max") else value > high)
    return below | above


def _parameter(value: object, parameters: Mapping[str, object]) -> object:
    """A bound, with a `{"$PARAMETER": name}` reference replaced by the run's parameter."""
    if isinstance(value, dict) and "$PARAMETER" in value:
        name = value["$PARAMETER"]
        if name not in parameters:
            raise KeyError(f"expectation parameter {name!r} is not given (given: {sorted(parameters)})")
        return parameters[name]
    return value
