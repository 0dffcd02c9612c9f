"""Shadow comparison: a changed feature definition computed beside the current one, before promotion.

Both definitions run through the same computation (`compute.snapshots.snapshot_features`) on the
same raw events and snapshot instants; the two tables are joined on (entity, event_timestamp) and
every feature the two share by name is compared value by value (numbers within the feature's
`abs_tolerance`, nulls equal only nulls, NaN equals NaN). Rows that only one definition produces
(a wider window creates entities the narrower one lacks) are counted apart. A candidate whose
values differ is not wrong -- that may be the point of the change -- but nobody should promote it
without seeing how much, where and for whom.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import polars as pl

from feature_pipelines.compute.snapshots import snapshot_features
from feature_pipelines.features.spec import FeatureDefinitionError, FeatureView
from feature_pipelines.monitoring.figures import Figure, Figures
from feature_pipelines.monitoring.values import NUMERIC_DTYPES, json_safe, numbers_equal
from feature_pipelines.names import EVENT_TIMESTAMP

MAX_EXAMPLES = 5


@dataclass(frozen=True)
class ShadowFeatureDiff:
    """One feature's differences between the current and the candidate definition."""

    feature: str
    compared: int
    discrepancies: int
    null_discrepancies: int
    max_abs_diff: float | None
    examples: tuple[dict[str, Any], ...] = ()

    @property
    def discrepancy_rate(self) -> float:
        return self.discrepancies / self.compared if self.compared else 0.0

    def as_metadata(self) -> dict[str, Any]:
        return SHADOW_FIGURES.metadata(self)


SHADOW_FIGURES: Figures[ShadowFeatureDiff] = Figures(
    (
        Figure("feature", lambda f: f.feature),
        Figure("compared", lambda f: f.compared),
        Figure("discrepancies", lambda f: f.discrepancies),
        Figure("discrepancy_rate", lambda f: f.discrepancy_rate, digits=6),
        Figure("null_discrepancies", lambda f: f.null_discrepancies, heading="null discrepancies"),
        Figure("max_abs_diff", lambda f: f.max_abs_diff, heading="max abs diff"),
    ),
    metadata_order=("feature", "compared", "discrepancies", "discrepancy_rate", "null_discrepancies", "max_abs_diff"),
)
"""A shadow figure's metadata key and report heading (shadow comparisons are not stored in a table)."""

SHADOW_REPORT_COLUMNS = ("feature", "compared", "discrepancies", "null_discrepancies", "max_abs_diff")


@dataclass(frozen=True)
class ShadowReport:
    """A candidate definition against the current one over one time range, feature by feature."""

    view: str
    start: datetime
    end: datetime
    rows_current: int
    rows_candidate: int
    only_in_current: int
    only_in_candidate: int
    features: tuple[ShadowFeatureDiff, ...]
    added_features: tuple[str, ...]
    removed_features: tuple[str, ...]

    @property
    def identical(self) -> bool:
        return (
            not self.only_in_current
            and not self.only_in_candidate
            and all(f.discrepancies == 0 for f in self.features)
            and not self.added_features
            and not self.removed_features
        )

    def summary(self) -> str:
        changed = [f"{f.feature}: {f.discrepancies}/{f.compared}" for f in self.features if f.discrepancies]
        return (
            f"view {self.view!r} candidate vs current over ({self.start.isoformat()}, {self.end.isoformat()}]: "
            f"{self.rows_current} vs {self.rows_candidate} rows ({self.only_in_current} only in current, "
            f"{self.only_in_candidate} only in candidate); features that differ: {changed or 'none'}"
            + (f"; added {list(self.added_features)}" if self.added_features else "")
            + (f"; removed {list(self.removed_features)}" if self.removed_features else "")
        )


def _differs(current: pl.Expr, candidate: pl.Expr, numeric: bool, tolerance: float) -> pl.Expr:
    if not numeric:
        return current.ne_missing(candidate)
    return ~numbers_equal(current, candidate, tolerance)


