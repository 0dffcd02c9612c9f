"""The point-in-time (as-of) join every training-set path goes through.

A training row may only see feature values that were knowable at its prediction
time; anything else leaks the future into the model. Keeping one implementation
means there is exactly one place where that rule, the TTL and the tie-breaking are
decided, tested and benchmarked.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import numpy as np
import polars as pl

__all__ = ["PointInTimeJoinError", "point_in_time_join"]

_ONE_MICROSECOND = timedelta(microseconds=1)
# Multiplier (or divisor, when negative) that brings a time unit to microseconds.
_TO_MICROSECONDS: dict[str, int] = {"ms": 1_000, "us": 1, "ns": -1_000}


class PointInTimeJoinError(ValueError):
    """Inputs that cannot be joined without risking a silently wrong training set."""


def point_in_time_join(
    entities: pl.DataFrame | pl.LazyFrame,
    features: pl.DataFrame | pl.LazyFrame,
    *,
    entity_keys: Sequence[str],
    timestamp_column: str = "event_timestamp",
    created_column: str | None = None,
    ttl: timedelta | None = None,
    feature_columns: Sequence[str] | None = None,
    entity_timestamp_column: str | None = None,
) -> pl.DataFrame:
    """Attach to each entity row the feature values that were known at its timestamp.

    Rules, chosen so a training set never sees the future and is reproducible:

    * A feature row is usable for an entity row when its event timestamp is
      ``<=`` the entity timestamp (equality counts: a value stamped at the
      prediction instant was available) and, when ``ttl`` is given, ``>=``
      ``entity_ts - ttl`` (both bounds inclusive). Stale values are worse than
      missing ones, so a too-old match yields nulls rather than the stale value.
    * Among usable rows the latest event timestamp wins; ties go to the latest
      ``created_column`` value (a later recomputation corrects an earlier one; a
      null created timestamp counts as older than any non-null one). A full tie
      (same keys, event and created timestamp) goes to the row that comes LAST in
      ``features``' row order, so appending a corrected row wins, and the result
      never depends on sort instability or thread scheduling.
    * The winning row is taken whole: a null in it stays null and is never
      back-filled from an older row, because that combination of values never
      existed at any point in time.
    * Entity rows without a usable feature row (unknown key, null key, null
      timestamp, everything too old or in the future) are kept with null
      features; duplicate entity rows are all kept. Feature rows with a null key
      or null event timestamp can never be usable and are ignored.

    The output has exactly the entity frame's rows in its order, its columns
    untouched first, then the feature columns with their declared dtypes, so a
    label column stays aligned with whatever the caller holds.

    Timestamps must be timezone-aware; any zone and unit (ns/us/ms) is accepted
    and everything is compared as UTC microseconds (sub-microsecond parts are
    floored). Naive timestamps are rejected because guessing their zone could
    shift every row by hours and leak the future.

    Cost: one sort of the entity times (skipped when the entity frame is ordered
    by time, or by keys then time), one sort of the feature keys and times
    (skipped when the feature frame is ordered by keys, event time, created time),
    a Polars as-of join on those narrow columns, and one gather of the feature
    columns: no more than a bare sort + ``join_asof`` while adding the tie rules
    and the entity-order guarantee.

    Raises:
        PointInTimeJoinError: a missing key/timestamp/feature column, a naive or
            non-datetime timestamp, a key dtype mismatch, a negative TTL, or a
            feature column whose name collides with an entity-frame column.
    """
    keys = list(entity_keys)
    entity_ts = entity_timestamp_column or timestamp_column
    entity_schema = _schema(entities)
    feature_schema = _schema(features)

    if not keys:
        raise PointInTimeJoinError("entity_keys must name at least one key column")
    if len(set(keys)) != len(keys):
        raise PointInTimeJoinError(f"entity_keys contains duplicates: {keys}")
    for column in [*keys, entity_ts]:
        _require_column(entity_schema, column, "entity frame")
    for column in [*keys, timestamp_column] + ([created_column] if created_column else []):
        _require_column(feature_schema, column, "feature frame")
    for key in keys:
        if entity_schema[key] != feature_schema[key]:
            raise PointInTimeJoinError(
                f"key column {key!r} has dtype {entity_schema[key]} in the entity frame "
                f"but {feature_schema[key]} in the feature frame; cast one side first"
            )
    entity_ts_dtype = _require_aware_datetime(entity_schema, entity_ts, "entity frame")
    feature_ts_dtype = _require_aware_datetime(feature_schema, timestamp_column, "feature frame")
    created_dtype = (
        _require_aware_datetime(feature_schema, created_column, "feature frame")
        if created_column
        else None
    )
    if ttl is not None and ttl < timedelta(0):
        raise PointInTimeJoinError(f"ttl must not be negative, got {ttl}")

    reserved = {*keys, timestamp_column, *([created_column] if created_column else [])}
    if feature_columns is None:
        feature_cols = [c for c in feature_schema.names() if c not in reserved]
    else:
        feature_cols = list(feature_columns)
        if len(set(feature_cols)) != len(feature_cols):
            raise PointInTimeJoinError(f"feature_columns contains duplicates: {feature_cols}")
        for column in feature_cols:
            _require_column(feature_schema, column, "feature frame")
            if column in reserved:
                raise PointInTimeJoinError(
                    f"feature column {column!r} is a key or timestamp column of the feature frame"
                )
    for column in feature_cols:
        if column in entity_schema:
            raise PointInTimeJoinError(
                f"feature column {column!r} collides with a column of the entity frame; "
                "rename or drop one of them"
            )

    taken = set(entity_schema.names()) | set(feature_schema.names())
    ts_tmp = _fresh_name("__pit_ts", taken)
    created_tmp = _fresh_name("__pit_created", taken) if created_column else None
    row_tmp = _fresh_name("__pit_row", taken)

    # Only the columns the join needs are materialised from a lazy feature frame,
    # so a wide Delta table scan is pruned by projection pushdown.
    feature_exprs = [
        *[pl.col(k) for k in keys],
        _epoch_us(timestamp_column, feature_ts_dtype).alias(ts_tmp),
        *(
            [_epoch_us(created_column, created_dtype).alias(created_tmp)]
            if created_column and created_tmp and created_dtype
            else []
        ),
        *[pl.col(c) for c in feature_cols],
    ]
    entity_df, feature_df = _materialise(entities, features.lazy().select(feature_exprs))

    # Only narrow (keys, time, row number) projections are sorted and joined; the
    # join yields, per entity row, the row number of the winning feature row, and
    # the feature columns are gathered once at the end. Wide feature columns are
    # therefore moved exactly once, and the entity frame is never rebuilt. The two
    # sides are prepared concurrently: NumPy's sort is single-threaded and both
    # libraries release the GIL, so this keeps a second core busy.
    with ThreadPoolExecutor(max_workers=1) as pool:
        right_future = pool.submit(_as_of_right_side, feature_df, keys, ts_tmp, created_tmp, row_tmp)
        left, order = _as_of_left_side(entity_df, keys, entity_ts, entity_ts_dtype, ts_tmp)
        right = right_future.result()

    winner = (
        left.join_asof(
            right,
            on=ts_tmp,
            by=keys,
            strategy="backward",
            tolerance=None if ttl is None else ttl // _ONE_MICROSECOND,
            allow_exact_matches=True,
            check_sortedness=False,
            coalesce=True,
        )
        .get_column(row_tmp)
    )
    if not feature_cols:
        return entity_df
    # One extra all-null row stands in for "no usable feature row", so the final
    # gather runs on non-null indices (much faster in Polars than null ones).
    no_match = feature_df.height
    index = _entity_order_index(winner.fill_null(no_match), order)
    values = pl.concat([feature_df.select(feature_cols), feature_df.select(feature_cols).clear(1)])
    gathered = values.rechunk()[index]
    return entity_df.hstack(gathered.get_columns())


def _as_of_left_side(
    entity_df: pl.DataFrame, keys: list[str], entity_ts: str, entity_ts_dtype: pl.Datetime, ts_tmp: str
) -> tuple[pl.DataFrame, np.ndarray | None]:
    """(keys, time) of the entity rows in an order the as-of join accepts, and that order.

    The join needs each key's rows in time order: a frame sorted by time, or by
    keys then time (a typical label table), is used as it is and the order is
    None. Frames read from Parquet arrive in many chunks, which makes random
    gathers several times slower, so the narrow copy is made contiguous first.
    """
    left = entity_df.select(*keys, _epoch_us(entity_ts, entity_ts_dtype).alias(ts_tmp)).rechunk()
    if left.get_column(ts_tmp).is_sorted() or _is_lexsorted(left, [*keys, ts_tmp], None):
        return left, None
    # Null times sort first and stay null, so they still match nothing.
    order = _argsort(left.get_column(ts_tmp))
    return left[pl.Series(order)], order


def _argsort(values: pl.Series) -> np.ndarray:
    """An (unstable) ascending order of an Int64 column, nulls first.

    NumPy's SIMD argsort is several times faster than Polars' ``arg_sort`` on
    random 64-bit integers. Stability is never needed: equal entity times may
    take any order, and on the feature side ties are settled explicitly.
    """
    if values.null_count():
        values = values.fill_null(np.iinfo(np.int64).min)
    return np.argsort(values.to_numpy()).astype(_index_dtype(), copy=False)


def _index_dtype() -> np.dtype:
    return np.dtype(np.uint64 if pl.get_index_type() == pl.UInt64 else np.uint32)


def _entity_order_index(winner: pl.Series, order: np.ndarray | None) -> pl.Series:
    """Map per-row results from time order back to entity order.

    A scatter through the sort permutation is one O(n) pass, unlike sorting back
    by a row index; NumPy's fancy assignment does it several times faster than
    ``Series.scatter``, so it is used on the zero-copy buffers.
    """
    if order is None:
        return winner
    values = winner.to_numpy()
    out = np.empty_like(values)
    out[order] = values
    return pl.Series(winner.name, out)


def _as_of_right_side(
    feature_df: pl.DataFrame,
    keys: list[str],
    ts_tmp: str,
    created_tmp: str | None,
    row_tmp: str,
) -> pl.DataFrame:
    """A (row number, keys, time) frame whose as-of "last candidate wins" is exactly our tie rule.

    Polars' backward as-of join keeps the LAST right row among equal times and
    only needs each key's rows in time order. So a frame already sorted by
    (keys, time, created), the usual layout of a table written per entity, or
    sorted by time without a created column, is used as is. Otherwise the rows
    get a fast unstable sort by time and every tie loser is dropped, which is far
    cheaper than a stable multi-column sort of the whole table. Feature rows with
    a null key or time can never match and are dropped so they cannot reach the
    join's key hashing.
    """
    right = feature_df.select(*keys, ts_tmp, *([created_tmp] if created_tmp else [])).rechunk()
    right = right.with_row_index(row_tmp)
    null_key_or_ts = [c for c in [*keys, ts_tmp] if right.get_column(c).null_count() > 0]
    if null_key_or_ts:
        right = right.filter(pl.all_horizontal(pl.col(c).is_not_null() for c in null_key_or_ts))
    if _is_lexsorted(right, [*keys, ts_tmp], created_tmp):
        return right.drop(created_tmp) if created_tmp else right
    if created_tmp is not None:
        right = right.drop(created_tmp)
    in_frame_order = True
    if not right.get_column(ts_tmp).is_sorted():  # sorted: e.g. appended partition by partition
        right = right[pl.Series(_argsort(right.get_column(ts_tmp)))]
        in_frame_order = False
    if created_tmp is None and in_frame_order:
        return right  # equal times are already in frame order: the last one wins
    created = feature_df.get_column(created_tmp) if created_tmp else None
    return _drop_tie_losers(right, created, keys, ts_tmp, row_tmp)


def _is_lexsorted(frame: pl.DataFrame, columns: list[str], nullable_last: str | None) -> bool:
    """Whether rows ascend by ``columns`` then ``nullable_last`` (nulls first), in one vectorised pass.

    Hand-rolled because ``DataFrame.is_sorted`` on several columns costs about as
    much as the sort it would save. The first column's own check rejects most
    unsorted frames before any work is done.
    """
    first = frame.get_column(columns[0])
    if first.dtype.is_nested() or not first.is_sorted():
        return False
    if frame.height < 2:
        return True

    def prev(column: str) -> pl.Expr:
        return pl.col(column).shift(1)

    if nullable_last is None:
        ascending = pl.col(columns[-1]) >= prev(columns[-1])
        rest = columns[:-1]
    else:
        ascending = prev(nullable_last).is_null() | (
            pl.col(nullable_last).is_not_null() & (pl.col(nullable_last) >= prev(nullable_last))
        )
        rest = columns
    for column in reversed(rest):
        ascending = (pl.col(column) > prev(column)) | ((pl.col(column) == prev(column)) & ascending)
    try:
        # A null comparison (null key or time) must not count as "ascending".
        return frame.select(ascending.slice(1).all(ignore_nulls=False)).item() is True
    except pl.exceptions.InvalidOperationError:  # a key dtype without ordering: just sort
        return False


def _drop_tie_losers(
    right: pl.DataFrame, created: pl.Series | None, keys: list[str], ts_tmp: str, row_tmp: str
) -> pl.DataFrame:
    """Keep, per (keys, event time), only the winner: latest created, then last in frame order.

    ``right`` is in event-time order, so equal times are adjacent and usually a
    small share: only that subset is ranked, and a filter (which keeps order)
    removes the losers. With one row left per (keys, time), the as-of join has
    no ties to resolve and the order inside a run of equal times is irrelevant,
    which is what lets the time sort be unstable. ``created`` is indexed by the
    original row numbers in ``row_tmp``.
    """
    tied = right.select(
        ((pl.col(ts_tmp) == pl.col(ts_tmp).shift(1)) | (pl.col(ts_tmp) == pl.col(ts_tmp).shift(-1)))
        .fill_null(False)
    ).to_series()
    positions = tied.arg_true()
    if positions.len() == 0:
        return right
    created_tmp = _fresh_name("__pit_created", set(right.columns))
    pos_tmp = _fresh_name("__pit_pos", {*right.columns, created_tmp})
    group = [*keys, ts_tmp]
    candidates = right.select(*group, row_tmp).gather(positions).with_columns(positions.alias(pos_tmp))
    rank = [row_tmp]
    if created is not None:
        candidates = candidates.with_columns(
            created.gather(candidates.get_column(row_tmp)).alias(created_tmp)
        )
        rank = [created_tmp, row_tmp]
    # Ranking by (group, created, original row) puts each group's winner last;
    # the row number makes the order total, so no stable sort is needed.
    candidates = candidates.sort([*group, *rank], nulls_last=False)
    is_loser = pl.all_horizontal((pl.col(c) == pl.col(c).shift(-1)).fill_null(False) for c in group)
    losers = candidates.filter(is_loser).get_column(pos_tmp)
    if losers.len() == 0:
        return right
    keep = pl.repeat(True, right.height, eager=True).scatter(losers, False)
    return right.filter(keep)


def _materialise(
    entities: pl.DataFrame | pl.LazyFrame, features: pl.LazyFrame
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Collect both sides, in one pass when both are lazy so Polars can run them in parallel."""
    if isinstance(entities, pl.LazyFrame):
        entity_df, feature_df = pl.collect_all([entities, features])
        return entity_df, feature_df
    return entities, features.collect()


