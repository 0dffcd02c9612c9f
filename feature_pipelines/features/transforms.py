"""Model-dependent transformations of a feature service: their declarations, fitted statistics,
and the one polars expression that applies them.

A transformation is declared on one feature of a service (`Impute`, `Standardize`,
`ClipQuantiles`, `ClipBounds`); a feature's transformations apply in declaration order. Those
that need a statistic (a median, a mean and standard deviation, quantiles) get it from a
`FittedStatistics`: statistics fitted once, on the service's training set, and written to the
lake as a numbered version (`offline/fitted_statistics.py`). `transformed_column` is the only
code that turns a raw column into a transformed one, and it reads statistics only as literals:
it contains no aggregation, so a row's output depends on that row and the fitted version alone,
never on the other rows of the batch it arrived in. That is what makes the seeds' z-score
incident (global statistics in training, per-user statistics in serving) impossible: serving
cannot compute a statistic because the apply path has nowhere to compute one.

Output dtypes: every numeric transformation (mean or median imputation, standardisation,
clipping) works in and returns float64, whatever the input's integer or float dtype; mode
imputation keeps the feature's dtype (the mode is one of its values).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import polars as pl

from feature_pipelines.features.spec import FeatureDefinitionError

NUMERIC_DTYPES = (pl.Int64(), pl.Float64())
ScalarValue = float | int | str | bool


class ImputeStrategy(str, enum.Enum):
    """Which fitted value replaces a null: the median, the mean, or the most frequent value (ties:
    the smallest, so that a refit on the same rows gives the same value)."""

    MEDIAN = "median"
    MEAN = "mean"
    MODE = "mode"


@dataclass(frozen=True)
class Impute:
    """Replace nulls of `feature` with a fitted statistic of its training values."""

    feature: str
    strategy: ImputeStrategy

    kind = "impute"

    @property
    def statistics(self) -> tuple[str, ...]:
        return ("fill",)

    def declaration(self) -> dict[str, object]:
        return {"kind": self.kind, "feature": self.feature, "strategy": self.strategy.value}


@dataclass(frozen=True)
class Standardize:
    """z-score: (x - mean) * (1 / std) with the training mean and population standard deviation
    (ddof=0); nulls stay null (impute first to fill them)."""

    feature: str

    kind = "standardize"

    @property
    def statistics(self) -> tuple[str, ...]:
        return ("mean", "std")

    def declaration(self) -> dict[str, object]:
        return {"kind": self.kind, "feature": self.feature}


@dataclass(frozen=True)
class ClipQuantiles:
    """Clip to the training values' `lower` and `upper` quantiles (linear interpolation)."""

    feature: str
    lower: float = 0.01
    upper: float = 0.99

    kind = "clip_quantiles"

    def __post_init__(self) -> None:
        if not 0.0 <= self.lower < self.upper <= 1.0:
            raise FeatureDefinitionError(
                f"clip_quantiles on {self.feature!r}: need 0 <= lower < upper <= 1, got {self.lower}, {self.upper}"
            )

    @property
    def statistics(self) -> tuple[str, ...]:
        return ("lower", "upper")

    def declaration(self) -> dict[str, object]:
        return {"kind": self.kind, "feature": self.feature, "lower": self.lower, "upper": self.upper}


@dataclass(frozen=True)
class ClipBounds:
    """Clip to fixed bounds (either may be None: that side is open); nothing is fitted."""

    feature: str
    lower: float | None = None
    upper: float | None = None

    kind = "clip_bounds"

    def __post_init__(self) -> None:
        if self.lower is None and self.upper is None:
            raise FeatureDefinitionError(f"clip_bounds on {self.feature!r}: give a lower or an upper bound")
        if self.lower is not None and self.upper is not None and not self.lower < self.upper:
            raise FeatureDefinitionError(
                f"clip_bounds on {self.feature!r}: lower {self.lower} must be below upper {self.upper}"
            )

    @property
    def statistics(self) -> tuple[str, ...]:
        return ()

    def declaration(self) -> dict[str, object]:
        return {"kind": self.kind, "feature": self.feature, "lower": self.lower, "upper": self.upper}


Transform = Impute | Standardize | ClipQuantiles | ClipBounds


def needs_numeric(transform: Transform) -> bool:
    """Every transformation but mode imputation computes with numbers."""
    return not (isinstance(transform, Impute) and transform.strategy is ImputeStrategy.MODE)


