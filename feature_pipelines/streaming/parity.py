"""Stream parity: what the stream serves at instants vs what `features_at` computes from the same
raw events offline, compared bit for bit (floats by their IEEE-754 bits, nulls in place)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import polars as pl
import redis

from feature_pipelines.compute.snapshots import features_at
from feature_pipelines.features.spec import FeatureView
from feature_pipelines.names import EVENT_TIMESTAMP
from feature_pipelines.streaming.keys import StreamKeys
from feature_pipelines.streaming.online import read_streaming_features


@dataclass(frozen=True)
class StreamParityReport:
    """Instants compared for one view, mismatching values per feature, and a few examples."""

    view: str
    rows: int
    mismatches: dict[str, int] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.rows > 0 and not any(self.mismatches.values())

    def message(self) -> str:
        if self.rows == 0:
            return (f"view {self.view!r}: no instant to compare (no span of the day that the stream was fed "
                    "and the lake holds, or no events in it)")
        if self.passed:
            return f"view {self.view!r}: {self.rows} instants, every value bit-identical online and offline"
        bad = ", ".join(f"{name}: {count}" for name, count in self.mismatches.items() if count)
        return f"view {self.view!r}: {self.rows} instants, mismatching values by feature: {bad}"


def random_instants(view: FeatureView, events: pl.DataFrame, *, start: datetime, end: datetime, n: int, seed: int) -> pl.DataFrame:
    """n (entity, instant) rows: entities drawn from the events' entities, instants uniform to the
    microsecond in [start, end), a tenth of them on the hour (where tiles are whole)."""
    keys = list(view.entity_keys)
    entities = events.select(keys).drop_nulls().unique(maintain_order=True)
    if entities.height == 0:
        return pl.DataFrame(schema={**{k: events.schema[k] for k in keys}, EVENT_TIMESTAMP: pl.Datetime("us", "UTC")})
    rng = np.random.default_rng(seed)
    low = int(pl.Series([start]).dt.epoch("us")[0])
    span = int(pl.Series([end]).dt.epoch("us")[0]) - low
    offsets = rng.integers(0, span, n)
    offsets = np.where(rng.random(n) < 0.1, offsets // 3_600_000_000 * 3_600_000_000, offsets)
    return entities[rng.integers(0, entities.height, n).tolist()].with_columns(
        pl.Series(EVENT_TIMESTAMP, low + offsets).cast(pl.Datetime("us", "UTC"))
    )


def _bits(values: list[Any]) -> list[Any]:
    return [struct.pack("<d", v) if isinstance(v, float) else v for v in values]


def streaming_parity(
    client: redis.Redis, view: FeatureView, events: pl.DataFrame, rows: pl.DataFrame, *, keys: StreamKeys
) -> StreamParityReport:
    """Compare the stream's values at `rows` (entity keys, `event_timestamp`) with `features_at`
    over `events` (the raw events the stream was fed, known before the latest instant)."""
    offline = features_at(events, view, rows)
    online = read_streaming_features(client, view, rows, keys=keys)
    mismatches: dict[str, int] = {}
    examples: list[dict[str, Any]] = []
    for feature in view.feature_names:
        left, right = _bits(online[feature].to_list()), _bits(offline[feature].to_list())
        differing = [i for i, (a, b) in enumerate(zip(left, right, strict=True)) if a != b]
        mismatches[feature] = len(differing) + (online.schema[feature] != offline.schema[feature]) * rows.height
        examples += [{**rows.row(i, named=True), "feature": feature, "online": online[feature][i],
                      "offline": offline[feature][i]} for i in differing[:2]]
    return StreamParityReport(view.name, rows.height, mismatches, examples[:5])
