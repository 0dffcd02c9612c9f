"""Check outcomes: the verdict of one named check on one partition, and how GX results become them.

A check aggregates rules (GX expectations or polars rules). Each rule's verdict on one partition is
a `Finding`; `outcome()` folds a check's findings into a `CheckOutcome` whose message names the
table, the partition, the column(s) and the rule that failed, and whose metadata is JSON-able.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

import numpy as np
import polars as pl
from great_expectations.core import ExpectationSuiteValidationResult, ExpectationValidationResult
from great_expectations.expectations.row_conditions import (
    AndCondition,
    ComparisonCondition,
    Condition,
    NullityCondition,
    OrCondition,
    deserialize_row_condition,
)

MAX_EXAMPLES = 5
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


@dataclass(frozen=True)
class CheckOutcome:
    """The result of one named check on one partition of one table.

    `metadata["blocking"]` is False for checks whose severity is WARN: a failure is reported but
    must not stop downstream materialisation.
    """

    check_name: str
    passed: bool
    table: str
    partition: str
    message: str
    metadata: dict[str, object]
    # Rows (indices into the validated frame) that failed, when every failed rule is row-level;
    # None when some failure judges the partition as a whole (a `drop` action cannot apply then).
    failing_rows: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def blocking(self) -> bool:
        return bool(self.metadata.get("blocking", True))


@dataclass(frozen=True)
class Finding:
    """One rule's verdict on one partition; `observed` and `examples` are JSON-able."""

    rule: str
    columns: tuple[str, ...]
    passed: bool
    detail: str = ""
    observed: object = None
    examples: tuple[dict[str, object], ...] = field(default_factory=tuple)
    # Indices (into the validated frame) of this partition's failing rows, for row-level rules.
    row_indices: np.ndarray | None = field(default=None, compare=False, repr=False)

    def describe(self) -> str:
        if len(self.columns) == 1:
            where = f"column {self.columns[0]!r} "
        else:
            where = f"columns {list(self.columns)} " if self.columns else ""
        text = f"{where}rule {self.rule} {'passed' if self.passed else 'failed'}"
        text += f": {self.detail}" if self.detail else ""
        return text + (f" (examples: {list(self.examples)})" if self.examples else "")

    def as_metadata(self) -> dict[str, object]:
        return {
            "rule": self.rule,
            "columns": list(self.columns),
            "detail": self.detail,
            "observed": jsonable(self.observed),
            "examples": [jsonable(example) for example in self.examples],
        }


def jsonable(value: object) -> object:
    """A JSON-able copy: datetimes as ISO strings, NaN/NA as None, numpy scalars as Python ones."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, (datetime, date, time)):
        return None if value != value else value.isoformat()  # NaT compares unequal to itself
    if isinstance(value, timedelta):
        return str(value)
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(item) for item in value]
    if value != value:  # pandas.NA and friends
        return None
    return str(value)


def outcome(
    check_name: str,
    table: str,
    partition: str,
    findings: Sequence[Finding],
    *,
    blocking: bool = True,
    extra_metadata: Mapping[str, object] | None = None,
) -> CheckOutcome:
    """Fold one check's findings on one partition into its outcome (it passes when all passed)."""
    failed = [finding for finding in findings if not finding.passed]
    prefix = f"table {table!r} partition {partition}: "
    if failed:
        message = prefix + "; ".join(finding.describe() for finding in failed)
    else:
        notes = [finding.describe() for finding in findings if finding.detail]
        message = prefix + (f"all {len(findings)} rule(s) passed" if not notes else "; ".join(notes))
    metadata: dict[str, object] = {
        "blocking": blocking,
        "severity": "ERROR" if blocking else "WARN",
        "rules_evaluated": len(findings),
        "rules_failed": len(failed),
        "failed_rules": [f"{finding.rule} on {list(finding.columns)}" for finding in failed],
        "failures": [finding.as_metadata() for finding in failed],
    }
    metadata.update({key: jsonable(value) for key, value in (extra_metadata or {}).items()})
    return CheckOutcome(check_name, not failed, table, partition, message, metadata, failing_row_union(failed))


def failing_row_union(failed: Sequence[Finding]) -> np.ndarray | None:
    """The union of the failed findings' rows, or None if one of them is not row-level."""
    if any(finding.row_indices is None for finding in failed):
        return None
    if not failed:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.concatenate([finding.row_indices for finding in failed]))  # type: ignore[misc]


def rule_text(expectation_type: str, kwargs: Mapping[str, object]) -> str:
    """'expect_column_values_to_be_between(min=-120, max=1440)' plus ' where <row condition>'."""
    params = []
    for name, value in kwargs.items():
        if name in _HIDDEN_KWARGS or value is None or (name.startswith("strict_") and not value):
            continue
        if name == "mostly" and float(value) >= 1:  # type: ignore[arg-type]
            continue
        shown = jsonable(value)
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


def _condition_expr(condition: Condition) -> pl.Expr:
    """The polars mask of a GX row condition (to count the rows an expectation considered)."""
    if isinstance(condition, NullityCondition):
        column = pl.col(condition.column.name)
        return column.is_null() if condition.is_null else column.is_not_null()
    if isinstance(condition, ComparisonCondition):
        column, value, op = pl.col(condition.column.name), condition.parameter, str(condition.operator)
        comparisons = {
            "==": lambda: column == value, "!=": lambda: column != value, "<": lambda: column < value,
            "<=": lambda: column <= value, ">": lambda: column > value, ">=": lambda: column >= value,
            "IN": lambda: column.is_in(value), "NOT_IN": lambda: ~column.is_in(value),
        }
        return comparisons[op]()
    if isinstance(condition, (AndCondition, OrCondition)):
        parts = [_condition_expr(part) for part in condition.conditions]
        return pl.all_horizontal(parts) if isinstance(condition, AndCondition) else pl.any_horizontal(parts)
    raise ValueError(f"row condition {condition!r} cannot be evaluated per partition")


