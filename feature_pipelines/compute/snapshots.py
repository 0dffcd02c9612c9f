"""Windowed snapshot aggregation: one row per (entity, snapshot time t) over events known in [t - window, t).

This is the single code path that produces feature values; the training set, the online store and
the skew monitor all read what it wrote, so a feature cannot be computed two ways.

Each entity's events are sorted by time once; compiled loops (compute/window_kernels.py) then
visit only the snapshots of (start, end] and, for each, the index range of each window. The values
are bit-identical to the group_by_dynamic engine kept in compute/snapshots_reference.py, which
aggregated every event into every window it falls in (7 per event for a 7-day window with daily
snapshots, 168 with hourly ones) and threw most of them away. Inputs outside the domain where
that identity is proven (NaN, infinities, negative zeros, numeric dtypes other than Int64 and
Float64) are computed by the reference engine itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from feature_pipelines.compute import window_kernels as kernels
from feature_pipelines.compute.events import (
    SnapshotInputError,
    check_bounds,
    required_columns,
    snapshot_history,
    validate_events,
)
from feature_pipelines.compute.snapshots_reference import snapshot_features_reference
from feature_pipelines.features.spec import Aggregation, Feature, FeatureView, NullPolicy
from feature_pipelines.names import EVENT_TIMESTAMP

__all__ = ["EVENT_TIMESTAMP", "SnapshotInputError", "required_columns", "snapshot_features", "validate_events"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_INPUT_ORDER = "__input_order"
# Aggregations whose value is computed from the column's numbers (not just counted or gathered).
_NUMERIC = {Aggregation.MEAN, Aggregation.SUM, Aggregation.MIN, Aggregation.MAX, Aggregation.P90}


def _micros(moment: datetime | timedelta) -> int:
    return (moment - _EPOCH if isinstance(moment, datetime) else moment) // _MICROSECOND


def _fast_path_applies(history: pl.DataFrame, view: FeatureView) -> bool:
    """Whether the kernels are proven identical to the reference on these events.

    Sums and quantiles of Int64 and finite Float64 values are reproduced operation for operation;
    NaN and infinities take other branches inside polars, and -0.0 vs 0.0 decides the sign of a
    zero sum or extreme, so those inputs (and other dtypes) go to the reference engine.
    """
    if any(history.schema[k].is_float() for k in view.entity_keys):
        return False  # a NaN key groups with itself in polars, not in a comparison with its neighbour
    floats: set[str] = set()
    for feature in view.features:
        if feature.aggregation in _NUMERIC:
            dtype = history.schema[feature.source_column]  # type: ignore[index]
            if dtype not in (pl.Int64, pl.Float64):
                return False
            if dtype == pl.Float64:
                floats.add(feature.source_column)  # type: ignore[arg-type]
    if not floats:
        return True
    checks = [
        (pl.col(c).is_finite().all() & ~((pl.col(c) == 0) & (pl.lit(1.0) / pl.col(c) < 0)).any()).alias(c)
        for c in sorted(floats)
    ]
    return all(history.select(checks).row(0))


@dataclass(frozen=True)
class _Windows:
    """The snapshot rows of a history and, per row, the event index range of each window."""

    row_entity: np.ndarray  # index of the row's entity among the history's entities
    row_k: np.ndarray  # the snapshot t = k * cadence
    first_event: np.ndarray  # per entity, the index of its first event in the history
    end: np.ndarray  # per row, one past its last event before t
    starts: dict[timedelta, np.ndarray]  # per window, per row, its first event at or after t - window


def _windows(history: pl.DataFrame, view: FeatureView, *, start: datetime, end: datetime) -> _Windows:
    keys = list(view.entity_keys)
    interval = _micros(view.cadence.interval)
    times = history[view.source.known_at_column].to_physical().to_numpy()
    new_entity = history.select(pl.any_horizontal(pl.col(k).ne_missing(pl.col(k).shift(1)) for k in keys)).to_series()
    offsets = np.append(np.flatnonzero(new_entity.to_numpy()), history.height).astype(np.int64)
    k_first = _micros(start) // interval + 1  # snapshots t > start
    k_last = _micros(end) // interval  # ... and t <= end
    row_entity, row_k = kernels.snapshot_rows(offsets, times, interval, _micros(view.max_window), k_first, k_last)
    t = row_k * interval
    starts = {
        window: kernels.window_starts(offsets, times, row_entity, t - _micros(window))
        for window in {f.window_timedelta for f in view.features}
    }
    return _Windows(row_entity, row_k, offsets[:-1], kernels.window_starts(offsets, times, row_entity, t), starts)


def _masked(name: str, values: np.ndarray, valid: np.ndarray, dtype: pl.DataType) -> pl.Series:
    """The values as a polars column, null where not valid, cast as the reference casts them."""
    return (
        pl.DataFrame({"value": values, "valid": valid})
        .select(pl.when(pl.col("valid")).then(pl.col("value")).cast(dtype).alias(name))
        .to_series()
    )


class _Engine:
    """The feature columns of one history's snapshot rows; sorted sums and quantiles computed once per (column, window)."""

    def __init__(self, history: pl.DataFrame, view: FeatureView, windows: _Windows) -> None:
        self.history, self.view, self.windows = history, view, windows
        self._arrays: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._sorted: dict[tuple[str, timedelta], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def arrays(self, column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The column's values (nulls filled), validity, and prefix counts of its nulls."""
        if column not in self._arrays:
            series = self.history[column]
            valid = series.is_not_null().to_numpy()
            values = series.fill_null(False if series.dtype == pl.Boolean else 0).to_numpy()
            nulls = np.concatenate(([0], np.cumsum(~valid, dtype=np.int64)))
            self._arrays[column] = (values, valid, nulls)
        return self._arrays[column]

    def sorted_stats(self, column: str, window: timedelta) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(sums, p90s, present) of the column over the window, for every feature that needs either."""
        if (column, window) not in self._sorted:
            values, valid, _ = self.arrays(column)
            wants = {
                f.aggregation for f in self.view.features if (f.source_column, f.window_timedelta) == (column, window)
            }
            # group_by_dynamic's windows overlap when longer than the cadence: polars then takes
            # its rolling quantile kernel, otherwise the quantile of each window's slice.
            overlapping = window > self.view.cadence.interval
            mode = kernels.QUANTILE_ROLLING if overlapping else kernels.QUANTILE_SLICE
            self._sorted[(column, window)] = kernels.sorted_window_stats(
                values,
                valid,
                self.windows.starts[window],
                self.windows.end,
                bool(wants & {Aggregation.MEAN, Aggregation.SUM}),
                Aggregation.P90 in wants,
                0.9,
                mode,
            )
        return self._sorted[(column, window)]

    def column(self, feature: Feature) -> pl.Series:
        """One feature's values for every snapshot row, with its null policy applied inside the window."""
        lo, hi = self.windows.starts[feature.window_timedelta], self.windows.end
        dtype = feature.polars_dtype
        if feature.aggregation is Aggregation.COUNT:
            return pl.Series(feature.name, hi - lo, dtype=pl.Int64)
        column: str = feature.source_column  # type: ignore[assignment]
        if feature.aggregation is Aggregation.LATEST:
            # The latest event is taken whole: its null is the answer, not an older value.
            index = pl.Series(np.where(hi > lo, hi - 1, 0)).set(pl.Series(hi <= lo), None)  # type: ignore[arg-type]
            return self.history[column].gather(index).cast(dtype).alias(feature.name)
        values, valid, nulls = self.arrays(column)
        null_count = nulls[hi] - nulls[lo]
        present = (hi - lo) > null_count
        match feature.aggregation:
            case Aggregation.MEAN:
                sums, _, _ = self.sorted_stats(column, feature.window_timedelta)
                count = (hi - lo - null_count).astype(np.float64)
                value = sums.astype(np.float64) / np.where(present, count, 1.0)
            case Aggregation.SUM:
                value = self.sorted_stats(column, feature.window_timedelta)[0]
            case Aggregation.P90:
                value = self.sorted_stats(column, feature.window_timedelta)[1]
            case Aggregation.MIN | Aggregation.MAX:
                value, _ = kernels.window_extremes(values, valid, lo, hi, feature.aggregation is Aggregation.MAX)
            case Aggregation.RATE:
                trues = np.concatenate(([0], np.cumsum(values & valid, dtype=np.int64)))
                value = (trues[hi] - trues[lo]) / np.where(present, hi - lo - null_count, 1).astype(np.float64)
            case _:
                raise AssertionError(f"unhandled aggregation {feature.aggregation}")
        if feature.null_policy is NullPolicy.PROPAGATE:
            present &= null_count == 0
        return _masked(feature.name, value, present, dtype)


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
    check_bounds(start, end, context=context)
    lazy = events.lazy()
    validate_events(lazy, view, context=context or f"feature view {view.name!r}")
    keys = list(view.entity_keys)
    known_at = view.source.known_at_column
    # Ties in known-at keep their input order, as in the reference (its LATEST is the last of them);
    # a row index as the last sort key does that at a third of the cost of a stable sort.
    history = (
        snapshot_history(lazy.select(sorted(required_columns(view))), view, start=start, end=end)
        .with_row_index(_INPUT_ORDER)
        .sort([*keys, known_at, _INPUT_ORDER])
        .drop(_INPUT_ORDER)
        .collect()
    )
    if not _fast_path_applies(history, view):
        # The history already read (its ties still in input order), not the source read again.
        return snapshot_features_reference(history, view, start=start, end=end, context=context)
    windows = _windows(history, view, start=start, end=end)
    engine = _Engine(history, view, windows)
    stamps = pl.Series(EVENT_TIMESTAMP, windows.row_k * _micros(view.cadence.interval)).cast(pl.Datetime("us", "UTC"))
    return (
        history.select(keys)[windows.first_event[windows.row_entity]]
        .with_columns(stamps, *(engine.column(feature) for feature in view.features))
        .sort(EVENT_TIMESTAMP, *keys)
    )