def _schema(frame: pl.DataFrame | pl.LazyFrame) -> pl.Schema:
    if isinstance(frame, pl.LazyFrame):
        return frame.collect_schema()
    return frame.schema


def _require_column(schema: pl.Schema, column: str, frame_name: str) -> None:
    if column not in schema:
        raise PointInTimeJoinError(
            f"{frame_name} has no column {column!r} (columns: {schema.names()})"
        )


def _require_aware_datetime(schema: pl.Schema, column: str, frame_name: str) -> pl.Datetime:
    dtype = schema[column]
    if not isinstance(dtype, pl.Datetime) or dtype.time_zone is None:
        kind = "a naive (timezone-less) datetime" if isinstance(dtype, pl.Datetime) else "not a datetime"
        raise PointInTimeJoinError(
            f"{frame_name} column {column!r} has dtype {dtype}, which is {kind}; "
            "timestamps must be timezone-aware UTC, e.g. "
            f"pl.col({column!r}).dt.replace_time_zone('UTC')"
        )
    return dtype


def _epoch_us(column: str, dtype: pl.Datetime) -> pl.Expr:
    """Microseconds since the epoch: the physical value of any zone, rescaled to one unit.

    A tz-aware datetime stores UTC epoch ticks whatever its zone, so the zone
    needs no conversion; only the unit differs between frames.
    """
    factor = _TO_MICROSECONDS[dtype.time_unit]
    physical = pl.col(column).to_physical()
    if factor == 1:
        return physical
    if factor > 0:
        return physical * factor
    return physical // -factor


def _fresh_name(base: str, taken: set[str]) -> str:
    """A helper-column name no input uses, so internal columns never shadow user data."""
    name = base
    while name in taken:
        name = f"_{name}"
    taken.add(name)
    return name