def _feature_diff(both: pl.DataFrame, name: str, current: FeatureView, candidate: FeatureView) -> ShadowFeatureDiff:
    """One shared feature compared on the rows both definitions produce (`name` and `name__candidate`)."""
    old_feature, new_feature = current.feature(name), candidate.feature(name)
    numeric = old_feature.dtype in NUMERIC_DTYPES and new_feature.dtype in NUMERIC_DTYPES
    tolerance = min(old_feature.monitoring.abs_tolerance, new_feature.monitoring.abs_tolerance)
    other = f"{name}__candidate"
    flagged = both.with_columns(
        _differs(pl.col(name), pl.col(other), numeric, tolerance).alias("__differs"),
        (pl.col(name).is_null() != pl.col(other).is_null()).alias("__null_differs"),
    ).filter(pl.col("__differs"))
    max_diff = None
    if numeric and flagged.height:
        values = (flagged[name].cast(pl.Float64) - flagged[other].cast(pl.Float64)).abs().drop_nulls().drop_nans()
        max_diff = float(values.max()) if values.len() else None  # type: ignore[arg-type]
    examples = tuple(
        {
            "entity": json.dumps({k: json_safe(row[k]) for k in current.entity_keys}),
            "event_timestamp": json_safe(row[EVENT_TIMESTAMP]),
            "current": json_safe(row[name]),
            "candidate": json_safe(row[other]),
        }
        for row in flagged.head(MAX_EXAMPLES).iter_rows(named=True)
    )
    return ShadowFeatureDiff(
        feature=name,
        compared=both.height,
        discrepancies=flagged.height,
        null_discrepancies=int(flagged["__null_differs"].sum()) if flagged.height else 0,
        max_abs_diff=max_diff,
        examples=examples,
    )


def shadow_compare(
    events: pl.DataFrame | pl.LazyFrame,
    current: FeatureView,
    candidate: FeatureView,
    *,
    start: datetime,
    end: datetime,
) -> ShadowReport:
    """Compute both definitions over the snapshots in (start, end] and compare them."""
    if current.entity_keys != candidate.entity_keys:
        raise FeatureDefinitionError(
            f"shadow of view {current.name!r}: the candidate joins on {list(candidate.entity_keys)}, the current "
            f"definition on {list(current.entity_keys)}; a new entity is a new view, not a shadow"
        )
    if current.cadence is not candidate.cadence:
        raise FeatureDefinitionError(
            f"shadow of view {current.name!r}: snapshots every {candidate.cadence.value} vs "
            f"{current.cadence.value} cannot be compared row by row"
        )
    keys = [*current.entity_keys, EVENT_TIMESTAMP]
    events = events.lazy()
    old = snapshot_features(events, current, start=start, end=end, context=f"shadow of {current.name!r} (current)")
    new = snapshot_features(events, candidate, start=start, end=end, context=f"shadow of {current.name!r} (candidate)")
    shared = [f for f in current.feature_names if f in set(candidate.feature_names)]
    joined = old.join(new, on=keys, how="full", coalesce=True, suffix="__candidate")
    # Rows present on one side only: the full join leaves the other side's columns null; a marker
    # column says which side had the row.
    old_marked = old.select(keys).with_columns(pl.lit(True).alias("__in_current"))
    new_marked = new.select(keys).with_columns(pl.lit(True).alias("__in_candidate"))
    joined = joined.join(old_marked, on=keys, how="left").join(new_marked, on=keys, how="left")
    both = joined.filter(pl.col("__in_current").is_not_null() & pl.col("__in_candidate").is_not_null())
    diffs = [_feature_diff(both, name, current, candidate) for name in shared]
    return ShadowReport(
        view=current.name,
        start=start,
        end=end,
        rows_current=old.height,
        rows_candidate=new.height,
        only_in_current=joined.filter(pl.col("__in_candidate").is_null()).height,
        only_in_candidate=joined.filter(pl.col("__in_current").is_null()).height,
        features=tuple(diffs),
        added_features=tuple(f for f in candidate.feature_names if f not in set(current.feature_names)),
        removed_features=tuple(f for f in current.feature_names if f not in set(candidate.feature_names)),
    )
