"""The events a view reads: input validation (SnapshotInputError) and the history a snapshot range sees."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

import polars as pl

from feature_pipelines.features.spec import Aggregation, FeatureView


class SnapshotInputError(ValueError):
    """The events handed to a view are missing a column or carry the wrong dtype."""


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


def check_bounds(start: datetime, end: datetime, *, context: str) -> None:
    """Snapshot bounds are instants: a naive datetime would be read in an unknown zone."""
    if start.tzinfo is None or end.tzinfo is None:
        raise SnapshotInputError(f"{context}: snapshot bounds must be timezone-aware UTC")


def snapshot_history(events: pl.LazyFrame, view: FeatureView, *, start: datetime, end: datetime) -> pl.LazyFrame:
    """The events the snapshots of (start, end] can see: keyed, known in [start + cadence - widest window, end).

    Events with a null entity key belong to no entity and are dropped; known-at is in microseconds,
    the unit of the snapshot grid.
    """
    known_at = view.source.known_at_column
    earliest = start + view.cadence.interval - view.max_window
    return events.filter(
        pl.all_horizontal(pl.col(k).is_not_null() for k in view.entity_keys),
        pl.col(known_at) >= earliest,
        pl.col(known_at) < end,
    ).with_columns(pl.col(known_at).dt.cast_time_unit("us"))
