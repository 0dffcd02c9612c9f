"""Training data: entity rows joined point-in-time to Delta feature tables, at pinned versions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

import polars as pl

from feature_pipelines.features.access import ConsumerPolicy, check_feature_access
from feature_pipelines.features.references import ViewRequest, resolve_references
from feature_pipelines.features.spec import FeatureView
from feature_pipelines.names import CREATED_TIMESTAMP, EVENT_TIMESTAMP
from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.offline.point_in_time import PointInTimeJoinError, point_in_time_join

AsOf = Mapping[str, int] | datetime | None


class PartitionGuard(Protocol):
    """What a read asks before it hands partitions on: the quality ledger is one (quality/ depends on
    offline/, never the reverse, so the store only names the question it asks)."""

    def require_passed(self, table: str, partitions: Sequence[str], *, reader: str) -> None:
        """Raise if any of `partitions` of `table` may not be read by `reader`."""


def stamp_column(view_name: str) -> str:
    """The training-frame column holding the event_timestamp of the row a view's values came from."""
    return f"{view_name}__event_timestamp"


@dataclass(frozen=True)
class HistoricalFeatures:
    """A training frame and the exact Delta version of every feature table it read."""

    frame: pl.DataFrame
    versions: dict[str, int] = field(default_factory=dict)


def partitions_of(view: FeatureView, timestamps: pl.Series) -> list[str]:
    """Daily/hourly partition keys holding these snapshot timestamps (partitions are (start, end])."""
    fmt = "%Y-%m-%d" if view.partitioning.interval >= timedelta(days=1) else "%Y-%m-%d-%H:%M"
    step = "1d" if view.partitioning.interval >= timedelta(days=1) else "1h"
    shifted = (timestamps - timedelta(microseconds=1)).dt.truncate(step)
    return shifted.dt.strftime(fmt).unique().sort().to_list()


def _version_for(store: DeltaStore, table: str, as_of: AsOf) -> int:
    if as_of is None:
        return store.version(table)
    if isinstance(as_of, datetime):
        return store.scan_version_at(table, as_of)
    if table not in as_of:
        raise ValueError(f"as_of pins versions for {sorted(as_of)} but not for feature table {table!r}")
    return int(as_of[table])


def _read_view(store: DeltaStore, request: ViewRequest, version: int, entity_times: pl.Series) -> pl.DataFrame:
    """The rows of one view that can win for these entity times: a TTL-bounded slice, one version."""
    view = request.view
    earliest, latest = entity_times.min(), entity_times.max()
    columns = [*view.entity_keys, EVENT_TIMESTAMP, CREATED_TIMESTAMP, *request.features]
    lazy = store.scan(view.name, version=version).select(columns)
    if earliest is not None and latest is not None:
        lazy = lazy.filter(pl.col(EVENT_TIMESTAMP) >= earliest - view.ttl, pl.col(EVENT_TIMESTAMP) <= latest)
    return lazy.collect()


def get_historical_features(
    store: DeltaStore,
    views: Mapping[str, FeatureView],
    entity_df: pl.DataFrame | pl.LazyFrame,
    features: Sequence[str],
    *,
    timestamp_column: str = EVENT_TIMESTAMP,
    as_of: AsOf = None,
    ledger: PartitionGuard | None = None,
    allow_failed_checks: bool = False,
    include_event_timestamps: bool = False,
    consumer: ConsumerPolicy | None = None,
) -> HistoricalFeatures:
    """Join each view's features to `entity_df` as of each row's timestamp, with the view's TTL.

    `as_of` pins what is read: a mapping of table -> Delta version (from a training set's
    metadata) or an instant (each table as it was then). With a `ledger` (a `QualityLedger`), a
    view partition whose latest blocking quality check failed is refused unless
    `allow_failed_checks`. With `include_event_timestamps` each view adds `<view>__event_timestamp`,
    the stamp of the row its values came from (for the leakage audit).
    """
    requests = resolve_references(features, views)
    check_feature_access(features, views, consumer)  # a consumer's PII / view policy, as served
    frame = entity_df.collect() if isinstance(entity_df, pl.LazyFrame) else entity_df
    if timestamp_column not in frame.columns:
        raise PointInTimeJoinError(f"entity frame: timestamp column {timestamp_column!r} is missing")
    versions: dict[str, int] = {}
    entity_times = frame.get_column(timestamp_column)
    if isinstance(entity_times.dtype, pl.Datetime) and entity_times.dtype.time_zone is not None:
        entity_times = entity_times.dt.convert_time_zone("UTC").dt.cast_time_unit("us")
    for request in requests:
        view = request.view
        missing = [key for key in view.entity_keys if key not in frame.columns]
        if missing:
            raise PointInTimeJoinError(
                f"entity frame: view {view.name!r} joins on {list(view.entity_keys)} but {missing} is missing"
            )
        version = _version_for(store, view.name, as_of)
        versions[view.name] = version
        rows = _read_view(store, request, version, entity_times)
        feature_columns = list(request.features)
        if include_event_timestamps:
            rows = rows.with_columns(pl.col(EVENT_TIMESTAMP).alias(stamp_column(view.name)))
            feature_columns.append(stamp_column(view.name))
        if ledger is not None and not allow_failed_checks and rows.height:
            ledger.require_passed(view.name, partitions_of(view, rows[EVENT_TIMESTAMP]), reader="training-set read")
        frame = point_in_time_join(
            frame,
            rows,
            entity_keys=view.entity_keys,
            timestamp_column=EVENT_TIMESTAMP,
            entity_timestamp_column=timestamp_column,
            created_column=CREATED_TIMESTAMP,
            ttl=view.ttl,
            feature_columns=feature_columns,
        )
    return HistoricalFeatures(frame=frame, versions=versions)
