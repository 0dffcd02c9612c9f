"""Bounded-memory snapshots: one partition at a time, entities split into hash buckets, through snapshots.py.

`snapshot_features` holds every event of its range in memory. At tens of millions of events that
is the whole lake, so here a backfill is cut twice, without changing a single value:

1. by partition: a partition reads only the events its snapshots can see, known in
   [start + cadence - widest window, end), as a filtered lazy scan, so a Delta or parquet source
   skips the files of other days (by their known-at statistics) instead of reading them;
2. by entity: when that history holds more than `max_events_per_bucket` events, the entities are
   split by a hash of their keys into buckets computed one after the other. A snapshot row
   depends only on its own entity's events, so buckets are independent, and peak memory follows
   the events of one bucket, not the total.

Every value still comes from `compute.snapshots.snapshot_features`; this module only decides
which events it is handed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl

from feature_pipelines.compute.snapshots import SnapshotInputError, required_columns, snapshot_features, validate_events
from feature_pipelines.features.spec import FeatureView
from feature_pipelines.names import EVENT_TIMESTAMP
from feature_pipelines.timeutil import require_utc

DEFAULT_MAX_EVENTS_PER_BUCKET = 2_000_000
_BUCKET_HASH_SEED = 0x5EED  # fixed, so an entity's bucket is the same in every pass of a run


@dataclass(frozen=True)
class PartitionPlan:
    """How one partition is computed: its snapshot range, the events it reads, and the buckets."""

    start: datetime
    end: datetime
    history_start: datetime
    events: int
    buckets: int

    def describe(self) -> str:
        return (
            f"partition ({self.start.isoformat()}, {self.end.isoformat()}]: {self.events} events known in "
            f"[{self.history_start.isoformat()}, {self.end.isoformat()}) in {self.buckets} bucket(s)"
        )


def history_start(view: FeatureView, start: datetime) -> datetime:
    """The earliest known-at instant any snapshot of (start, ...] can see: its first snapshot's widest window."""
    return start + view.cadence.interval - view.max_window


def partition_events(events: pl.LazyFrame, view: FeatureView, *, start: datetime, end: datetime) -> pl.LazyFrame:
    """The events a partition's snapshots read, as a lazy scan the source can prune by time.

    Only the columns the view needs are projected, and the known-at range is a plain comparison
    on the source column so it reaches the scan as a predicate (file and row-group skipping).
    """
    known_at = pl.col(view.source.known_at_column)
    return events.select(sorted(required_columns(view))).filter(
        known_at >= history_start(view, start), known_at < end
    )


def bucket_of(view: FeatureView, buckets: int) -> pl.Expr:
    """The bucket (0 .. buckets-1) of each row's entity: a seeded hash of its join keys."""
    keys = list(view.entity_keys)
    hashed = pl.col(keys[0]).hash(_BUCKET_HASH_SEED) if len(keys) == 1 else pl.struct(keys).hash(_BUCKET_HASH_SEED)
    return hashed % buckets


def plan_partition(
    events: pl.LazyFrame,
    view: FeatureView,
    *,
    start: datetime,
    end: datetime,
    max_events_per_bucket: int = DEFAULT_MAX_EVENTS_PER_BUCKET,
    buckets: int | None = None,
) -> PartitionPlan:
    """Count the partition's history (one pass over its known-at column) and size the buckets.

    `buckets` forces a count (tests, benchmarks); otherwise it is the smallest count that keeps an
    evenly hashed bucket under `max_events_per_bucket`. A single entity with more events than that
    still lands in one bucket: the bound is per bucket, and an entity cannot be split.
    """
    start, end = require_utc(start, "partition start"), require_utc(end, "partition end")
    if end <= start:
        raise ValueError(f"feature view {view.name!r}: partition end {end.isoformat()} is not after start {start.isoformat()}")
    if buckets is not None and buckets < 1:
        raise ValueError(f"feature view {view.name!r}: buckets must be >= 1, got {buckets}")
    if max_events_per_bucket < 1:
        raise ValueError(f"feature view {view.name!r}: max_events_per_bucket must be >= 1, got {max_events_per_bucket}")
    count = partition_events(events, view, start=start, end=end).select(pl.len()).collect().item()
    chosen = buckets if buckets is not None else max(1, math.ceil(count / max_events_per_bucket))
    return PartitionPlan(start=start, end=end, history_start=history_start(view, start), events=count, buckets=chosen)


