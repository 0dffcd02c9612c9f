"""What the monitors compare, read from the lake: the training reference, a feature table's day, a view's raw events."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import polars as pl

from feature_pipelines.features.spec import FeatureView
from feature_pipelines.names import EVENT_TIMESTAMP
from feature_pipelines.offline.delta_store import DeltaStore, TableMissingError, TimeSlice
from feature_pipelines.training.spec import PREDICTION_TIMESTAMP, TrainingSetSpec

REFERENCE_WINDOW = timedelta(days=28)


def history_start(store: DeltaStore, views: Sequence[FeatureView]) -> datetime | None:
    """The first instant at which every view had a snapshot; None if one has none."""
    starts = []
    for view in views:
        try:
            first = store.scan(view.name).select(pl.col(EVENT_TIMESTAMP).min()).collect().item()
        except TableMissingError:
            return None
        if first is None:
            return None
        starts.append(first)
    return max(starts) if starts else None


def training_reference(
    store: DeltaStore, training: TrainingSetSpec, views: Sequence[FeatureView], features: Sequence[str], start: datetime
) -> pl.DataFrame:
    """The training rows of the REFERENCE_WINDOW before `start` (what the model learned from lately),
    leaving out rows stamped before every feature table had its first snapshot: their nulls say
    that the history had not begun, not what the features look like."""
    empty = pl.DataFrame(schema={name: pl.Float64 for name in features})
    history = history_start(store, views)
    if history is None:
        return empty
    try:
        lazy = store.scan(training.name)
    except TableMissingError:
        return empty
    low = max(start - REFERENCE_WINDOW, history)
    recent = (pl.col(PREDICTION_TIMESTAMP) < start) & (pl.col(PREDICTION_TIMESTAMP) >= low)
    return lazy.filter(recent).select(features).collect()


def partition_rows(
    store: DeltaStore, view: FeatureView, start: datetime, end: datetime, features: Sequence[str]
) -> pl.DataFrame:
    """The features of a feature table's snapshots in (start, end], as its daily partition holds them."""
    return store.read(view.name, time_slice=TimeSlice(EVENT_TIMESTAMP, start, end, closed="right")).select(features)


def shadow_events(
    store: DeltaStore, view: FeatureView, candidate: FeatureView, start: datetime, end: datetime
) -> pl.DataFrame:
    """The raw events both definitions of a view need for the snapshots in (start, end]: the wider
    window's reach plus the source's lateness before `start`."""
    reach = max(view.max_window, candidate.max_window) + view.source.max_lateness
    return store.read(view.source.asset, time_slice=TimeSlice(view.source.known_at_column, start - reach, end))


__all__ = ["REFERENCE_WINDOW", "history_start", "partition_rows", "shadow_events", "training_reference"]
