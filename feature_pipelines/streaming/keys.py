"""The Redis key layout of the stream, its dead letters, its idempotency markers and the tiles."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

DEFAULT_PREFIX = "fp:stream"


@dataclass(frozen=True)
class StreamKeys:
    """Every key the producer, the consumer and the online read agree on, under one prefix."""

    prefix: str = DEFAULT_PREFIX

    def events(self, table: str) -> str:
        """The stream of a raw table's events."""
        return f"{self.prefix}:events:{table}"

    def dead_letters(self, table: str) -> str:
        """The stream of a table's rejected and too-late events, each with its rule and reason."""
        return f"{self.prefix}:dead:{table}"

    def stats(self, table: str) -> str:
        """Counts per outcome (applied, each rule, late per view) of a table's events."""
        return f"{self.prefix}:stats:{table}"

    def watermark(self) -> str:
        """Per table, the latest known-at instant (microseconds) the consumers have applied."""
        return f"{self.prefix}:watermark"

    def entry_done(self, table: str, entry_id: str) -> str:
        """Set when a stream entry's effect is written: a retried entry then changes nothing."""
        return f"{self.prefix}:entry:{table}:{entry_id}"

    def event_seen(self, table: str, event_id: str) -> str:
        """Set when an event id is first applied, to the hash of its values (re-deliveries are judged by it)."""
        return f"{self.prefix}:seen:{table}:{event_id}"

    def forgotten(self, entity_key: str) -> str:
        """The values of a join key whose entity was forgotten (`feature-pipelines forget`): the
        consumer drops their events, so no push or replay brings them back."""
        return f"{self.prefix}:forgotten:{entity_key}"

    def replay_cursor(self, table: str) -> str:
        """The known-at instant (microseconds) up to which a replay has pushed a table's events."""
        return f"{self.prefix}:replay-cursor:{table}"

    def replay_start(self, table: str) -> str:
        """The known-at instant (microseconds) from which a replay has pushed every event of a table
        without a gap, up to its cursor."""
        return f"{self.prefix}:replay-start:{table}"

    def tile(self, view: str, entity: str, tile_start_us: int) -> str:
        return f"{self.prefix}:tile:{view}:{entity}:{tile_start_us}"

    def tile_events(self, view: str, entity: str, tile_start_us: int) -> str:
        """A tile's events, kept for reads whose window starts or ends inside the tile."""
        return f"{self.prefix}:tev:{view}:{entity}:{tile_start_us}"


def entity_text(values: Sequence[Any]) -> str:
    """An entity's join-key values as the text in its keys (JSON: unambiguous for any key values)."""
    return _entity_text(tuple(values))


@lru_cache(maxsize=65_536)
def _entity_text(values: tuple[Any, ...]) -> str:  # an entity's events come in runs: its text is made once
    return json.dumps(list(values), separators=(",", ":"))


DEFAULT_KEYS = StreamKeys()


def stream_keys(online_prefix: str) -> StreamKeys:
    """The stream's keys under an environment's online key prefix ("fp:local" -> "fp:local:stream"):
    what the consumer, `POST /push` and the parity check of one environment share."""
    return StreamKeys(f"{online_prefix}:stream")
