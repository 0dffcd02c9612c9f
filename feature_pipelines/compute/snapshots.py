"""Windowed snapshot aggregation: one row per (entity, snapshot time t) over events known in [t - window, t).

This is the single code path that produces feature values; the training set, the online store and
the skew monitor all read what it wrote, so a feature cannot be computed two ways.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

import polars as pl

from feature_pipelines.features.spec import Aggregation, Feature, FeatureView, NullPolicy
from feature_pipelines.names import EVENT_TIMESTAMP


class SnapshotInputError(ValueError):
    """The events handed to a view are missing a column or carry the wrong dtype."""


def _aggregate(feature: Feature) -> pl.Expr:
    """The aggregation of one feature, with its null policy applied inside the window."""
    if feature.aggregation is Aggregation.COUNT:
        return pl.len().cast(pl.Int64).alias(feature.name)
    column = pl.col(feature.source_column)  # type: ignore[arg-type]
    # A floating-point sum must depend only on the window's values, not on how a run's range was
    # cut: polars' sliding-window and SIMD kernels add in layout-dependent order and change the
    # last bits. Summing the sorted values strictly left to right (cum_sum) is order-defined.
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


def required_columns(view: FeatureView) -> dict[str, set[str]]:
    """Source columns the view reads, mapped to the features that need each (for error messages)."""
    needed: dict[str, set[str]] = defaultdict(set)
    for key in view.entity_keys:
        needed[key].add("<entity key>")
    needed[view.source.known_at_column].add("<known_at>")
    for feature in view.features:
        if feature.source_column is not None:
            needed[feature.source_column].add(feature.name)
    return needed


def validate_events(events: pl.LazyFrame, view: FeatureView, *, context: str) -> None:
    """Fail with the view, the context (table/partition) and the column when the input is unusable."""
    schema = events.collect_schema()
    for column, users in required_columns(view).items():
        if column not in schema:
            raise SnapshotInputError(
                f"{context}: feature view {view.name!r} needs column {column!r} "
                f"(used by {sorted(users)}), which is missing; columns present: {list(schema)}"
            )
    known_at = schema[view.source.known_at_column]
    if not isinstance(known_at, pl.Datetime) or known_at.time_zone != "UTC":
        raise SnapshotInputError(
            f"{context}: column {view.source.known_at_column!r} must be a UTC Datetime, found {known_at}"
        )
    for feature in view.features:
        if feature.source_column is None:
            continue
        dtype = schema[feature.source_column]
        wants_bool = feature.aggregation is Aggregation.RATE
        ok = dtype == pl.Boolean if wants_bool else (dtype.is_numeric() or feature.aggregation is Aggregation.LATEST)
        if not ok:
            expected = "Boolean" if wants_bool else "a numeric dtype"
            raise SnapshotInputError(
                f"{context}: column {feature.source_column!r} (feature {feature.name!r}) must be "
                f"{expected}, found {dtype}"
            )


def snapshot_features(
    events: pl.DataFrame | pl.LazyFrame,
    view: FeatureView,
    *,
    start: datetime,
    end: datetime,
    context: str = "",
) -> pl.DataFrame:
    """Feature rows for the snapshots t = start + k*cadence in (start, end].

    A row exists for an entity at t when it had at least one event known in [t - max_window, t).
    COUNT features are 0 for a window with no events (a real count); other aggregates are null.
    Events with a null entity key belong to no entity and are dropped.
    """
    interval = view.cadence.interval
    if start.tzinfo is None or end.tzinfo is None:
        raise SnapshotInputError(f"{context}: snapshot bounds must be timezone-aware UTC")
    lazy = events.lazy()
    validate_events(lazy, view, context=context or f"feature view {view.name!r}")
    keys = list(view.entity_keys)
    known_at = view.source.known_at_column
    earliest = start + interval - view.max_window
    lazy = (
        lazy.filter(
            pl.all_horizontal(pl.col(k).is_not_null() for k in keys),
            pl.col(known_at) >= earliest,
            pl.col(known_at) < end,
        )
        .with_columns(pl.col(known_at).dt.cast_time_unit("us"))
        .sort([known_at, *keys], maintain_order=True)
    )
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
            .agg(_aggregate(feature) for feature in features)
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
