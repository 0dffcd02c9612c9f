"""Erasing an entity from Redis: its online hashes in every view keyed by it, and its stream tiles and events."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import redis

from feature_pipelines.features.spec import FeatureView
from feature_pipelines.online.keys import SEPARATOR, entity_part
from feature_pipelines.online.table import OnlineTable
from feature_pipelines.privacy.entity import ForgetTarget
from feature_pipelines.streaming.events import PAYLOAD, decode_payload
from feature_pipelines.streaming.keys import stream_keys

_GLOB_SPECIALS = str.maketrans({c: "\\" + c for c in "*?[]\\"})
_SCAN_COUNT = 1000
_XRANGE_COUNT = 1000


@dataclass(frozen=True)
class OnlineErasure:
    """The Redis keys deleted (online hashes, tiles, tile events) and the stream entries removed."""

    keys: tuple[str, ...]
    stream_entries: int


def _glob(text: str) -> str:
    return text.translate(_GLOB_SPECIALS)


def _text(key: bytes | str) -> str:
    return key.decode() if isinstance(key, bytes) else key


def _scan(client: redis.Redis, pattern: str) -> Iterator[str]:
    for key in client.scan_iter(match=pattern, count=_SCAN_COUNT):
        yield _text(key)


def online_keys(client: redis.Redis, view: FeatureView, target: ForgetTarget, prefix: str) -> list[str]:
    """The entity's hashes of `view` that exist: the one key when the view is keyed by it alone,
    else every key whose entity part holds the value at the key's position."""
    table = OnlineTable.for_view(view, prefix)
    if view.entity_keys == (target.key,):
        key = table.keys_for_rows([(target.value,)])[0]
        return [key] if client.exists(key) else []
    position = view.entity_keys.index(target.key)
    wanted = entity_part([target.value])
    found = []
    for key in _scan(client, _glob(table.key_head) + "{*}"):
        parts = key[len(table.key_head) + 1 : -1].split(SEPARATOR)
        if len(parts) == len(view.entity_keys) and parts[position] == wanted:
            found.append(key)
    return found


def tile_keys(client: redis.Redis, view: FeatureView, target: ForgetTarget, prefix: str) -> list[str]:
    """The entity's stream tiles and tile events of a streaming `view` (keys `<...>:tile:<view>:<json values>:<start>`)."""
    keys = stream_keys(prefix)
    position = view.entity_keys.index(target.key)
    found = []
    for head in (keys.tile(view.name, "", 0).rsplit(":", 2)[0], keys.tile_events(view.name, "", 0).rsplit(":", 2)[0]):
        for key in _scan(client, _glob(head) + ":*"):
            entity = key[len(head) + 1 : key.rindex(":")]
            values = json.loads(entity)
            if len(values) == len(view.entity_keys) and str(values[position]) == target.value:
                found.append(key)
    return found


def stream_entries_of(client: redis.Redis, stream: str, target: ForgetTarget) -> list[str]:
    """The ids of a stream's entries whose event payload has the entity's key value."""
    found = []
    start = "-"
    while True:
        batch = client.xrange(stream, min=start, max="+", count=_XRANGE_COUNT)
        for entry_id, fields in batch:
            payload = fields.get(PAYLOAD.encode()) or fields.get(PAYLOAD)  # type: ignore[call-overload]
            if payload is not None and str(decode_payload(payload).get(target.key)) == target.value:
                found.append(_text(entry_id))
        if len(batch) < _XRANGE_COUNT:
            return found
        start = "(" + _text(batch[-1][0])


def erase_online(
    client: redis.Redis, views: Mapping[str, FeatureView], target: ForgetTarget, *, prefix: str, raw_tables: tuple[str, ...],
) -> OnlineErasure:
    """Delete the entity's online hashes and tiles, and its events from the raw tables' streams and
    dead letters (a replay of the stream would otherwise bring it back); first record it among the
    forgotten values the stream consumer drops (`StreamKeys.forgotten`)."""
    streams = stream_keys(prefix)
    client.sadd(streams.forgotten(target.key), target.value)  # first: the consumer drops its new events from now on
    keys: list[str] = []
    for view in target.views(views):
        keys += online_keys(client, view, target, prefix)
        if view.streaming is not None:
            keys += tile_keys(client, view, target, prefix)
    for key in keys:
        client.delete(key)
    entries = 0
    for table in raw_tables:
        for stream in (streams.events(table), streams.dead_letters(table)):
            ids = stream_entries_of(client, stream, target)
            if ids:
                entries += int(client.xdel(stream, *ids))
    return OnlineErasure(tuple(keys), entries)