def _condition_columns(condition: Condition | None) -> list[str]:
    if isinstance(condition, (NullityCondition, ComparisonCondition)):
        return [condition.column.name]
    if isinstance(condition, (AndCondition, OrCondition)):
        return [name for part in condition.conditions for name in _condition_columns(part)]
    return []


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
    return f"observed {jsonable(observed)!r}", _columns(kwargs)


@dataclass(frozen=True)
class RowSpace:
    """The validated frame and which partition each of its rows belongs to."""

    frame: pl.DataFrame
    row_partition: np.ndarray
    n_partitions: int
    identity: tuple[str, ...]

    def examples(self, indices: np.ndarray, columns: Sequence[str]) -> tuple[dict[str, object], ...]:
        wanted = [c for c in dict.fromkeys([*self.identity, *columns]) if c in self.frame.columns]
        rows = self.frame.select(wanted)[indices[:MAX_EXAMPLES].tolist()].to_dicts()
        return tuple({key: jsonable(value) for key, value in row.items()} for row in rows)

    def mask_findings(self, rule: str, columns: tuple[str, ...], mask: np.ndarray, verb: str) -> list[Finding]:
        """Per partition, a row-level finding from a boolean mask of failing rows (a rule GX has
        no expectation for), with the failing rows as its row indices."""
        failing = np.flatnonzero(mask)
        owner = self.row_partition[failing]
        # Split the failing rows by partition once (a year has 8,760 partitions).
        order = np.argsort(owner, kind="stable")
        bounds = np.searchsorted(owner[order], np.arange(self.n_partitions + 1))
        totals = np.bincount(self.row_partition, minlength=self.n_partitions)
        found = []
        for part in range(self.n_partitions):
            rows = failing[order[bounds[part]:bounds[part + 1]]]
            examples = self.examples(rows, columns) if rows.size else ()
            detail = f"{rows.size} of {totals[part]} rows {verb}" if rows.size else ""
            found.append(Finding(rule, columns, rows.size == 0, detail, {"unexpected_count": int(rows.size)}, examples, rows))
        return found

    def considered(self, expectation_type: str, kwargs: Mapping[str, object]) -> np.ndarray:
        """Per partition, the rows GX judged: those meeting the row condition, and for
        expectations other than (not) null, not missing (GX ignores missing values)."""
        mask = pl.lit(True)
        condition = deserialize_row_condition(kwargs.get("row_condition"))
        if isinstance(condition, Condition):
            mask = mask & _condition_expr(condition)
        columns = _columns(kwargs)
        if expectation_type not in (_NOT_NULL, _NULL) and columns:
            nulls = [pl.col(c).is_null() for c in columns]
            ignore = kwargs.get("ignore_row_if") or "all_values_are_missing"
            if ignore in ("any_value_is_missing", "either_value_is_missing"):
                mask = mask & ~pl.any_horizontal(nulls)
            elif ignore != "never":
                mask = mask & ~pl.all_horizontal(nulls)
        selected = self.frame.select(mask.fill_null(False).alias("m")).to_series().to_numpy()
        selected = np.broadcast_to(selected, (self.frame.height,))
        return np.bincount(self.row_partition[selected], minlength=self.n_partitions)


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
    considered = space.considered(kind, kwargs) if indices.size else np.zeros(space.n_partitions, np.int64)
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
    of `frame`, the frame GX validated (converted with a RangeIndex, so GX's indices are rows).

    A rule on a missing column fails with 'column missing'; any other GX error fails the rule
    with the exception text. Table-level results (columns, types) apply to every partition.
    """
    space = RowSpace(frame, row_partition, n_partitions, tuple(identity))
    per_partition: list[dict[str, list[Finding]]] = [{} for _ in range(n_partitions)]
    for result in suite_result.results:
        config = result.expectation_config
        check = (config.meta or {}).get(OUTCOME_META_KEY, CUSTOM_EXPECTATIONS)
        kwargs = config.kwargs
        rule = rule_text(config.type, kwargs)
        columns = _columns(kwargs)
        condition = deserialize_row_condition(kwargs.get("row_condition"))
        row_columns = () if config.type.startswith("expect_table_") else columns
        missing = [c for c in [*row_columns, *_condition_columns(condition)] if c not in frame.columns]
        error = _exception_text(result)
        if missing:
            findings = [Finding(rule, tuple(missing), False, "column missing")] * n_partitions
        elif error is not None:
            dtypes = ", ".join(f"{c!r} has dtype {frame.schema[c]}" for c in columns)
            detail = f"could not be evaluated ({dtypes}): GX error: {error}" if dtypes else f"GX error: {error}"
            findings = [Finding(rule, columns, False, detail)] * n_partitions
        elif "unexpected_index_list" in result.result:
            findings = _row_findings(result, space, rule)
        else:
            observed = result.result.get("observed_value")
            detail, named = _aggregate_detail(config.type, kwargs, observed)
            passed = bool(result.success)
            findings = [Finding(rule, named or columns, passed, "" if passed else detail, jsonable(observed))] * n_partitions
        for part, finding in enumerate(findings):
            per_partition[part].setdefault(check, []).append(finding)
    return per_partition
