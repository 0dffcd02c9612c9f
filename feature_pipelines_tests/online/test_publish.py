"""Conditional publish: newer-or-equal wins, older and expired are skipped and counted, TTL set."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import timedelta

import polars as pl
import pytest
import redis

from feature_pipelines.online import publish as publish_module
from feature_pipelines.online.encoding import FORMAT_VERSION_BYTES, TIMESTAMP_FIELD, VERSION_FIELD
from feature_pipelines.online.keys import hash_key, key_slot
from feature_pipelines.online.publish import OnlinePublishError, PublishResult, encode_snapshot, plan_batches, publish
from feature_pipelines.online.read import read_online
from feature_pipelines.online.table import OnlineTable, OnlineTableError
from feature_pipelines_tests.online.conftest import (
    ENTITY_KEYS,
    FEATURES,
    PREFIX,
    TABLE,
    TTL,
    VIEW,
    assert_frames_identical,
    now_utc,
    snapshot,
)


def _read_back(client: redis.Redis, frame: pl.DataFrame, now: object) -> pl.DataFrame:
    return read_online(client, entity_rows=frame.select(ENTITY_KEYS), features=FEATURES, now=now, table=TABLE)


def test_publish_then_read_equals_input(redis_client: redis.Redis) -> None:
    event_time = now_utc()
    frame = snapshot(1_500, event_time)
    result = publish(redis_client, frame=frame, batch_size=200, batches_per_pipeline=3, table=TABLE)
    assert result == PublishResult(VIEW, written=1_500)
    assert redis_client.dbsize() == 1_500
    assert_frames_identical(_read_back(redis_client, frame, event_time), frame.drop("event_timestamp"))


def test_hash_layout_on_the_server(redis_client: redis.Redis) -> None:
    event_time = now_utc()
    frame = snapshot(3, event_time)
    publish(redis_client, frame=frame, table=TABLE)
    key = hash_key(PREFIX, VIEW, ("O0", "D0"))
    stored = redis_client.hgetall(key)
    assert set(stored) == {f.encode() for f in FEATURES} | {b"__ts", b"__v"}
    assert stored[VERSION_FIELD.encode()] == FORMAT_VERSION_BYTES
    micros = int(frame["event_timestamp"].dt.epoch("us")[0])
    assert stored[TIMESTAMP_FIELD.encode()] == str(micros).encode()
    assert stored[b"route_flights_24h"] == b"0"


def test_older_snapshot_never_overwrites_and_is_counted(redis_client: redis.Redis) -> None:
    newer = now_utc()
    older = newer - timedelta(hours=1)
    publish(redis_client, frame=snapshot(50, newer, generation=2), table=TABLE)
    # A backfill of an older partition: half the entities exist with newer values, half are new.
    backfill = pl.concat([snapshot(25, older, generation=1), snapshot(25, older, generation=1, offset=50)])
    result = publish(redis_client, frame=backfill, table=TABLE)
    assert (result.written, result.skipped_as_older, result.skipped_as_expired) == (25, 25, 0)
    read = _read_back(redis_client, snapshot(50, newer, generation=2), newer)
    assert_frames_identical(read, snapshot(50, newer, generation=2).drop("event_timestamp"))


def test_equal_timestamp_overwrites_so_a_rerun_is_idempotent(redis_client: redis.Redis) -> None:
    event_time = now_utc()
    first = snapshot(40, event_time, generation=1)
    assert publish(redis_client, frame=first, table=TABLE).written == 40
    assert publish(redis_client, frame=first, table=TABLE).written == 40
    corrected = snapshot(40, event_time, generation=3)  # a recomputation of the same partition
    assert publish(redis_client, frame=corrected, table=TABLE).written == 40
    assert_frames_identical(_read_back(redis_client, corrected, event_time), corrected.drop("event_timestamp"))


def test_expiry_is_event_timestamp_plus_ttl(redis_client: redis.Redis) -> None:
    event_time = now_utc() - timedelta(hours=5)
    frame = snapshot(5, event_time)
    publish(redis_client, frame=frame, table=TABLE)
    expected_ms = -(-(int(frame["event_timestamp"].dt.epoch("us")[0]) + TTL // timedelta(microseconds=1)) // 1000)
    for key in (hash_key(PREFIX, VIEW, row) for row in frame.select(ENTITY_KEYS).rows()):
        assert redis_client.pexpiretime(key) == expected_ms


def test_already_expired_rows_are_skipped_and_not_resurrected(redis_client: redis.Redis) -> None:
    now = now_utc()
    fresh = snapshot(10, now)
    publish(redis_client, frame=fresh, table=TABLE)
    stale = pl.concat([snapshot(10, now - TTL - timedelta(seconds=1)),
                       snapshot(5, now - TTL - timedelta(seconds=1), offset=100)])
    result = publish(redis_client, frame=stale, table=TABLE)
    assert result == PublishResult(VIEW, skipped_as_expired=15)
    assert redis_client.dbsize() == 10
    assert_frames_identical(_read_back(redis_client, fresh, now), fresh.drop("event_timestamp"))


def test_redis_itself_evicts_at_expiry(redis_client: redis.Redis) -> None:
    ttl = timedelta(seconds=1)
    frame = snapshot(3, now_utc() - timedelta(milliseconds=200))
    assert publish(redis_client, frame=frame, table=replace(TABLE, ttl=ttl)).written == 3
    keys = [hash_key(PREFIX, VIEW, row) for row in frame.select(ENTITY_KEYS).rows()]
    assert redis_client.exists(*keys) == 3
    time.sleep(1.0)
    assert redis_client.exists(*keys) == 0


def test_duplicate_entities_are_the_callers_bug(redis_client: redis.Redis) -> None:
    frame = snapshot(5, now_utc())
    doubled = pl.concat([frame, frame.tail(1)])
    with pytest.raises(OnlinePublishError, match=r"'route_delay_stats'.*origin='O4', dest='D4'.*more than once"):
        publish(redis_client, frame=doubled, table=TABLE)
    assert redis_client.dbsize() == 0  # validation happens before anything is written


def test_frame_errors_name_the_view(redis_client: redis.Redis) -> None:
    frame = snapshot(2, now_utc())
    with pytest.raises(OnlinePublishError, match=r"'route_delay_stats'.*lacks.*route_flights_24h"):
        publish(redis_client, frame=frame.drop("route_flights_24h"), table=TABLE)
    naive = frame.with_columns(pl.col("event_timestamp").dt.replace_time_zone(None))
    with pytest.raises(OnlinePublishError, match=r"'route_delay_stats'.*timezone-aware"):
        publish(redis_client, frame=naive, table=TABLE)
    wrong = frame.with_columns(pl.col("route_flights_24h").cast(pl.Float64))
    with pytest.raises(ValueError, match=r"'route_delay_stats'.*'route_flights_24h'.*declared Int64"):
        publish(redis_client, frame=wrong, table=TABLE)
    with pytest.raises(OnlineTableError, match=r"'route_delay_stats'.*ttl must be positive"):
        publish(redis_client, frame=frame, table=replace(TABLE, ttl=timedelta(0)))


def test_empty_frame_writes_nothing(redis_client: redis.Redis) -> None:
    assert publish(redis_client, frame=snapshot(0, now_utc()), table=TABLE) == PublishResult(VIEW)


def test_integer_entity_keys(redis_client: redis.Redis) -> None:
    event_time = now_utc()
    frame = pl.DataFrame({
        "flight_id": [1, 2, -3],
        "event_timestamp": pl.Series([event_time] * 3, dtype=pl.Datetime("us", "UTC")),
        "delay": [1.5, None, -0.0],
    })
    table = OnlineTable(name="flight_stats", entity_keys=("flight_id",), schema={"delay": pl.Float64}, ttl=TTL, prefix=PREFIX)
    assert publish(redis_client, frame=frame, table=table).written == 3
    read = read_online(redis_client, entity_rows=pl.DataFrame({"flight_id": [-3, 9, 1]}),
                       features=["delay"], now=event_time, table=table)
    assert_frames_identical(read, pl.DataFrame({"flight_id": [-3, 9, 1], "delay": [-0.0, None, 1.5]}))


def test_noscript_is_reloaded_and_only_refused_calls_resent(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis forgets scripts on restart or SCRIPT FLUSH; the publish reloads and finishes."""
    real_load = redis_client.script_load
    loads: list[int] = []

    def forgetful_load(script: str) -> str:
        loads.append(1)
        if len(loads) == 1:  # the up-front load "happens" but the server forgets at once
            sha = real_load(script)
            redis_client.script_flush()
            return sha
        return real_load(script)

    monkeypatch.setattr(redis_client, "script_load", forgetful_load)
    frame = snapshot(1_000, now_utc())
    result = publish(redis_client, frame=frame, batch_size=100, table=TABLE)
    assert result.written == 1_000 and len(loads) == 2
    assert redis_client.dbsize() == 1_000


