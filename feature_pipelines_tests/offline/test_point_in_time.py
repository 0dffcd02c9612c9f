"""Tests for the point-in-time join: one hand-made table per rule, plus a property test.

The property test compares against a deliberately naive pure-Python reference so
that the fast path (sort + as-of join + tie dropping) is checked against the rules
as written, not against itself.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from feature_pipelines.offline import point_in_time_join
from feature_pipelines.offline.point_in_time import PointInTimeJoinError

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
US = timedelta(microseconds=1)
MS = timedelta(milliseconds=1)
UTC_US = pl.Datetime("us", "UTC")


def ts(*offsets: timedelta | None) -> pl.Series:
    return pl.Series([None if o is None else T0 + o for o in offsets], dtype=UTC_US)


def h(hours: float) -> timedelta:
    return timedelta(hours=hours)


def entities(users: list[Any], offsets: list[timedelta | None], **extra: Any) -> pl.DataFrame:
    return pl.DataFrame({"user_id": users, "event_timestamp": ts(*offsets), **extra})


def features(
    users: list[Any],
    offsets: list[timedelta | None],
    created: list[timedelta | None] | None = None,
    **values: Any,
) -> pl.DataFrame:
    frame = pl.DataFrame({"user_id": users, "event_timestamp": ts(*offsets)})
    if created is not None:
        frame = frame.with_columns(created_timestamp=ts(*created))
    return frame.with_columns(**{k: pl.Series(k, v) for k, v in values.items()})


def join(
    entity_df: pl.DataFrame | pl.LazyFrame, feature_df: pl.DataFrame | pl.LazyFrame, **kwargs: Any
) -> pl.DataFrame:
    kwargs.setdefault("entity_keys", ["user_id"])
    return point_in_time_join(entity_df, feature_df, **kwargs)


# ---------------------------------------------------------------- time window rules


def test_ttl_boundary_is_inclusive_and_one_microsecond_older_is_not() -> None:
    ent = entities([1, 2], [h(0), h(0)])
    feat = features([1, 2], [-h(24), -h(24) - US], v=[10, 20])
    out = join(ent, feat, ttl=timedelta(hours=24))
    assert out["v"].to_list() == [10, None]


def test_stale_latest_row_gives_null_instead_of_falling_back() -> None:
    # The latest usable row is too old: an even older row must not be used either.
    ent = entities([1], [h(0)])
    feat = features([1, 1], [-h(10), -h(5)], v=[1, 2])
    assert join(ent, feat, ttl=h(4))["v"].to_list() == [None]


def test_event_time_equal_to_entity_time_is_used_and_later_is_not() -> None:
    ent = entities([1, 2], [h(0), h(0)])
    feat = features([1, 2, 2], [h(0), -h(1), US], v=[10, 20, 21])
    assert join(ent, feat)["v"].to_list() == [10, 20]


def test_zero_ttl_only_uses_exact_matches() -> None:
    ent = entities([1, 2], [h(0), h(0)])
    feat = features([1, 2], [h(0), -US], v=[10, 20])
    assert join(ent, feat, ttl=timedelta(0))["v"].to_list() == [10, None]


def test_latest_usable_row_wins() -> None:
    ent = entities([1, 1, 1], [h(1), h(2.5), h(10)])
    feat = features([1, 1, 1], [h(2), h(0), h(3)], v=[2, 0, 3])
    assert join(ent, feat)["v"].to_list() == [0, 2, 3]


def test_entity_rows_before_any_feature_row_or_unknown_key_get_nulls() -> None:
    ent = entities([1, 99, 1], [-h(5), h(1), h(1)])
    feat = features([1], [h(0)], v=[7])
    out = join(ent, feat)
    assert out["v"].to_list() == [None, None, 7]
    assert out.height == 3


# ----------------------------------------------------------------------- tie rules


def test_event_time_tie_is_broken_by_latest_created_time() -> None:
    ent = entities([1, 2], [h(1), h(1)])
    # The later-created row comes FIRST in frame order, so frame order alone would pick wrong.
    feat = features(
        [1, 1, 2, 2],
        [h(0), h(0), h(0), h(0)],
        created=[h(0.5), h(0.1), h(0.1), h(0.5)],
        v=[1, 2, 3, 4],
    )
    out = join(ent, feat, created_column="created_timestamp")
    assert out["v"].to_list() == [1, 4]


def test_created_time_only_breaks_ties_it_never_beats_a_later_event() -> None:
    ent = entities([1], [h(5)])
    feat = features([1, 1], [h(1), h(2)], created=[h(4), h(2)], v=[1, 2])
    assert join(ent, feat, created_column="created_timestamp")["v"].to_list() == [2]


def test_full_tie_goes_to_last_row_in_frame_order() -> None:
    ent = entities([1, 2], [h(1), h(1)])
    feat = features(
        [1, 1, 1, 2, 2],
        [h(0)] * 5,
        created=[h(0.5), h(0.5), h(0.5), h(0.2), h(0.2)],
        v=[1, 2, 3, 4, 5],
    )
    assert join(ent, feat, created_column="created_timestamp")["v"].to_list() == [3, 5]
    # Without a created column, equal event times are a full tie as well.
    assert join(ent, feat.drop("created_timestamp"))["v"].to_list() == [3, 5]


def test_null_created_time_loses_to_any_created_time() -> None:
    ent = entities([1], [h(1)])
    feat = features([1, 1], [h(0), h(0)], created=[h(0.1), None], v=[1, 2])
    assert join(ent, feat, created_column="created_timestamp")["v"].to_list() == [1]


def test_presorted_and_shuffled_feature_frames_agree() -> None:
    # A frame sorted by (key, time, created) skips the sort; the result must not change.
    feat = features(
        [1, 1, 1, 1, 2, 2, 2],
        [h(0), h(0), h(0), h(1), h(0), h(2), h(2)],
        created=[h(0), h(1), h(1), h(1), h(0), h(3), h(4)],
        v=[1, 2, 3, 4, 5, 6, 7],
    )
    assert feat.is_sorted(["user_id", "event_timestamp", "created_timestamp"])
    ent = entities([1, 1, 2, 2], [h(0.5), h(1), h(1), h(3)])
    expected = [3, 4, 5, 7]
    assert join(ent, feat, created_column="created_timestamp")["v"].to_list() == expected
    # Row orders that keep the full tie (rows 1 and 2) in its relative order,
    # which is part of the contract.
    for order in ([6, 5, 4, 3, 1, 2, 0], [3, 1, 0, 6, 2, 5, 4], [4, 5, 6, 1, 2, 3, 0]):
        got = join(ent, feat[order], created_column="created_timestamp")["v"].to_list()
        assert got == expected


def test_frame_sorted_by_key_and_time_but_not_created_still_breaks_ties() -> None:
    # Looks like the per-entity layout, but the later-created row comes first.
    feat = features([1, 1, 2], [h(0), h(0), h(0)], created=[h(2), h(1), h(0)], v=[1, 2, 3])
    assert feat.is_sorted(["user_id", "event_timestamp"])
    out = join(entities([1, 2], [h(1), h(1)]), feat, created_column="created_timestamp")
    assert out["v"].to_list() == [1, 3]


# --------------------------------------------------------------- row and value rules


def test_winning_row_is_taken_whole_nulls_are_not_backfilled() -> None:
    ent = entities([1], [h(5)])
    feat = features([1, 1], [h(1), h(2)], a=[1, None], b=["old", "new"])
    out = join(ent, feat)
    assert out.select("a", "b").row(0) == (None, "new")


@pytest.mark.parametrize(
    "users_and_hours",
    [
        ([1, 1, 1, 2, 2], [0.5, 1.5, 3.0, 0.5, 3.0]),  # by key, then time
        ([1, 2, 1, 2, 1], [0.5, 0.5, 1.5, 3.0, 3.0]),  # by time
        # Not sorted, though a null time hides the step down from 3.0 to 0.5 from a
        # comparison of neighbours.
        ([1, 1, 1, 1, 2, 2], [3.0, None, 0.5, 1.5, 0.5, 3.0]),
    ],
)
def test_entity_frame_layouts(users_and_hours: tuple[list[int], list[float | None]]) -> None:
    users, hours = users_and_hours
    ent = entities(users, [None if x is None else h(x) for x in hours])
    feat = features([1, 1, 2, 2], [h(0), h(1), h(0), h(2)], v=[10, 11, 20, 22])
    expected = {(1, 0.5): 10, (1, 1.5): 11, (1, 3.0): 11, (2, 0.5): 20, (2, 3.0): 22}
    assert join(ent, feat)["v"].to_list() == [expected.get((u, x)) for u, x in zip(users, hours)]


def test_duplicate_entity_rows_are_all_kept_in_entity_order() -> None:
    ent = entities([2, 1, 2, 1, 2], [h(1), h(1), h(1), h(3), h(1)], row=[0, 1, 2, 3, 4])
    feat = features([1, 1, 2], [h(0), h(2), h(0)], v=[10, 12, 20])
    out = join(ent, feat)
    assert out["row"].to_list() == [0, 1, 2, 3, 4]
    assert out["v"].to_list() == [20, 10, 20, 12, 20]


def test_entity_columns_are_untouched_and_first_then_feature_dtypes() -> None:
    ent = pl.DataFrame(
        {
            "label": [True, None, False],
            "user_id": pl.Series([3, 1, 2], dtype=pl.UInt16),
            "prediction_time": ts(h(2), None, h(1)),
            "weight": [0.5, 1.5, None],
        }
    )
    feat = pl.DataFrame(
        {
            "user_id": pl.Series([1, 2, 3], dtype=pl.UInt16),
            "event_timestamp": ts(h(0), h(0), h(0)),
            "count": pl.Series([5, None, 7], dtype=pl.Int64),
            "small": pl.Series([1, 2, 3], dtype=pl.Int8),
            "name": ["a", "b", None],
            "flag": [True, False, None],
            "amount": [1.0, 2.0, 3.0],
        }
    )
    out = join(ent, feat, entity_timestamp_column="prediction_time")
    assert out.columns == [*ent.columns, "count", "small", "name", "flag", "amount"]
    assert_frame_equal(out.select(ent.columns), ent)
    assert out.schema["count"] == pl.Int64
    assert out.schema["small"] == pl.Int8
    # user 1's entity row has a null timestamp, so it matches nothing.
    assert out["count"].to_list() == [7, None, None]
    assert out["name"].to_list() == [None, None, "b"]


def test_int64_feature_stays_int64_even_when_every_value_is_null() -> None:
    ent = entities([1, 2], [h(1), h(1)])
    feat = features([3], [h(0)], v=pl.Series([1], dtype=pl.Int64))
    out = join(ent, feat)
    assert out.schema["v"] == pl.Int64
    assert out["v"].to_list() == [None, None]


def test_feature_columns_selects_and_orders_output() -> None:
    ent = entities([1], [h(1)])
    feat = features([1], [h(0)], a=[1], b=[2], c=[3])
    out = join(ent, feat, feature_columns=["c", "a"])
    assert out.columns == ["user_id", "event_timestamp", "c", "a"]


def test_null_keys_never_match() -> None:
    ent = entities([None, 1], [h(1), h(1)])
    feat = features([None, 1], [h(0), -h(1)], v=[0, 1])
    assert join(ent, feat)["v"].to_list() == [None, 1]


def test_feature_rows_with_null_event_time_are_ignored() -> None:
    ent = entities([1], [h(1)])
    feat = features([1, 1], [h(0), None], v=[1, 2])
    assert join(ent, feat)["v"].to_list() == [1]


def test_empty_inputs() -> None:
    ent = entities([1], [h(1)])
    feat = features([1], [h(0)], v=[1])
    empty_out = join(ent.clear(), feat)
    assert empty_out.height == 0
    assert empty_out.schema == pl.Schema({**ent.schema, "v": pl.Int64})
    assert join(ent, feat.clear())["v"].to_list() == [None]


# --------------------------------------------------------------- keys and time zones


def test_composite_string_keys() -> None:
    ent = pl.DataFrame(
        {
            "origin": ["JFK", "JFK", "LGA", "EWR"],
            "dest": ["LAX", "SFO", "LAX", "LAX"],
            "event_timestamp": ts(h(2), h(2), h(2), h(2)),
        }
    )
    feat = pl.DataFrame(
        {
            "origin": ["JFK", "JFK", "LGA", "JFK"],
            "dest": ["LAX", "SFO", "LAX", "LAX"],
            "event_timestamp": ts(h(0), h(1), h(1), h(1)),
            "delay": [10.0, 20.0, 30.0, 11.0],
        }
    )
    out = join(ent, feat, entity_keys=["origin", "dest"])
    assert out["delay"].to_list() == [11.0, 20.0, 30.0, None]


def test_mixed_time_zones_and_precisions_are_compared_as_utc_instants() -> None:
    # 12:00 UTC == 07:00 America/New_York (EST in March before the DST switch on the 10th).
    entity_ts = (
        pl.Series([T0, T0, T0 + h(5)], dtype=pl.Datetime("ns", "UTC"))
        .dt.convert_time_zone("America/New_York")
    )
    ent = pl.DataFrame({"user_id": [1, 2, 3], "ts": entity_ts})
    feat = pl.DataFrame(
        {
            "user_id": [1, 2, 3, 3],
            "event_timestamp": pl.Series(
                [T0, T0 + MS, T0 + h(5) - h(24), T0 + h(5) - h(24) - MS],
                dtype=pl.Datetime("ms", "UTC"),
            ),
            "created": pl.Series([T0] * 4, dtype=pl.Datetime("ns", "Asia/Tokyo")),
            "v": [1, 2, 3, 4],
        }
    )
    out = join(ent, feat, entity_timestamp_column="ts", created_column="created", ttl=h(24))
    assert out["v"].to_list() == [1, None, 3]
    # The entity timestamp column is returned exactly as given.
    assert out.schema["ts"] == pl.Datetime("ns", "America/New_York")
    assert out["ts"].equals(entity_ts)


def test_nanosecond_feature_times_are_compared_at_microsecond_precision() -> None:
    ent = entities([1, 2], [h(0), h(0)])
    feat = pl.DataFrame(
        {
            "user_id": [1, 2],
            "event_timestamp": pl.Series([T0, T0 + US], dtype=pl.Datetime("ns", "UTC")),
            "v": [1, 2],
        }
    )
    assert join(ent, feat)["v"].to_list() == [1, None]


def test_timezone_of_entity_frame_does_not_shift_the_cutoff() -> None:
    # A wall-clock reading would put 08:00 New York (13:00 UTC) before a 12:30 UTC feature.
    ent = pl.DataFrame(
        {
            "user_id": [1],
            "ts": pl.Series([T0 + h(1)], dtype=UTC_US).dt.convert_time_zone("America/New_York"),
        }
    )
    feat = features([1], [h(0.5)], v=[5])
    assert join(ent, feat, entity_timestamp_column="ts")["v"].to_list() == [5]


# ------------------------------------------------------------------------- errors


def test_error_class_is_a_value_error() -> None:
    assert issubclass(PointInTimeJoinError, ValueError)


@pytest.mark.parametrize(
    ("naive_side", "frame_name"), [("entity", "entity frame"), ("feature", "feature frame")]
)
def test_naive_timestamp_is_rejected_naming_frame_and_column(naive_side: str, frame_name: str) -> None:
    ent = entities([1], [h(1)])
    feat = features([1], [h(0)], v=[1])
    if naive_side == "entity":
        ent = ent.with_columns(pl.col("event_timestamp").dt.replace_time_zone(None))
    else:
        feat = feat.with_columns(pl.col("event_timestamp").dt.replace_time_zone(None))
    with pytest.raises(PointInTimeJoinError) as info:
        join(ent, feat)
    message = str(info.value)
    assert frame_name in message
    assert "'event_timestamp'" in message
    assert "timezone-aware UTC" in message


def test_naive_created_column_is_rejected() -> None:
    feat = features([1], [h(0)], created=[h(0)], v=[1]).with_columns(
        pl.col("created_timestamp").dt.replace_time_zone(None)
    )
    expected = "feature frame.*'created_timestamp'.*timezone-aware UTC"
    with pytest.raises(PointInTimeJoinError, match=expected):
        join(entities([1], [h(1)]), feat, created_column="created_timestamp")


def test_non_datetime_timestamp_is_rejected() -> None:
    ent = pl.DataFrame({"user_id": [1], "event_timestamp": ["2024-03-01T12:00:00Z"]})
    expected = "entity frame.*'event_timestamp'.*timezone-aware UTC"
    with pytest.raises(PointInTimeJoinError, match=expected):
        join(ent, features([1], [h(0)], v=[1]))


@pytest.mark.parametrize(
    ("drop_from", "column", "frame_name"),
    [
        ("entity", "user_id", "entity frame"),
        ("entity", "event_timestamp", "entity frame"),
        ("feature", "user_id", "feature frame"),
        ("feature", "event_timestamp", "feature frame"),
    ],
)
def test_missing_key_or_timestamp_column_is_named(drop_from: str, column: str, frame_name: str) -> None:
    ent = entities([1], [h(1)])
    feat = features([1], [h(0)], v=[1])
    if drop_from == "entity":
        ent = ent.drop(column)
    else:
        feat = feat.drop(column)
    with pytest.raises(PointInTimeJoinError, match=f"{frame_name} has no column '{column}'"):
        join(ent, feat)


def test_missing_created_and_feature_columns_are_named() -> None:
    ent = entities([1], [h(1)])
    feat = features([1], [h(0)], v=[1])
    with pytest.raises(PointInTimeJoinError, match="feature frame has no column 'created'"):
        join(ent, feat, created_column="created")
    with pytest.raises(PointInTimeJoinError, match="feature frame has no column 'nope'"):
        join(ent, feat, feature_columns=["nope"])


def test_key_dtype_mismatch_names_key_and_both_dtypes() -> None:
    ent = entities([1], [h(1)]).with_columns(pl.col("user_id").cast(pl.Int32))
    feat = features([1], [h(0)], v=[1])
    with pytest.raises(PointInTimeJoinError) as info:
        join(ent, feat)
    message = str(info.value)
    assert "'user_id'" in message and "Int32" in message and "Int64" in message


def test_feature_column_colliding_with_entity_column_is_rejected() -> None:
    ent = entities([1], [h(1)], v=[0])
    feat = features([1], [h(0)], v=[1])
    with pytest.raises(ValueError, match="'v'"):
        join(ent, feat)


def test_negative_ttl_is_rejected() -> None:
    with pytest.raises(PointInTimeJoinError, match="ttl"):
        join(entities([1], [h(1)]), features([1], [h(0)], v=[1]), ttl=-h(1))


# ---------------------------------------------------------------------- lazy frames


@pytest.mark.parametrize("lazy_entities", [False, True])
@pytest.mark.parametrize("lazy_features", [False, True])
def test_lazy_inputs_give_the_same_dataframe(lazy_entities: bool, lazy_features: bool) -> None:
    ent = entities([1, 2, 1], [h(1), h(1), h(3)], label=[1, 0, 1])
    feat = features([1, 1, 2], [h(0), h(2), h(0)], created=[h(0), h(2), h(0)], v=[1, 2, 3])
    expected = join(ent, feat, created_column="created_timestamp", ttl=h(2))
    out = join(
        ent.lazy() if lazy_entities else ent,
        feat.lazy() if lazy_features else feat,
        created_column="created_timestamp",
        ttl=h(2),
    )
    assert isinstance(out, pl.DataFrame)
    assert_frame_equal(out, expected)
    assert out["v"].to_list() == [1, 3, 2]


# --------------------------------------------------------------- property-based test


def reference_join(
    ent: pl.DataFrame,
    feat: pl.DataFrame,
    keys: list[str],
    feature_cols: list[str],
    created: str | None,
    ttl: timedelta | None,
) -> list[tuple[Any, ...]]:
    """The rules written out literally, one entity row at a time."""
    feature_rows = feat.rows(named=True)
    out = []
    for entity in ent.rows(named=True):
        t = entity["event_timestamp"]
        best: tuple[Any, ...] | None = None
        best_row: dict[str, Any] | None = None
        for position, row in enumerate(feature_rows):
            key = [row[k] for k in keys]
            if t is None or row["event_timestamp"] is None or None in key:
                continue
            if key != [entity[k] for k in keys] or row["event_timestamp"] > t:
                continue
            if ttl is not None and row["event_timestamp"] < t - ttl:
                continue
            created_rank: tuple[Any, ...] = ()
            if created is not None:
                created_rank = (0,) if row[created] is None else (1, row[created])
            rank = (row["event_timestamp"], created_rank, position)
            if best is None or rank > best:
                best, best_row = rank, row
        out.append(tuple(best_row[c] if best_row else None for c in feature_cols))
    return out


# Few distinct instants so ties are common; a microsecond either side of one minute
# after another instant puts rows on and just past the TTL boundaries drawn below.
_TIMES = [T0 + timedelta(minutes=m) for m in (0, 1, 2, 4)]
_TIMES += [T0 + timedelta(minutes=1) + US, T0 + timedelta(minutes=3) - US]
_TTLS = [timedelta(0), timedelta(minutes=1), timedelta(minutes=3)]


@st.composite
def join_inputs(draw: st.DrawFn) -> dict[str, Any]:
    keys = ["k0", "k1"][: draw(st.integers(1, 2))]
    string_keys = draw(st.booleans())
    key_dtype = pl.String if string_keys else pl.Int32
    key_value = st.sampled_from(["a", "b", "c"] if string_keys else [0, 1, 2])
    if draw(st.booleans()):
        key_value = st.one_of(st.none(), key_value)

    def column(n: int, elements: st.SearchStrategy[Any], dtype: pl.DataType) -> pl.Series:
        return pl.Series(draw(st.lists(elements, min_size=n, max_size=n)), dtype=dtype)

    times = st.one_of(st.none(), st.sampled_from(_TIMES))
    created_times = st.one_of(st.none(), st.sampled_from(_TIMES[:3]))
    n_ent = draw(st.integers(0, 12))
    ent = pl.DataFrame(
        {
            **{k: column(n_ent, key_value, key_dtype) for k in keys},
            "event_timestamp": column(n_ent, times, UTC_US),
            "row": list(range(n_ent)),
        }
    )
    # Entity frames already in time or (key, time) order are joined without a sort.
    entity_layout = draw(st.sampled_from(["as drawn", "by time", "by key and time"]))
    if entity_layout != "as drawn":
        by = ["event_timestamp"] if entity_layout == "by time" else [*keys, "event_timestamp"]
        ent = ent.sort(by, maintain_order=True)
    n_feat = draw(st.integers(0, 16))
    # Weighted towards a created column, whose tie rules are the subtlest.
    created = draw(st.sampled_from([None, "created", "created"]))
    feat = pl.DataFrame(
        {
            **{k: column(n_feat, key_value, key_dtype) for k in keys},
            "event_timestamp": column(n_feat, times, UTC_US),
            "v": column(n_feat, st.one_of(st.none(), st.integers(0, 99)), pl.Int64),
            "w": column(n_feat, st.one_of(st.none(), st.floats(0, 1)), pl.Float64),
            # Fewer created instants than event instants, so full ties happen too.
            **({created: column(n_feat, created_times, UTC_US)} if created else {}),
        }
    )
    # The per-entity layout that skips the sort must agree with the rules too, and
    # a frame sorted by key and time but not by created time must not pass for it.
    layout = draw(st.sampled_from(["as drawn", "by time", "by key and time", "by key, time and created"]))
    if layout != "as drawn":
        order = ["event_timestamp"] if layout == "by time" else [*keys, "event_timestamp"]
        if created and layout == "by key, time and created":
            order.append(created)
        feat = feat.sort(order, maintain_order=True)
    ttl = draw(st.one_of(st.none(), st.sampled_from(_TTLS)))
    return {"ent": ent, "feat": feat, "keys": keys, "created": created, "ttl": ttl}


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(join_inputs())
def test_matches_brute_force_reference(case: dict[str, Any]) -> None:
    ent, feat, keys = case["ent"], case["feat"], case["keys"]
    out = point_in_time_join(
        ent, feat, entity_keys=keys, created_column=case["created"], ttl=case["ttl"]
    )
    assert_frame_equal(out.select(ent.columns), ent)
    assert out.columns == [*ent.columns, "v", "w"]
    assert out.schema["v"] == pl.Int64
    expected = reference_join(ent, feat, keys, ["v", "w"], case["created"], case["ttl"])
    assert out.select("v", "w").rows() == expected


@pytest.mark.parametrize("with_created", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_larger_frames_with_many_ties_match_reference(seed: int, with_created: bool) -> None:
    # Big enough that the sorts take their non-trivial (unstable) code paths,
    # with few distinct instants so most rows are tied with others.
    rng = random.Random(seed)
    n_feat, n_ent = 3000, 300
    times = [T0 + timedelta(minutes=m) for m in range(12)]
    feat = pl.DataFrame(
        {
            "user_id": [rng.randrange(20) for _ in range(n_feat)],
            "event_timestamp": pl.Series([rng.choice(times) for _ in range(n_feat)], dtype=UTC_US),
            "created": pl.Series([rng.choice(times[:3] + [None]) for _ in range(n_feat)], dtype=UTC_US),
            "v": list(range(n_feat)),
        }
    )
    if not with_created:
        feat = feat.drop("created")
    ent = pl.DataFrame(
        {
            "user_id": [rng.randrange(22) for _ in range(n_ent)],
            "event_timestamp": pl.Series([rng.choice([*times, None]) for _ in range(n_ent)], dtype=UTC_US),
        }
    )
    created = "created" if with_created else None
    ttl = timedelta(minutes=4)
    out = join(ent, feat, created_column=created, ttl=ttl)
    expected = reference_join(ent, feat, ["user_id"], ["v"], created, ttl)
    assert out.select("v").rows() == expected
