"""The online read of a streaming view: at instant t, the aggregate of [t - window, t) of the events known by t.

A window is cut at tile boundaries into whole tiles, whose partial aggregates Redis holds, and at
most two edge tiles, the one where it starts and the one where it ends, whose events are re-folded
with only those inside [t - window, t). At a snapshot instant (a multiple of the cadence, and so
of the tile) both edges fall on tile boundaries and the read merges whole tiles only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import polars as pl
import redis

from feature_pipelines.features.spec import FeatureView
from feature_pipelines.names import EVENT_TIMESTAMP
from feature_pipelines.streaming.events import stream_table
from feature_pipelines.streaming.keys import DEFAULT_KEYS, StreamKeys, entity_text
from feature_pipelines.streaming.tiles import TileAggregate, TilePlan, finish, from_hash, natural_dtype


class StreamingReadError(ValueError):
    """A read the stream cannot answer: a view that does not stream, rows without keys or instants."""


def _window_keys(plan: TilePlan, t: int, window_us: int) -> tuple[list[int], list[int]]:
    """(whole tiles, edge tiles) of [t - window, t), as tile starts in microseconds."""
    tile = plan.tile_us
    lo = t - window_us
    first_whole = -(-lo // tile) * tile
    last_whole = t // tile * tile  # exclusive
    whole = list(range(first_whole, last_whole, tile))
    edges = sorted({plan.tile_of(lo)} if lo % tile else set()) + ([last_whole] if t % tile else [])
    return whole, edges


def read_streaming_features(
    client: redis.Redis,
    view: FeatureView,
    rows: pl.DataFrame,
    *,
    at: str = EVENT_TIMESTAMP,
    keys: StreamKeys = DEFAULT_KEYS,
    batch: int = 5000,
) -> pl.DataFrame:
    """`rows` (entity keys and an instant column `at`) with the view's features from the stream's tiles.

    The values are those `compute.snapshots.features_at` computes from the same events, bit for bit.
    """
    if view.streaming is None:
        raise StreamingReadError(f"feature view {view.name!r} does not stream")
    needed = [*view.entity_keys, at]
    missing = [c for c in needed if c not in rows.columns]
    if missing:
        raise StreamingReadError(f"feature view {view.name!r}: the rows need columns {missing}")
    if any(rows[c].null_count() for c in needed):
        raise StreamingReadError(f"feature view {view.name!r}: rows with a null in {needed} name no entity or no instant")
    schema = stream_table(view.source.asset).schema
    plan = TilePlan.of(view, schema)
    instants = rows[at].dt.epoch("us").to_list()
    entities = [entity_text(values) for values in rows.select(view.entity_keys).iter_rows()]
    windows = sorted({int(f.window_timedelta.total_seconds()) * 1_000_000 for f in view.features})
    values: dict[str, list[Any]] = {f.name: [] for f in view.features}
    for start in range(0, rows.height, batch):
        part = range(start, min(start + batch, rows.height))
        wanted: set[tuple[str, int, bool]] = set()
        for r in part:
            for w in windows:
                whole, edges = _window_keys(plan, instants[r], w)
                wanted.update((entities[r], k, False) for k in whole)
                wanted.update((entities[r], k, True) for k in edges)
        fetched = _fetch(client, view, keys, sorted(wanted))
        for r in part:
            by_window = {w: _window(plan, fetched, entities[r], instants[r], w) for w in windows}
            for feature in view.features:
                values[feature.name].append(finish(feature, by_window[int(feature.window_timedelta.total_seconds()) * 1_000_000]))
    columns = [
        pl.Series(f.name, values[f.name], dtype=natural_dtype(f, schema)).cast(f.polars_dtype) for f in view.features
    ]
    return rows.with_columns(columns)


def _fetch(
    client: redis.Redis, view: FeatureView, keys: StreamKeys, wanted: list[tuple[str, int, bool]]
) -> Mapping[tuple[str, int, bool], Mapping[bytes, bytes]]:
    pipe = client.pipeline(transaction=False)
    for entity, tile, edge in wanted:
        pipe.hgetall(keys.tile_events(view.name, entity, tile) if edge else keys.tile(view.name, entity, tile))
    return dict(zip(wanted, pipe.execute()))


def _window(plan: TilePlan, fetched: Mapping[tuple[str, int, bool], Mapping[bytes, bytes]], entity: str, t: int, window_us: int) -> TileAggregate:
    whole, edges = _window_keys(plan, t, window_us)
    total = TileAggregate()
    for tile in whole:
        total.merge(from_hash(fetched[(entity, tile, False)]))
    lo = t - window_us
    for tile in edges:
        for record in fetched[(entity, tile, True)].values():
            order, values = json.loads(record)
            if lo <= order[0] < t:
                total.add(plan, values, tuple(order))  # type: ignore[arg-type]
    return total