def bucket_events(events: pl.LazyFrame, view: FeatureView, plan: PartitionPlan, bucket: int) -> pl.LazyFrame:
    """The partition's history restricted to the entities of one bucket (lazy; filtered while scanning)."""
    if not 0 <= bucket < plan.buckets:
        raise ValueError(f"feature view {view.name!r}: bucket {bucket} is not in 0..{plan.buckets - 1}")
    scoped = partition_events(events, view, start=plan.start, end=plan.end)
    return scoped if plan.buckets == 1 else scoped.filter(bucket_of(view, plan.buckets) == bucket)


def iter_bucket_snapshots(
    events: pl.LazyFrame, view: FeatureView, plan: PartitionPlan, *, context: str = ""
) -> Iterator[pl.DataFrame]:
    """Each bucket's feature rows, computed by `snapshot_features` from that bucket's events only.

    A bucket's events are collected on their own (the hash filter is applied while scanning), so
    no more than one bucket of events is in memory at a time.
    """
    for bucket in range(plan.buckets):
        yield snapshot_bucket(events, view, plan, bucket, context=context)


def snapshot_bucket(
    events: pl.LazyFrame, view: FeatureView, plan: PartitionPlan, bucket: int, *, context: str = ""
) -> pl.DataFrame:
    """One bucket's feature rows: its entities' events collected alone, then `snapshot_features`.

    The unit a scale-out step computes (orchestration/scale_out.py): it depends on nothing but the
    source, the plan and the bucket number, so any process can compute any bucket.
    """
    where = context or f"feature view {view.name!r}"
    return snapshot_features(
        bucket_events(events, view, plan, bucket).collect(engine="streaming"),
        view,
        start=plan.start,
        end=plan.end,
        context=f"{where}, {plan.describe()}, bucket {bucket}",
    )


def merge_buckets(parts: list[pl.DataFrame], view: FeatureView) -> pl.DataFrame:
    """Buckets' rows as one partition in `snapshot_features`' order: by snapshot time, then keys.

    Buckets hold disjoint entities and a (time, entity) pair is one row, so this order is total and
    the result is the one-process result whatever order the buckets finished in.
    """
    return pl.concat(parts, how="vertical").sort(EVENT_TIMESTAMP, *view.entity_keys)


def snapshot_partition(
    events: pl.DataFrame | pl.LazyFrame,
    view: FeatureView,
    *,
    start: datetime,
    end: datetime,
    max_events_per_bucket: int = DEFAULT_MAX_EVENTS_PER_BUCKET,
    buckets: int | None = None,
    context: str = "",
) -> pl.DataFrame:
    """The rows `snapshot_features(events, view, start=start, end=end)` returns, in the same order,
    computed bucket by bucket from the partition's history only.

    The output of one partition is bounded by its entities times its snapshots, so buckets are
    concatenated and returned whole: the caller writes a partition in one atomic commit.
    """
    lazy = events.lazy()
    validate_events(lazy, view, context=context or f"feature view {view.name!r}")
    plan = plan_partition(lazy, view, start=start, end=end, max_events_per_bucket=max_events_per_bucket, buckets=buckets)
    return merge_buckets(list(iter_bucket_snapshots(lazy, view, plan, context=context)), view)


def partition_bounds(view: FeatureView, start: datetime, end: datetime) -> Iterator[tuple[datetime, datetime]]:
    """The view's partitions tiling [start, end); both must sit on partition boundaries."""
    step: timedelta = view.partitioning.interval
    start, end = require_utc(start, "backfill start"), require_utc(end, "backfill end")
    epoch = datetime(1970, 1, 1, tzinfo=start.tzinfo)
    for moment, label in ((start, "start"), (end, "end")):
        if (moment - epoch) % step:
            raise SnapshotInputError(
                f"feature view {view.name!r}: backfill {label} {moment.isoformat()} is not on a "
                f"{view.partitioning.value} partition boundary"
            )
    moment = start
    while moment < end:
        yield moment, moment + step
        moment += step
