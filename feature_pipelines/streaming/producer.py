"""The producer: raw events onto their table's Redis stream (what `POST /push` and replays call)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl
import redis

from feature_pipelines.streaming.events import EVENT_ID, PAYLOAD, encode_rows, stream_table
from feature_pipelines.streaming.keys import DEFAULT_KEYS, StreamKeys


def push_events(
    client: redis.Redis,
    table: str,
    events: pl.DataFrame | Sequence[Mapping[str, Any]],
    *,
    keys: StreamKeys = DEFAULT_KEYS,
    max_length: int | None = None,
) -> list[str]:
    """Append events (rows of the raw table `table`) to its stream, in order; returns their entry ids.

    A frame's datetimes become integer microseconds; mappings must already be in that form (the
    JSON a client posts). Nothing is validated here: the consumer judges every event with the raw
    rules and dead-letters what fails, so a producer never drops an event silently. `max_length`
    caps the stream (approximate trimming) once consumers have read what it trims; None keeps all.
    """
    spec = stream_table(table)
    rows = encode_rows(spec, events) if isinstance(events, pl.DataFrame) else [dict(e) for e in events]
    stream = keys.events(table)
    pipe = client.pipeline(transaction=False)
    for row in rows:
        fields = {EVENT_ID: spec.event_id(row), PAYLOAD: json.dumps(row, separators=(",", ":"))}
        pipe.xadd(stream, fields, maxlen=max_length, approximate=True)  # type: ignore[arg-type]
    return [entry.decode() if isinstance(entry, bytes) else str(entry) for entry in pipe.execute()]
