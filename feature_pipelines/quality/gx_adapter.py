"""Great Expectations results as findings: each expectation's verdict per partition of a range run.

GX validates a whole range in one call; this reads its results (unexpected-row indices, observed
values, errors) and judges each expectation per partition, so one bad partition fails only itself.
The expectation's `meta` names the check it belongs to (`OUTCOME_META_KEY`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl
from great_expectations.core import ExpectationSuiteValidationResult, ExpectationValidationResult
from great_expectations.expectations.row_conditions import Condition, deserialize_row_condition

from feature_pipelines.json_values import json_value
from feature_pipelines.quality.outcome import Finding
from feature_pipelines.quality.row_conditions import condition_columns, condition_mask
from feature_pipelines.quality.row_space import RowSpace

OUTCOME_META_KEY = "quality_outcome"  # the `meta` key naming the check an expectation belongs to
CUSTOM_EXPECTATIONS = "custom_expectations"  # the check of expectations without that key

_NOT_NULL = "expect_column_values_to_not_be_null"
_NULL = "expect_column_values_to_be_null"
_VERBS = {
    _NOT_NULL: "null",
    _NULL: "not null",
    "expect_column_values_to_be_between": "out of range",
    "expect_column_values_to_be_in_set": "not in the allowed set",
    "expect_column_pair_values_to_be_equal": "with unequal values",
    "expect_column_values_to_be_unique": "duplicated",
    "expect_compound_columns_to_be_unique": "duplicated",
    "expect_multicolumn_values_to_be_unique": "duplicated",
}
_HIDDEN_KWARGS = {
    "batch_id", "column", "column_list", "column_set", "column_A", "column_B", "result_format",
    "catch_exceptions", "include_config", "meta", "row_condition", "condition_parser", "ignore_row_if",
}
_KWARG_NAMES = {"min_value": "min", "max_value": "max", "type_": "type"}


def rule_text(expectation_type: str, kwargs: Mapping[str, object]) -> str:
    """'expect_column_values_to_be_between(min=-120, max=1440)' plus ' where <row condition>'."""
    params = []
    for name, value in kwargs.items():
        if name in _HIDDEN_KWARGS or value is None or (name.startswith("strict_") and not value):
            continue
        if name == "mostly" and float(value) >= 1:  # type: ignore[arg-type]
            continue
        shown = json_value(value)
        if isinstance(shown, float) and shown.is_integer():
            shown = int(shown)
        params.append(f"{_KWARG_NAMES.get(name, name)}={shown}")
    text = f"{expectation_type}({', '.join(params)})"
    condition = kwargs.get("row_condition")
    return text + (f" where {deserialize_row_condition(condition)!r}" if condition else "")


def _columns(kwargs: Mapping[str, object]) -> tuple[str, ...]:
    if isinstance(kwargs.get("column"), str):
        return (str(kwargs["column"]),)
    if kwargs.get("column_list"):
        return tuple(kwargs["column_list"])  # type: ignore[arg-type]
    return tuple(str(kwargs[k]) for k in ("column_A", "column_B") if k in kwargs)


def _exception_text(result: ExpectationValidationResult) -> str | None:
    info = result.exception_info or {}
    if "raised_exception" in info:
        return str(info.get("exception_message")) if info["raised_exception"] else None
    messages = {str(v.get("exception_message")) for v in info.values() if isinstance(v, dict) and v.get("raised_exception")}
    return "; ".join(sorted(messages)) or None


def _aggregate_detail(expectation_type: str, kwargs: Mapping[str, object], observed: object) -> tuple[str, tuple[str, ...]]:
    """Detail text and the columns to name for a table-level (non row-by-row) result."""
    declared = kwargs.get("column_list") or kwargs.get("column_set")
    if declared is not None and isinstance(observed, list):
        missing = [c for c in declared if c not in observed]  # type: ignore[union-attr]
        unexpected = [c for c in observed if c not in declared]  # type: ignore[operator]
        parts = [f"missing {missing}"] * bool(missing) + [f"unexpected {unexpected}"] * bool(unexpected)
        if not parts:
            parts = [f"column order {observed}, declared {list(declared)}"]  # type: ignore[call-overload]
        return "columns differ from the declaration: " + ", ".join(parts), tuple(missing + unexpected)
    if "type_" in kwargs or "type_list" in kwargs:
        return f"observed type {observed!r}", _columns(kwargs)
    return f"observed {json_value(observed)!r}", _columns(kwargs)


def _considered(space: RowSpace, expectation_type: str, kwargs: Mapping[str, object]) -> np.ndarray:
    """Per partition, the rows GX judged: those meeting the row condition, and for expectations
    other than (not) null, not missing (GX ignores missing values)."""
    mask = pl.lit(True)
    condition = deserialize_row_condition(kwargs.get("row_condition"))
    if isinstance(condition, Condition):
        mask = mask & condition_mask(condition)
    columns = _columns(kwargs)
    if expectation_type not in (_NOT_NULL, _NULL) and columns:
        nulls = [pl.col(c).is_null() for c in columns]
        ignore = kwargs.get("ignore_row_if") or "all_values_are_missing"
        if ignore in ("any_value_is_missing", "either_value_is_missing"):
            mask = mask & ~pl.any_horizontal(nulls)
        elif ignore != "never":
            mask = mask & ~pl.all_horizontal(nulls)
    selected = space.frame.select(mask.fill_null(False).alias("m")).to_series().to_numpy()
    selected = np.broadcast_to(selected, (space.frame.height,))
    return np.bincount(space.row_partition[selected], minlength=space.n_partitions)


def _row_findings(result: ExpectationValidationResult, space: RowSpace, rule: str) -> list[Finding]:
    """Per partition: a row-by-row expectation judged on that partition's rows only.

    With one partition GX's own verdict stands; with several, GX's unexpected row indices are split
    per partition and the expectation's `mostly` is applied to each partition's considered rows.
    """
    config = result.expectation_config
    kwargs, kind = config.kwargs, config.type
    columns = _columns(kwargs)
    indices = np.asarray(result.result.get("unexpected_index_list") or [], dtype=np.int64)
    mostly = float(kwargs.get("mostly") or 1.0)
    unexpected = np.bincount(space.row_partition[indices], minlength=space.n_partitions)
    considered = _considered(space, kind, kwargs) if indices.size else np.zeros(space.n_partitions, np.int64)
    verb = _VERBS.get(kind, "unexpected")
    findings = []
    for part in range(space.n_partitions):
        bad, total = int(unexpected[part]), int(considered[part])
        if space.n_partitions == 1:
            passed = bool(result.success)
        else:
            passed = bad == 0 or (total > 0 and (total - bad) / total >= mostly)
        detail, examples = "", ()
        if bad:
            detail = f"{bad} of {total} rows {verb}"
            if mostly < 1:
                detail += f" ({bad / total:.1%}, allowed {1 - mostly:.1%})"
            if not passed:
                examples = space.examples(indices[space.row_partition[indices] == part], columns)
        observed = {"unexpected_count": bad, "rows_considered": total}
        mine = indices if space.n_partitions == 1 else indices[space.row_partition[indices] == part]
        # A `mostly` rule judges the share, so its rows are no row-level verdict to drop.
        rows = mine if mostly >= 1 else None
        findings.append(Finding(rule, columns, passed, detail if not passed else "", observed, examples, rows))
    return findings


def _result_findings(result: ExpectationValidationResult, space: RowSpace) -> list[Finding]:
    """One expectation's finding per partition. A rule on a missing column fails with 'column
    missing'; any other GX error fails the rule with the exception text; a table-level result
    (columns, types) applies to every partition."""
    config, frame, n_partitions = result.expectation_config, space.frame, space.n_partitions
    kwargs = config.kwargs
    rule = rule_text(config.type, kwargs)
    columns = _columns(kwargs)
    condition = deserialize_row_condition(kwargs.get("row_condition"))
    row_columns = () if config.type.startswith("expect_table_") else columns
    missing = [c for c in [*row_columns, *condition_columns(condition)] if c not in frame.columns]
    error = _exception_text(result)
    if missing:
        return [Finding(rule, tuple(missing), False, "column missing")] * n_partitions
    if error is not None:
        dtypes = ", ".join(f"{c!r} has dtype {frame.schema[c]}" for c in columns)
        detail = f"could not be evaluated ({dtypes}): GX error: {error}" if dtypes else f"GX error: {error}"
        return [Finding(rule, columns, False, detail)] * n_partitions
    if "unexpected_index_list" in result.result:
        return _row_findings(result, space, rule)
    observed = result.result.get("observed_value")
    detail, named = _aggregate_detail(config.type, kwargs, observed)
    passed = bool(result.success)
    return [Finding(rule, named or columns, passed, "" if passed else detail, json_value(observed))] * n_partitions


def gx_findings(
    suite_result: ExpectationSuiteValidationResult,
    frame: pl.DataFrame,
    *,
    row_partition: np.ndarray,
    n_partitions: int,
    identity: Sequence[str],
) -> list[dict[str, list[Finding]]]:
    """For each partition, its findings grouped by check (the `quality_outcome` meta of each
    expectation; `custom_expectations` when absent). `row_partition[i]` is the partition of row i
    of `frame`, the frame GX validated (converted with a RangeIndex, so GX's indices are rows)."""
    space = RowSpace(frame, row_partition, n_partitions, tuple(identity))
    per_partition: list[dict[str, list[Finding]]] = [{} for _ in range(n_partitions)]
    for result in suite_result.results:
        check = (result.expectation_config.meta or {}).get(OUTCOME_META_KEY, CUSTOM_EXPECTATIONS)
        for part, finding in enumerate(_result_findings(result, space)):
            per_partition[part].setdefault(check, []).append(finding)
    return per_partition
