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
from feature_pipelines.compute.exact_sum import window_exact_sums
from feature_pipelines.compute.snapshots_reference import snapshot_features_reference
from feature_pipelines.features.spec import Aggregation, Feature, FeatureView, NullPolicy
from feature_pipelines.names import EVENT_TIMESTAMP

__all__ = [
    "EVENT_TIMESTAMP", "SnapshotInputError", "features_at", "required_columns", "snapshot_features", "validate_events",
]

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
    """The rows to compute (an entity and an instant t each) and, per row, the event index range of each window."""

    row_entity: np.ndarray  # index of the row's entity among the history's entities
    row_t: np.ndarray  # the row's instant t, in microseconds since the epoch
    first_event: np.ndarray  # per entity, the index of its first event in the history
    end: np.ndarray  # per row, one past its last event before t
    starts: dict[timedelta, np.ndarray]  # per window, per row, its first event at or after t - window


def _entity_offsets(history: pl.DataFrame, view: FeatureView) -> np.ndarray:
    """Where each entity's events start in the (keys, known-at)-sorted history, and the history's end."""
    keys = list(view.entity_keys)
    new_entity = history.select(pl.any_horizontal(pl.col(k).ne_missing(pl.col(k).shift(1)) for k in keys)).to_series()
    return np.append(np.flatnonzero(new_entity.to_numpy()), history.height).astype(np.int64)


def _bounds(
    history: pl.DataFrame, view: FeatureView, offsets: np.ndarray, row_entity: np.ndarray, t: np.ndarray
) -> _Windows:
    """Each row's window ranges [first event at or after t - window, first event at or after t): the
    one definition of a window, shared by the snapshot grid and arbitrary instants."""
    times = history[view.source.known_at_column].to_physical().to_numpy()
    starts = {
        window: kernels.window_starts(offsets, times, row_entity, t - _micros(window))
        for window in {f.window_timedelta for f in view.features}
    }
    return _Windows(row_entity, t, offsets[:-1], kernels.window_starts(offsets, times, row_entity, t), starts)


def _windows(history: pl.DataFrame, view: FeatureView, *, start: datetime, end: datetime) -> _Windows:
    interval = _micros(view.cadence.interval)
    times = history[view.source.known_at_column].to_physical().to_numpy()
    offsets = _entity_offsets(history, view)
    k_first = _micros(start) // interval + 1  # snapshots t > start
    k_last = _micros(end) // interval  # ... and t <= end
    row_entity, row_k = kernels.snapshot_rows(offsets, times, interval, _micros(view.max_window), k_first, k_last)
    return _bounds(history, view, offsets, row_entity, row_k * interval)


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

    def sums(self, column: str, window: timedelta) -> np.ndarray:
        """The column's sum over the window per row: for a view with exact float sums, the exact sum
        rounded once (compute/exact_sum.py); otherwise the sorted left-to-right sum."""
        values, valid, _ = self.arrays(column)
        if self.view.exact_float_sums and values.dtype.kind == "f":
            return window_exact_sums(values, valid, self.windows.starts[window], self.windows.end)
        return self.sorted_stats(column, window)[0]

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
                sums = self.sums(column, feature.window_timedelta)
                count = (hi - lo - null_count).astype(np.float64)
                value = sums.astype(np.float64) / np.where(present, count, 1.0)
            case Aggregation.SUM:
                value = self.sums(column, feature.window_timedelta)
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
    scoped = snapshot_history(lazy.select(sorted(required_columns(view))), view, start=start, end=end)
    history = _sorted_history(scoped, view).collect()
    if not _fast_path_applies(history, view):
        # The history already read (its ties still in input order), not the source read again.
        return snapshot_features_reference(history, view, start=start, end=end, context=context)
    windows = _windows(history, view, start=start, end=end)
    engine = _Engine(history, view, windows)
    stamps = pl.Series(EVENT_TIMESTAMP, windows.row_t).cast(pl.Datetime("us", "UTC"))
    return (
        history.select(keys)[windows.first_event[windows.row_entity]]
        .with_columns(stamps, *(engine.column(feature) for feature in view.features))
        .sort(EVENT_TIMESTAMP, *keys)
    )