def test_script_is_one_call_per_batch(redis_client: redis.Redis) -> None:
    redis_client.config_resetstat()
    publish(redis_client, frame=snapshot(2_500, now_utc()), batch_size=1_000, table=TABLE)
    stats = redis_client.info("commandstats")
    assert stats["cmdstat_evalsha"]["calls"] == 3
    assert stats["cmdstat_hset"]["calls"] == 2_500  # one HSET per entity: never torn


def test_batches_by_slot_keep_each_call_in_one_slot() -> None:
    frame = snapshot(3_000, now_utc())
    encoded = encode_snapshot(frame, TABLE)
    batches = plan_batches(encoded.keys, 7, by_slot=True)
    assert sorted(i for rows in batches for i in rows) == list(range(3_000))
    for rows in batches:
        assert 1 <= len(rows) <= 7
        assert len({key_slot(encoded.keys[i]) for i in rows}) == 1
    flat = plan_batches(encoded.keys, 1_000, by_slot=False)
    assert [len(rows) for rows in flat] == [1_000, 1_000, 1_000]


def test_publish_lua_is_the_registered_script() -> None:
    import hashlib

    assert publish_module.PUBLISH_SHA == hashlib.sha1(publish_module.PUBLISH_LUA.encode()).hexdigest()


def test_publish_without_the_hiredis_packer(redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """hiredis is optional: redis-py's own packer produces the same calls."""
    monkeypatch.setattr(publish_module, "_hiredis_pack", None)
    event_time = now_utc()
    frame = snapshot(300, event_time)
    assert publish(redis_client, frame=frame, batch_size=64, table=TABLE).written == 300
    assert_frames_identical(_read_back(redis_client, frame, event_time), frame.drop("event_timestamp"))


def test_any_time_unit_and_zone_is_the_same_instant(redis_client: redis.Redis) -> None:
    event_time = now_utc().replace(microsecond=123_000)
    frame = snapshot(3, event_time)
    as_ms_in_new_york = frame.with_columns(
        pl.col("event_timestamp").dt.cast_time_unit("ms").dt.convert_time_zone("America/New_York")
    )
    assert publish(redis_client, frame=as_ms_in_new_york, table=TABLE).written == 3
    assert publish(redis_client, frame=frame, table=TABLE).written == 3  # same instant: equal, rewrites
    stored = redis_client.hget(hash_key(PREFIX, VIEW, ("O0", "D0")), "__ts")
    assert stored == str(int(frame["event_timestamp"].dt.epoch("us")[0])).encode()
