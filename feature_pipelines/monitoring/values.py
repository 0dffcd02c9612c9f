"""How the monitors compare two feature values, and how they show one in a report.

One rule for the skew monitor (served vs offline) and the shadow comparison (current vs
candidate definition), so "equal" means the same thing in both reports.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from feature_pipelines.json_values import json_value

NUMERIC_DTYPES = frozenset({"int64", "float64"})


def numbers_equal(a: pl.Expr, b: pl.Expr, tolerance: pl.Expr | float) -> pl.Expr:
    """Two numeric values are equal when both are null, both NaN, or |a - b| <= tolerance
    (equal infinities included); a null is never equal to a value."""
    a, b = a.cast(pl.Float64), b.cast(pl.Float64)
    return (
        pl.when(a.is_null() & b.is_null()).then(True)
        .when(a.is_null() | b.is_null()).then(False)
        .when(a.is_nan() & b.is_nan()).then(True)
        .otherwise((a == b) | ((a - b).abs() <= tolerance))
    )


def json_safe(value: Any) -> Any:
    """A value for a JSON report, under the platform's one rule (quality.json_values): datetimes as
    ISO text, NaN as "NaN" and infinities as "Infinity"/"-Infinity", so an example shows whether a
    NaN or a null was served (these monitors treat them as different values)."""
    return json_value(value)
