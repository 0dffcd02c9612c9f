"""GX row conditions in polars: the mask of the rows a conditional expectation considers.

GX reports a conditional expectation's unexpected rows but not how many rows met its condition;
judging a `mostly` per partition needs that count, so the condition is evaluated again here.
"""

from __future__ import annotations

import polars as pl
from great_expectations.expectations.row_conditions import (
    AndCondition,
    ComparisonCondition,
    Condition,
    NullityCondition,
    OrCondition,
)


def condition_mask(condition: Condition) -> pl.Expr:
    """The polars mask of a GX row condition (null where a comparison meets a null)."""
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
        if op not in comparisons:
            raise ValueError(f"row condition {condition!r}: operator {op!r} has no polars translation "
                             f"(expected one of {sorted(comparisons)})")
        return comparisons[op]()
    if isinstance(condition, (AndCondition, OrCondition)):
        parts = [condition_mask(part) for part in condition.conditions]
        return pl.all_horizontal(parts) if isinstance(condition, AndCondition) else pl.any_horizontal(parts)
    raise ValueError(f"row condition {condition!r} cannot be evaluated per partition")


def condition_columns(condition: Condition | None) -> list[str]:
    """The columns a row condition reads (empty for none)."""
    if isinstance(condition, (NullityCondition, ComparisonCondition)):
        return [condition.column.name]
    if isinstance(condition, (AndCondition, OrCondition)):
        return [name for part in condition.conditions for name in condition_columns(part)]
    return []
