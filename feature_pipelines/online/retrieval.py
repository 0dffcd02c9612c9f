"""Online retrieval with exactly the shape of a training frame.

`get_online_features` returns what `get_historical_features(...).frame` returns for the same
references and entity frame, read at `now` from Redis instead of from Delta: the entity frame's
columns untouched, then for each view in first-appearance order of the references its requested
features in request order, with their declared dtypes, one row per entity row in its order.
A model therefore gets the same columns in the same order with the same dtypes whether it is
trained or served, and a parity test can compare the two frames bit for bit.

Defaults, the same as the point-in-time join's at `now`:

* an unknown entity, or a row with a null key, gets nulls;
* a value past its view's TTL at `now` (`event_timestamp + ttl < now`) is null, never the stale
  value, even while Redis still holds the key (its expiry is lazy);
* duplicate entity rows are all kept.

On-demand features are appended after that, computed by `apply_on_demand` over the same
columns the training path would give it. Their stored inputs are read even when not requested
and then dropped, so the output does not depend on whether the caller also asked for them.

With `include_metadata`, per read view `{view}__event_timestamp` and `{view}__is_expired` come
last (after the on-demand features), so dropping them leaves exactly the frame above.

A streaming view (`view.streaming`) is read, by default, from the stream's tiles at `now`: the
aggregates of [now - window, now) of the events the consumer has applied, bit for bit what
`get_historical_features(..., streaming_views="at_instant")` computes at `now` from the raw
events (`streaming.online.read_streaming_features`). Every entity gets a value (COUNT 0 and null
aggregates when it had no events), its stamp is `now` and it never expires.
`streaming_views="snapshots"` reads its published snapshots like any view's (what a snapshot
publish's parity check compares).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

import polars as pl
import redis

from feature_pipelines.features.on_demand import OnDemandFeature, apply_on_demand, required_references
from feature_pipelines.features.references import ViewRequest, resolve_references
from feature_pipelines.features.spec import FeatureView, StreamingRead
from feature_pipelines.online.read import OnlineReadError, read_online
from feature_pipelines.online.table import OnlineTable, metadata_columns
from feature_pipelines.streaming.keys import stream_keys
from feature_pipelines.streaming.online import read_streaming_features
from feature_pipelines.timeutil import require_utc

__all__ = ["OnlineReadError", "get_online_features", "metadata_columns"]


def _check_entity_columns(request: ViewRequest, entity_columns: set[str]) -> None:
    """Refuse entity rows that lack the view's keys or already hold one of its requested features."""
    view = request.view
    clash = [name for name in request.features if name in entity_columns]
    if clash:
        raise OnlineReadError(
            f"feature column(s) {clash} of view {view.name!r} collide with columns of the entity rows; "
            "rename or drop them"
        )
    keys = list(view.entity_keys)
    missing = [key for key in keys if key not in entity_columns]
    if missing:
        raise OnlineReadError(f"entity rows: view {view.name!r} joins on {keys} but {missing} is missing")


def _read_streaming(
    client: redis.Redis, view: FeatureView, prefix: str, features: list[str], keyed_rows: pl.DataFrame, now: datetime,
) -> pl.DataFrame:
    """A streaming view's features at `now` from the stream's tiles, with the metadata columns of
    a snapshot read: the stamp is `now` (the window ends there) and nothing is expired."""
    ts_name, expired_name = metadata_columns(view.name)
    at = keyed_rows.with_columns(pl.lit(now).dt.cast_time_unit("us").alias(ts_name))
    read = read_streaming_features(client, view, at, at=ts_name, keys=stream_keys(prefix))
    return read.select(*features, ts_name, pl.lit(False).alias(expired_name))


def _read_view(
    client: redis.Redis,
    table: OnlineTable,
    request: ViewRequest,
    entity_rows: pl.DataFrame,
    now: datetime,
    include_metadata: bool,
    streaming_views: StreamingRead,
) -> list[pl.Series]:
    """The view's requested feature columns (then its metadata columns), one value per row."""
    view, features = request.view, list(request.features)
    keys = list(table.entity_keys)
    names = features + (list(table.metadata_columns) if include_metadata else [])

    def read(keyed_rows: pl.DataFrame) -> pl.DataFrame:
        if view.streaming is not None and streaming_views == "at_instant":
            return _read_streaming(client, view, table.prefix, features, keyed_rows.select(keys), now)
        return read_online(client, table, keyed_rows, features, now, include_metadata=include_metadata)

    if sum(entity_rows.get_column(key).null_count() for key in keys) == 0:
        # read_online reads only the key columns; passing the frame as is spares a select.
        return [read(entity_rows).get_column(name) for name in names]
    # A null key can never match (as in the point-in-time join): read the other rows only.
    indexed = entity_rows.select(keys).with_row_index("__row")
    usable = indexed.filter(pl.all_horizontal(pl.col(keys).is_not_null()))
    read_rows = read(usable.select(keys))
    rows = usable.get_column("__row")
    out = []
    for name in names:
        column = read_rows.get_column(name)
        full = pl.Series(name, [None] * entity_rows.height, dtype=column.dtype)
        out.append(full.scatter(rows, column) if rows.len() else full)
    return out


def get_online_features(
    client: redis.Redis,
    *,
    prefix: str,
    views: Mapping[str, FeatureView],
    entity_rows: pl.DataFrame,
    features: Sequence[str],
    now: datetime,
    include_metadata: bool = False,
    on_demand: Sequence[OnDemandFeature] = (),
    streaming_views: StreamingRead = "at_instant",
) -> pl.DataFrame:
    """The training frame's columns for `entity_rows`, read from Redis as of `now`.

    See the module docstring for the exact layout and null rules. One pipelined round trip per
    view read. `features` may be empty only when on-demand features are requested.

    Raises:
        UnknownFeatureError: a reference to a view or feature the catalog does not declare.
        OnlineReadError: a missing key column, a feature column that collides with an entity
            column, or a naive `now`.
        OnDemandFeatureError: a missing request column, or an on-demand name clash.
    """
    try:
        now = require_utc(now, "now")
    except ValueError as error:
        raise OnlineReadError(str(error)) from error
    on_demand = list(on_demand)
    references = required_references(features, on_demand)
    if not features and not on_demand:
        resolve_references(features, views)  # raises the catalog's "no features requested"
    requested = resolve_references(features, views) if features else []
    to_read = requested if len(references) == len(features) else resolve_references(references, views)
    entity_columns = set(entity_rows.columns)  # `DataFrame.columns` builds a new list per call
    columns: dict[str, pl.Series] = {}
    metadata: list[pl.Series] = []
    for request in to_read:
        _check_entity_columns(request, entity_columns)
        table = OnlineTable.for_view(request.view, prefix)
        read = _read_view(client, table, request, entity_rows, now, include_metadata, streaming_views)
        for series in read[: len(request.features)]:
            columns[series.name] = series
        metadata.extend(read[len(request.features):])
    output = [columns[name] for request in requested for name in request.features]
    if not on_demand:
        return entity_rows.hstack(output + metadata)
    extra = [series for name, series in columns.items() if name not in {s.name for s in output}]
    with_inputs = apply_on_demand(entity_rows.hstack(output + extra), on_demand)
    computed = [with_inputs.get_column(feature.name) for feature in on_demand]
    return entity_rows.hstack(output + computed + metadata)