def _sorted_history(events: pl.LazyFrame, view: FeatureView) -> pl.LazyFrame:
    """The view's columns sorted by entity, then known-at; ties in known-at keep their input order,
    as in the reference (its LATEST is the last of them); a row index as the last sort key does that
    at a third of the cost of a stable sort."""
    keys = list(view.entity_keys)
    return (
        events.select(sorted(required_columns(view)))
        .with_row_index(_INPUT_ORDER)
        .sort([*keys, view.source.known_at_column, _INPUT_ORDER])
        .drop(_INPUT_ORDER)
    )


def features_at(
    events: pl.DataFrame | pl.LazyFrame,
    view: FeatureView,
    rows: pl.DataFrame,
    *,
    at: str = EVENT_TIMESTAMP,
    context: str = "",
) -> pl.DataFrame:
    """`rows` with the view's features at each row's own instant t (column `at`): the aggregates of
    the half-open window [t - window, t) of the entity's events known before t.

    The same window bounds and the same feature code as `snapshot_features`, so at a snapshot
    instant the two give the same bits. Unlike a snapshot, every requested row gets a value: an
    entity without events in a window gets COUNT 0 and null aggregates, as an empty window does
    in a snapshot. Inputs outside the compiled engine's proven domain (NaN, infinities, -0.0,
    numeric dtypes other than Int64 and Float64) are refused: no second implementation serves them.
    """
    where = context or f"feature view {view.name!r}"
    keys = list(view.entity_keys)
    missing = [c for c in (*keys, at) if c not in rows.columns]
    if missing:
        raise SnapshotInputError(f"{where}: the rows need columns {missing} (entity keys and the instant {at!r})")
    stamp = rows.schema[at]
    if not isinstance(stamp, pl.Datetime) or stamp.time_zone != "UTC":
        raise SnapshotInputError(f"{where}: column {at!r} of the rows must be a UTC Datetime, found {stamp}")
    nulls = [c for c in (*keys, at) if rows[c].null_count()]
    if nulls:
        raise SnapshotInputError(f"{where}: rows with a null in {nulls} name no entity or no instant")
    lazy = events.lazy()
    validate_events(lazy, view, context=where)
    known_at = view.source.known_at_column
    t = rows[at].dt.cast_time_unit("us").to_physical().to_numpy().astype(np.int64)
    if rows.height == 0:
        return rows.with_columns(pl.Series(f.name, [], dtype=f.polars_dtype) for f in view.features)
    earliest = _EPOCH + timedelta(microseconds=int(t.min())) - view.max_window
    latest = _EPOCH + timedelta(microseconds=int(t.max()))
    history = (
        _sorted_history(
            lazy.filter(
                pl.all_horizontal(pl.col(k).is_not_null() for k in keys),
                pl.col(known_at) >= earliest,
                pl.col(known_at) < latest,
            ).with_columns(pl.col(known_at).dt.cast_time_unit("us")),
            view,
        )
        .collect()
    )
    if not _fast_path_applies(history, view):
        raise SnapshotInputError(
            f"{where}: values at instants are computed by the compiled engine only, whose domain is finite, "
            "non-negative-zero Int64 and Float64 inputs; these events hold NaN, an infinity, -0.0 or another dtype"
        )
    offsets = _entity_offsets(history, view)
    entities = offsets.shape[0] - 1
    # An entity without events gets the empty range at the history's end (one more, empty, entity).
    offsets = np.append(offsets, history.height).astype(np.int64)
    index = history.select(keys)[offsets[:-2]].with_row_index("__entity")
    row_entity = (
        rows.select(keys)
        .join(index, on=keys, how="left", maintain_order="left")["__entity"]
        .fill_null(entities)
        .cast(pl.Int64)
        .to_numpy()
    )
    engine = _Engine(history, view, _bounds(history, view, offsets, row_entity, t))
    return rows.with_columns(engine.column(feature) for feature in view.features)
