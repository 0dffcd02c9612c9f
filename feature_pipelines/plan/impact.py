"""A change's effect on values: the working-tree definition recomputed through `compute/` over the
last partitions of the stored table, compared value by value with what the table holds, and the
training set's drift figures against both.

Rows are matched on (entity keys, event_timestamp). A row only one side has (a wider window gives
entities the narrower one lacks) counts as changed: a reader gets a value where it had none, or
none where it had one. Values compare by the monitors' one rule (`monitoring.values`): numbers
within the feature's `abs_tolerance`, nulls equal only nulls, NaN equals NaN.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl

from feature_pipelines.compute.snapshots import snapshot_features
from feature_pipelines.features.spec import FeatureView
from feature_pipelines.monitoring.drift import FeatureDrift, feature_drift
from feature_pipelines.monitoring.inputs import shadow_events, training_reference
from feature_pipelines.monitoring.values import NUMERIC_DTYPES, numbers_equal
from feature_pipelines.names import EVENT_TIMESTAMP
from feature_pipelines.offline.delta_store import DeltaStore, TimeSlice
from feature_pipelines.plan.diff import FeatureChange
from feature_pipelines.timeutil import floor_to
from feature_pipelines.training.spec import TrainingSetSpec

_STORED, _NEW = "__stored", "__recomputed"


@dataclass(frozen=True)
class ValueImpact:
    """One feature's stored values against its recomputed ones over (start, end]."""

    feature: str
    stored_column: str
    rows: int  # rows either side has
    compared: int  # rows both sides have
    changed: int  # of `compared`, rows whose value differs
    only_stored: int
    only_recomputed: int
    null_changes: int  # of `changed`, a value became null or a null became a value
    max_abs_diff: float | None

    @property
    def share_changed(self) -> float:
        return (self.changed + self.only_stored + self.only_recomputed) / self.rows if self.rows else 0.0


@dataclass(frozen=True)
class DriftEffect:
    """The training set's drift figures for one feature: against the stored and the recomputed values."""

    training_set: str
    reference_rows: int
    stored: FeatureDrift
    recomputed: FeatureDrift


@dataclass(frozen=True)
class Recomputation:
    """The stored rows and the working-tree rows of one view over the same snapshots (start, end]."""

    view: FeatureView
    start: datetime
    end: datetime
    stored: pl.DataFrame
    recomputed: pl.DataFrame

    @property
    def keys(self) -> list[str]:
        return [*self.view.entity_keys, EVENT_TIMESTAMP]


def last_partitions(store: DeltaStore, view: FeatureView, count: int) -> tuple[datetime, datetime] | None:
    """(start, end] of the last `count` partitions the table holds: from the start of the partition
    `count - 1` before the one with the latest snapshot, to that snapshot; None for an empty table."""
    if count < 1:
        raise ValueError(f"need at least one partition, got {count}")
    latest = store.scan(view.name).select(pl.col(EVENT_TIMESTAMP).max()).collect().item()
    if latest is None:
        return None
    grain = view.partitioning.interval
    # A partition (s, s + P] holds the snapshot at its end, so the latest one belongs to floor(latest - 1us).
    last_start = floor_to(latest - timedelta(microseconds=1), grain)
    return last_start - (count - 1) * grain, latest


def recompute(store: DeltaStore, view: FeatureView, start: datetime, end: datetime) -> Recomputation:
    """The table's rows of (start, end] and `view` computed from the lake's raw events over them."""
    stored = store.read(view.name, time_slice=TimeSlice(EVENT_TIMESTAMP, start, end, closed="right"))
    events = shadow_events(store, view, view, start, end)
    recomputed = snapshot_features(events, view, start=start, end=end,
                                   context=f"plan: view {view.name!r} recomputed over ({start.isoformat()}, {end.isoformat()}]")
    return Recomputation(view, start, end, stored, recomputed)


def value_impact(run: Recomputation, change: FeatureChange) -> ValueImpact:
    """`change`'s feature as stored (its old name) against its recomputed values (its new name)."""
    if change.before is None or change.after is None:
        raise ValueError(f"feature {change.reference!r}: a value impact needs the feature on both sides")
    keys = run.keys
    if change.before.name not in run.stored.columns:
        raise LookupError(f"table {run.view.name!r}: no stored column {change.before.name!r} (columns {run.stored.columns})")
    old = run.stored.select(*keys, pl.col(change.before.name).alias(_STORED), pl.lit(True).alias("__in_stored"))
    new = run.recomputed.select(*keys, pl.col(change.after.name).alias(_NEW), pl.lit(True).alias("__in_new"))
    joined = old.join(new, on=keys, how="full", coalesce=True)
    both = joined.filter(pl.col("__in_stored").is_not_null() & pl.col("__in_new").is_not_null())
    numeric = change.before.dtype in NUMERIC_DTYPES and change.after.dtype in NUMERIC_DTYPES
    tolerance = run.view.feature(change.after.name).monitoring.abs_tolerance
    if numeric:
        differs = ~numbers_equal(pl.col(_STORED), pl.col(_NEW), tolerance)
    else:
        differs = pl.col(_STORED).cast(pl.String).ne_missing(pl.col(_NEW).cast(pl.String))
    flagged = both.filter(differs)
    max_diff = None
    if numeric and flagged.height:
        gaps = (flagged[_STORED].cast(pl.Float64) - flagged[_NEW].cast(pl.Float64)).abs().drop_nulls().drop_nans()
        max_diff = float(gaps.max()) if gaps.len() else None  # type: ignore[arg-type]
    return ValueImpact(
        feature=change.after.name,
        stored_column=change.before.name,
        rows=joined.height,
        compared=both.height,
        changed=flagged.height,
        only_stored=joined.filter(pl.col("__in_new").is_null()).height,
        only_recomputed=joined.filter(pl.col("__in_stored").is_null()).height,
        null_changes=flagged.filter(pl.col(_STORED).is_null() != pl.col(_NEW).is_null()).height,
        max_abs_diff=max_diff,
    )


def drift_effect(store: DeltaStore, run: Recomputation, change: FeatureChange, training: TrainingSetSpec) -> DriftEffect | None:
    """The training set's drift for the feature against its stored and its recomputed values; None
    when the training set holds no rows of it before the compared range."""
    if change.before is None or change.after is None:
        return None
    old_name = change.before.name
    if not store.exists(training.name) or old_name not in store.scan(training.name).collect_schema().names():
        return None
    reference = training_reference(store, training, [run.view], [old_name], run.start)
    if reference.height == 0:
        return None
    thresholds = run.view.feature(change.after.name).monitoring
    series = reference.get_column(old_name)
    return DriftEffect(
        training_set=training.name,
        reference_rows=reference.height,
        stored=feature_drift(change.after.name, series, run.stored.get_column(old_name), thresholds),
        recomputed=feature_drift(change.after.name, series, run.recomputed.get_column(change.after.name), thresholds),
    )
