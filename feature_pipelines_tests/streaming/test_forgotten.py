"""A forgotten entity stays forgotten on the stream: after `forget` erased it from Redis, its newly
pushed events are dropped by the consumer (counted under `entity_forgotten`, nothing of them kept),
while the other aircraft's events are applied as before."""

from __future__ import annotations

import polars as pl
import pytest
import redis

from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.privacy.entity import ForgetTarget
from feature_pipelines.privacy.online_erasure import erase_online
from feature_pipelines.streaming.consumer import FORGOTTEN_RULE, StreamConsumer
from feature_pipelines.streaming.keys import stream_keys
from feature_pipelines.streaming.producer import push_events
from feature_pipelines_tests.streaming.conftest import drain, replay_events

pytestmark = pytest.mark.services

PREFIX = "fp:forgotten-test"
KEYS = stream_keys(PREFIX)


def test_a_forgotten_aircraft_pushed_again_is_dropped_and_nothing_of_it_is_kept(stream_client: redis.Redis) -> None:
    events = replay_events("raw_flights", days=1).filter(pl.col("tailnum").is_not_null())
    target_tail = events["tailnum"].value_counts(sort=True)["tailnum"][0]
    first, later = events.head(events.height // 2), events.tail(events.height - events.height // 2)
    consumer = StreamConsumer(stream_client, list(FEATURE_VIEWS.values()), table="raw_flights", keys=KEYS, block_ms=1)
    push_events(stream_client, "raw_flights", first, keys=KEYS)
    drain(consumer)
    tiles_of_target = [k for k in stream_client.scan_iter(match=f"{KEYS.prefix}:tile:*") if f'"{target_tail}"'.encode() in k]
    assert tiles_of_target  # the aircraft streamed before it was forgotten

    erase_online(stream_client, FEATURE_VIEWS, ForgetTarget("tailnum", target_tail), prefix=PREFIX, raw_tables=("raw_flights",))
    assert not [k for k in stream_client.scan_iter(match=f"{KEYS.prefix}:t*") if f'"{target_tail}"'.encode() in k]

    applied_before = int(stream_client.hget(KEYS.stats("raw_flights"), "applied") or 0)
    push_events(stream_client, "raw_flights", later, keys=KEYS)
    drain(consumer)
    expected_dropped = later.filter(pl.col("tailnum") == target_tail).height
    stats = {k.decode(): int(v) for k, v in stream_client.hgetall(KEYS.stats("raw_flights")).items()}
    assert expected_dropped > 0 and stats[FORGOTTEN_RULE] == expected_dropped
    assert stats["applied"] - applied_before == later.height - expected_dropped
    assert not [k for k in stream_client.scan_iter(match=f"{KEYS.prefix}:t*") if f'"{target_tail}"'.encode() in k]
    dead = stream_client.xrange(KEYS.dead_letters("raw_flights"))
    assert len(dead) == expected_dropped
    assert all(f[b"rule"] == FORGOTTEN_RULE.encode() and f[b"payload"] == b"" and f[b"event_id"] == b"" for _, f in dead)
    assert not any(target_tail.encode() in value for _, f in dead for value in f.values())
