"""Training data: entity rows joined point-in-time to Delta feature tables, at pinned versions;
or a feature service's vector, on-demand features and fitted transformations included.

A streaming view's values are not joined from its snapshots: they are computed at each row's own
instant from the view's raw events (`compute.snapshots.features_at`, the snapshots' own kernel),
which is what the stream serves at that instant, not the last snapshot before it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

import numpy as np
import polars as pl

from feature_pipelines.compute.events import required_columns
from feature_pipelines.compute.snapshots import features_at
from feature_pipelines.features.access import ConsumerPolicy, check_feature_access
from feature_pipelines.features.on_demand import (
    ON_DEMAND_FEATURES,
    OnDemandFeature,
    apply_on_demand,
    required_references,
)
from feature_pipelines.features.references import UnknownFeatureError, ViewRequest, parse_reference, resolve_references
from feature_pipelines.features.services import FeatureService, apply_service_transforms
from feature_pipelines.features.spec import FeatureView, StreamingRead
from feature_pipelines.names import CREATED_TIMESTAMP, EVENT_TIMESTAMP
from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.offline.fitted_statistics import load_fitted_statistics
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
    """A training frame and the exact Delta version of every feature table it read; read by
    feature service, also the service's name and version and the statistics version applied
    (None when none was: a service without fitted statistics, or an untransformed read)."""

    frame: pl.DataFrame
    versions: dict[str, int] = field(default_factory=dict)
    service: str | None = None
    service_version: str | None = None
    statistics_version: int | None = None


def partitions_of(view: FeatureView, timestamps: pl.Series) -> list[str]:
    """Daily/hourly partition keys holding these snapshot timestamps (partitions are (start, end])."""
    fmt = "%Y-%m-%d" if view.partitioning.interval >= timedelta(days=1) else "%Y-%m-%d-%H:%M"
    step = "1d" if view.partitioning.interval >= timedelta(days=1) else "1h"
    shifted = (timestamps - timedelta(microseconds=1)).dt.truncate(step)
    return shifted.dt.strftime(fmt).unique().sort().to_list()


_HOUR_US = 3_600_000_000
_ROW = "__historical_row"
_AT = "__historical_at"


def raw_hours_of(view: FeatureView, instants: pl.Series) -> list[str]:
    """The raw table's hourly partition keys that the windows [t - max_window, t) of these instants
    read (raw partitions are [start, end) of the known-at column), sorted."""
    t = np.unique(instants.drop_nulls().dt.cast_time_unit("us").to_physical().to_numpy().astype(np.int64))
    reach = view.max_window // timedelta(microseconds=1)
    hours: list[int] = []
    # t is sorted, so the windows' hour ranges are too: merge them in one sweep.
    for first, last in zip(((t - reach) // _HOUR_US).tolist(), ((t - 1) // _HOUR_US).tolist()):
        hours.extend(range(max(first, hours[-1] + 1 if hours else first), last + 1))
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return [(epoch + timedelta(hours=h)).strftime("%Y-%m-%d-%H:%M") for h in hours]


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
    features: Sequence[str] = (),
    *,
    feature_service: FeatureService | None = None,
    statistics_version: int | None = None,
    untransformed: bool = False,
    on_demand: Mapping[str, OnDemandFeature] = ON_DEMAND_FEATURES,
    timestamp_column: str = EVENT_TIMESTAMP,
    as_of: AsOf = None,
    ledger: PartitionGuard | None = None,
    allow_failed_checks: bool = False,
    include_event_timestamps: bool = False,
    consumer: ConsumerPolicy | None = None,
    streaming_views: StreamingRead = "at_instant",
) -> HistoricalFeatures:
    """Join each view's features to `entity_df` as of each row's timestamp, with the view's TTL.

    A streaming view (`view.streaming`) is, by default (`streaming_views="at_instant"`), computed at
    each row's own timestamp t from its raw table: the aggregates of [t - window, t) of the events known before t, bit for bit what
    the stream serves at t (`streaming.online.read_streaming_features`). Its version is the raw
    table's (recorded under the raw table's name, and pinned by `as_of` under it); its stamp
    column is t itself; the ledger refuses the raw hours those windows read whose latest
    blocking check failed. No TTL applies: the value is as fresh as the row's instant.
    The feature server serves streaming views from the stream's tiles at the request instant, so a
    training set read this way gets what a request at its prediction time is served.
    `"snapshots"` joins a streaming view's snapshots like any view's (what its snapshot publish
    serves, and what its parity check compares).

    `as_of` pins what is read: a mapping of table -> Delta version (from a training set's
    metadata) or an instant (each table as it was then). With a `ledger` (a `QualityLedger`), a
    view partition whose latest blocking quality check failed is refused unless
    `allow_failed_checks`. With `include_event_timestamps` each view adds `<view>__event_timestamp`,
    the stamp of the row its values came from (for the leakage audit).

    With `feature_service` instead of `features`, the frame is the entity columns, then exactly
    the service's vector (`service_schema`: its columns in declared order, on-demand features
    computed by `apply_on_demand` from their stored inputs, which are read and then dropped),
    then the stamp columns if asked for. Its transformations are applied with the fitted
    statistics the service pins (or `statistics_version`), loaded from the lake; a version that
    does not exist raises `StatisticsNotFoundError`. `untransformed=True` returns the raw vector
    instead (what a training-set table stores and what statistics are fitted on).
    """
    if feature_service is not None:
        if features:
            raise ValueError(f"pass features or feature_service={feature_service.name!r}, not both")
        return _service_features(
            store, entity_df, feature_service, statistics_version=statistics_version, untransformed=untransformed,
            on_demand=on_demand, include_event_timestamps=include_event_timestamps,
            read=lambda frame, references: get_historical_features(
                store, views, frame, references, timestamp_column=timestamp_column, as_of=as_of, ledger=ledger,
                allow_failed_checks=allow_failed_checks, include_event_timestamps=include_event_timestamps,
                consumer=consumer, streaming_views=streaming_views,
            ),
        )
    if streaming_views not in ("at_instant", "snapshots"):
        raise ValueError(f"streaming_views must be 'at_instant' or 'snapshots', got {streaming_views!r}")
    if statistics_version is not None or untransformed:
        raise ValueError("statistics_version and untransformed apply to a feature_service read only")
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
        if view.streaming is not None and streaming_views == "at_instant":
            raw = view.source.asset
            versions[raw] = _version_for(store, raw, as_of)
            frame = _features_at_rows(
                store, request, versions[raw], frame, timestamp_column=timestamp_column,
                ledger=None if allow_failed_checks else ledger, include_event_timestamps=include_event_timestamps,
            )
            continue
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


def _features_at_rows(
    store: DeltaStore,
    request: ViewRequest,
    version: int,
    frame: pl.DataFrame,
    *,
    timestamp_column: str,
    ledger: PartitionGuard | None,
    include_event_timestamps: bool,
) -> pl.DataFrame:
    """`frame` with a streaming view's features at each row's own instant, from its raw events.

    Exactly what the stream serves at that instant (the same kernel as the batch snapshots); the
    stamp is the instant itself, since the value is computed there and from events known before
    it. Rows without an instant or an entity key get nulls, as the point-in-time join gives them.
    The raw hours the windows read are refused when their latest blocking check failed, as a
    snapshot read refuses failed feature partitions.
    """
    view = request.view
    raw, known_at = view.source.asset, view.source.known_at_column
    keys = list(view.entity_keys)
    instant = pl.col(timestamp_column)
    wanted = list(request.features) + ([stamp_column(view.name)] if include_event_timestamps else [])
    clashing = [c for c in wanted if c in frame.columns]
    if clashing:
        raise PointInTimeJoinError(f"entity frame: column(s) {clashing} collide with view {view.name!r}'s features")
    if not isinstance(frame.schema[timestamp_column], pl.Datetime) or frame.schema[timestamp_column].time_zone is None:  # type: ignore[union-attr]
        raise PointInTimeJoinError(
            f"entity frame: timestamp column {timestamp_column!r} must be a timezone-aware Datetime "
            f"(view {view.name!r} is computed at each row's instant), found {frame.schema[timestamp_column]}"
        )
    rows = (
        frame.select(*keys, instant.dt.convert_time_zone("UTC").dt.cast_time_unit("us").alias(_AT))
        .with_row_index(_ROW)
        .filter(pl.all_horizontal(pl.col(c).is_not_null() for c in [*keys, _AT]))
    )
    if ledger is not None and rows.height:
        ledger.require_passed(raw, raw_hours_of(view, rows[_AT]), reader=f"training-set read of streaming view {view.name!r}")
    events = store.scan(raw, version=version).select(sorted(required_columns(view)))
    if rows.height:
        reach = rows[_AT].min() - view.max_window, rows[_AT].max()
        events = events.filter(pl.col(known_at) >= reach[0], pl.col(known_at) < reach[1])
    computed = features_at(events, view, rows, at=_AT, context=f"feature view {view.name!r} at each row's instant")
    values = computed.select(_ROW, *request.features, pl.col(_AT).alias(stamp_column(view.name)))
    joined = frame.with_row_index(_ROW).join(values, on=_ROW, how="left", maintain_order="left")
    return joined.select(*frame.columns, *wanted)


def _service_features(
    store: DeltaStore,
    entity_df: pl.DataFrame | pl.LazyFrame,
    service: FeatureService,
    *,
    statistics_version: int | None,
    untransformed: bool,
    on_demand: Mapping[str, OnDemandFeature],
    include_event_timestamps: bool,
    read: Callable[[pl.DataFrame, Sequence[str]], HistoricalFeatures],
) -> HistoricalFeatures:
    """A service's vector: its stored features and on-demand inputs joined, on-demand features
    computed, then exactly its columns, then (unless `untransformed`) its fitted transformations."""
    if untransformed and statistics_version is not None:
        raise ValueError(f"feature service {service.name!r}: an untransformed read applies no statistics_version")
    unknown = [name for name in service.on_demand_names if name not in on_demand]
    if unknown:
        raise UnknownFeatureError(f"feature service {service.name!r}: unknown on-demand feature(s) {unknown}; known: {sorted(on_demand)}")
    computed = [on_demand[name] for name in service.on_demand_names]
    references = required_references(service.stored_references, computed)
    frame = entity_df.collect() if isinstance(entity_df, pl.LazyFrame) else entity_df
    built = read(frame, references)
    stamps = [stamp_column(view) for view in dict.fromkeys(parse_reference(r).view for r in references)]
    vector = apply_on_demand(built.frame, computed).select(
        *frame.columns, *service.column_names, *(stamps if include_event_timestamps else [])
    )
    statistics = None
    if service.transforms and not untransformed:
        statistics = load_fitted_statistics(store, service, statistics_version) if service.needs_statistics else None
        vector = apply_service_transforms(vector, service, statistics)
    return HistoricalFeatures(
        frame=vector, versions=built.versions, service=service.name, service_version=service.version,
        statistics_version=statistics.version if statistics is not None else None,
    )