def output_dtype(input_dtype: pl.DataType, steps: Sequence[Transform]) -> pl.DataType:
    """The dtype of a feature after `steps` (see the module docstring)."""
    return pl.Float64() if any(needs_numeric(step) for step in steps) else input_dtype


class FittedStatisticsError(ValueError):
    """Statistics that cannot be fitted or do not fit the transformations they are applied with."""


@dataclass(frozen=True)
class FittedStep:
    """One transformation with the statistics fitted for it (empty for `ClipBounds`)."""

    transform: Transform
    values: Mapping[str, ScalarValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        expected = set(self.transform.statistics)
        if set(self.values) != expected:
            raise FittedStatisticsError(
                f"{self.transform.kind} on {self.transform.feature!r}: expected statistics {sorted(expected)}, "
                f"got {sorted(self.values)}"
            )
        for name, value in self.values.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise FittedStatisticsError(
                    f"{self.transform.kind} on {self.transform.feature!r}: statistic {name!r} is {value}, not finite"
                )


@dataclass(frozen=True)
class FittedStatistics:
    """One fitted version of a service's statistics: what `transformed_column` applies.

    `service_version` is the fingerprint of the service definition they were fitted for;
    applying them to another definition is refused. `training_set` and `training_set_version`
    say which Delta table version they were fitted on, `training_rows` how many rows it had.
    """

    service: str
    service_version: str
    version: int
    steps: tuple[FittedStep, ...]
    fitted_at: datetime
    training_set: str
    training_set_version: int
    training_rows: int

    def steps_for(self, feature: str) -> tuple[FittedStep, ...]:
        """The fitted steps of one feature, in application order."""
        return tuple(step for step in self.steps if step.transform.feature == feature)

    def as_records(self) -> list[dict[str, object]]:
        """One record per fitted statistic (for asset metadata and the catalog listing)."""
        return [
            {"feature": step.transform.feature, "step": index, "kind": step.transform.kind, "statistic": name, "value": value}
            for index, step in enumerate(self.steps)
            for name, value in step.values.items()
        ]


def _apply_step(expression: pl.Expr, step: FittedStep) -> pl.Expr:
    transform, values = step.transform, step.values
    if isinstance(transform, Impute):
        fill = pl.lit(values["fill"], dtype=pl.Float64) if needs_numeric(transform) else pl.lit(values["fill"])
        return expression.fill_null(fill)
    if isinstance(transform, Standardize):
        # Multiplied by 1/std, never divided by std: polars divides a column of many rows by a
        # literal as a multiplication by its reciprocal, but one row by exact division, so
        # `x / std` gives a row other bits in a batch than alone (measured: half the rows of 100).
        # One multiplication by a reciprocal computed here once is the same operation everywhere.
        reciprocal = 1.0 / float(values["std"])
        return (expression - pl.lit(values["mean"], dtype=pl.Float64)) * pl.lit(reciprocal, dtype=pl.Float64)
    if isinstance(transform, ClipQuantiles):
        return expression.clip(pl.lit(values["lower"], dtype=pl.Float64), pl.lit(values["upper"], dtype=pl.Float64))
    lower = None if transform.lower is None else pl.lit(float(transform.lower), dtype=pl.Float64)
    upper = None if transform.upper is None else pl.lit(float(transform.upper), dtype=pl.Float64)
    return expression.clip(lower, upper)


def transformed_column(feature: str, input_dtype: pl.DataType, steps: Sequence[FittedStep]) -> pl.Expr:
    """The raw column `feature` with `steps` applied in order, named `feature`.

    The only expression that applies fitted statistics, offline and online. Statistics enter as
    literals and every operation is element-wise, so each output value depends on its own row
    and `steps` only: a row gives the same bits alone, in any batch, in training or in serving.
    """
    wrong = [step.transform.feature for step in steps if step.transform.feature != feature]
    if wrong:
        raise FittedStatisticsError(f"steps for {wrong} passed to the transformation of {feature!r}")
    expression = pl.col(feature)
    if any(needs_numeric(step.transform) for step in steps):
        expression = expression.cast(pl.Float64, strict=True)
    for step in steps:
        expression = _apply_step(expression, step)
    return expression.cast(output_dtype(input_dtype, [step.transform for step in steps]), strict=True).alias(feature)
