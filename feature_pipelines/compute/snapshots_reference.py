"""The original snapshot engine (polars group_by_dynamic), kept as the bit-for-bit reference of the fast one.

`compute.snapshots.snapshot_features` must return exactly what `snapshot_features_reference`
returns; the equivalence tests compare the two, and the fast engine falls back to this one for
inputs outside its proven domain (NaN, infinities, negative zeros, other numeric dtypes).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

import polars as pl

from feature_pipelines.compute.events import check_bounds, snapshot_history, validate_events
from feature_pipelines.compute.exact_sum import exact_sum
from feature_pipelines.features.spec import Aggregation, Feature, FeatureView, NullPolicy
from feature_pipelines.names import EVENT_TIMESTAMP


def _exact_float_sum(values: pl.Series) -> float | int | None:
    """The exact sum rounded once for floats (compute/exact_sum.py); integers sum exactly as they are."""
    if values.dtype.is_float():
        return exact_sum(values.to_list())
    return values.sum()


def _aggregate(feature: Feature, *, exact_float_sums: bool = False) -> pl.Expr:
    """The aggregation of one feature, with its null policy applied inside the window."""
    if feature.aggregation is Aggregation.COUNT:
        return pl.len().cast(pl.Int64).alias(feature.name)
    column = pl.col(feature.source_column)  # type: ignore[arg-type]
    # A floating-point sum must depend only on the window's values, not on how a run's range was
    # cut: polars' sliding-window and SIMD kernels add in layout-dependent order and change the
    # last bits. Summing the sorted values strictly left to right (cum_sum) is order-defined; a
    # streaming view's exact sum rounded once is order-free and merges from tiles.
    if exact_float_sums:
        exact_sum = column.drop_nulls().map_batches(_exact_float_sum, returns_scalar=True)
    else:
        exact_sum = column.drop_nulls().sort().cum_sum().last()
    match feature.aggregation:
        case Aggregation.MEAN:
            value = exact_sum / column.count()
        case Aggregation.SUM:
            value = exact_sum
        case Aggregation.MIN:
            value = column.min()
        case Aggregation.MAX:
            value = column.max()
        case Aggregation.P90:
            value = column.quantile(0.9, interpolation="linear")
        case Aggregation.RATE:
            value = column.cast(pl.Float64).mean()
        case Aggregation.LATEST:
            # The latest event is taken whole: its null is the answer, not an older value.
            return column.last().cast(feature.polars_dtype).alias(feature.name)
        case _:
            raise AssertionError(f"unhandled aggregation {feature.aggregation}")
    if feature.null_policy is NullPolicy.PROPAGATE:
        value = pl.when(column.null_count() > 0).then(None).otherwise(value)
    else:
        # SKIP: the aggregate of no non-null values is null (polars' sum would say 0).
        value = pl.when(column.count() == 0).then(None).otherwise(value)
    return value.cast(feature.polars_dtype).alias(feature.name)


def snapshot_features_reference(
    events: pl.DataFrame | pl.LazyFrame,
    view: FeatureView,
    *,
    start: datetime,
    end: datetime,
    context: str = "",
) -> pl.DataFrame:
    """`snapshot_features` as polars group_by_dynamic computes it: every event aggregated into every
    window it falls in, then the windows outside (start, end] thrown away."""
    check_bounds(start, end, context=context)
    lazy = events.lazy()
    validate_events(lazy, view, context=context or f"feature view {view.name!r}")
    keys = list(view.entity_keys)
    known_at = view.source.known_at_column
    interval = view.cadence.interval
    lazy = snapshot_history(lazy, view, start=start, end=end).sort([known_at, *keys], maintain_order=True)
    by_window: dict[timedelta, list[Feature]] = defaultdict(list)
    for feature in view.features:
        by_window[feature.window_timedelta].append(feature)
    frames = []
    for window, features in sorted(by_window.items()):
        frames.append(
            lazy.group_by_dynamic(
                known_at,
                every=interval,
                period=window,
                offset=interval - window,
                closed="left",
                label="right",
                group_by=keys,
                start_by="window",
            )
            .agg(_aggregate(feature, exact_float_sums=view.exact_float_sums) for feature in features)
            .rename({known_at: EVENT_TIMESTAMP})
        )
    joined = frames[0]
    for frame in frames[1:]:
        joined = joined.join(frame, on=[*keys, EVENT_TIMESTAMP], how="full", coalesce=True)
    counts = [f.name for f in view.features if f.aggregation is Aggregation.COUNT]
    return (
        joined.with_columns(pl.col(counts).fill_null(0))
        .filter(pl.col(EVENT_TIMESTAMP) > start, pl.col(EVENT_TIMESTAMP) <= end)
        .select(*keys, EVENT_TIMESTAMP, *view.feature_names)
        .sort(EVENT_TIMESTAMP, *keys)
        .collect()
    )
