"""A publish cut off half-way leaves no torn entity, and re-running it completes.

Two ways to cut it: the server drops the publisher's connection (CLIENT KILL) while the data
stays, and the server process is SIGKILLed and restarted with its append-only file reloaded.
Each entity's hash is then checked field by field against its own `__ts`: all old values with
the old timestamp, or all new values with the new one. A frozen server is the third way, and
must give a timeout error, not a hang. (The same faults inside a real Dagster run, with its
retry policy: test_publish_retry_dagster.py.)
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import timedelta

import polars as pl
import pytest
import redis

from feature_pipelines.online.encoding import encode_column
from feature_pipelines.online.errors import OnlineStoreUnavailableError
from feature_pipelines.online.keys import hash_keys
from feature_pipelines.online.local_server import LocalRedisServer
from feature_pipelines.online.publish import PublishResult, publish
from feature_pipelines.resources import RedisResource
from feature_pipelines_tests.online.conftest import ENTITY_KEYS, PREFIX, SCHEMA, TABLE, VIEW, now_utc, snapshot

ENTITIES = 20_000
BATCH = 50


def _expected_fields(frame: pl.DataFrame) -> list[dict[bytes, bytes]]:
    """The exact hash each row must produce, from the same encoder the publish uses."""
    columns = {name.encode(): encode_column(frame[name], dtype) for name, dtype in SCHEMA.items()}
    stamps = frame["event_timestamp"].dt.epoch("us").cast(pl.String).to_list()
    return [
        {b"__ts": stamps[i].encode(), b"__v": b"1", **{name: col[i] for name, col in columns.items()}}
        for i in range(frame.height)
    ]


def _classify(client: redis.Redis, keys: list[bytes], old: list[dict[bytes, bytes]],
              new: list[dict[bytes, bytes]]) -> tuple[int, int]:
    """(entities fully old, entities fully new); any torn entity fails the test."""
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hgetall(key)
    n_old = n_new = 0
    for index, stored in enumerate(pipe.execute()):
        if stored == old[index]:
            n_old += 1
        elif stored == new[index]:
            n_new += 1
        else:
            raise AssertionError(
                f"entity {index} is torn: stored {stored!r}, old {old[index]!r}, new {new[index]!r}"
            )
    return n_old, n_new


def _publish_in_background(client: redis.Redis, frame: pl.DataFrame) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            publish(client, frame=frame, batch_size=BATCH, batches_per_pipeline=4, table=TABLE)
        except BaseException as error:  # noqa: BLE001 - handed to the test thread to inspect
            errors.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


def _wait_for_script_calls(client: redis.Redis, calls: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stats = client.info("commandstats").get("cmdstat_evalsha", {})
        if stats.get("calls", 0) >= calls:
            return
        time.sleep(0.005)
    raise AssertionError(f"the publish did not reach {calls} script calls in {timeout_s}s")


def _interrupted_publish_then_rerun(
    client: redis.Redis, interrupt: Callable[[], None], observer: Callable[[], redis.Redis]
) -> None:
    event_time = now_utc()
    old_frame = snapshot(ENTITIES, event_time - timedelta(hours=1), generation=1)
    new_frame = snapshot(ENTITIES, event_time, generation=2)
    keys = hash_keys(new_frame, prefix=PREFIX, view=VIEW, entity_keys=ENTITY_KEYS)
    old, new = _expected_fields(old_frame), _expected_fields(new_frame)

    assert publish(client, frame=old_frame, table=TABLE).written == ENTITIES
    client.config_resetstat()
    thread, errors = _publish_in_background(client, new_frame)
    _wait_for_script_calls(client, 20)
    interrupt()
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert errors and isinstance(errors[0], (redis.ConnectionError, redis.TimeoutError)), errors

    reader = observer()
    n_old, n_new = _classify(reader, keys, old, new)
    assert n_old + n_new == ENTITIES
    assert n_new >= 20 * BATCH - BATCH and n_old > 0, (n_old, n_new)  # really cut half-way

    rerun = publish(reader, frame=new_frame, table=TABLE)
    assert rerun == PublishResult(VIEW, written=ENTITIES)  # equal timestamps rewrite: idempotent
    assert _classify(reader, keys, old, new) == (0, ENTITIES)


def test_dropped_connection_mid_publish(redis_server: LocalRedisServer) -> None:
    client = redis_server.client(socket_timeout=10)
    admin = redis_server.client()
    client.flushall()

    def drop_publisher_connection() -> None:
        killed = admin.client_kill_filter(_type="normal", skipme=True)
        assert killed >= 1

    try:
        _interrupted_publish_then_rerun(client, drop_publisher_connection, lambda: redis_server.client())
    finally:
        client.flushall()
        client.close()
        admin.close()


def test_server_killed_mid_publish_then_restarted() -> None:
    with LocalRedisServer(appendonly=True) as server:
        client = server.client(socket_timeout=10)
        _interrupted_publish_then_rerun(
            client, lambda: server.restart(crash=True), lambda: server.client(socket_timeout=10)
        )
        client.close()


def test_frozen_server_times_out_instead_of_hanging(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that stops answering (SIGSTOP: the port still accepts connections) is the case
    where a publish could hang; the resource's socket timeout turns it into a clear error."""
    with LocalRedisServer() as server:
        monkeypatch.setenv("FEATURE_PIPELINES_REDIS_URL", server.url)
        client = RedisResource(key_prefix=PREFIX, socket_timeout_s=0.3, connect_timeout_s=0.3).client()
        assert client.ping()
        os.kill(server.pid, signal.SIGSTOP)
        try:
            with pytest.raises(OnlineStoreUnavailableError, match=(
                rf"feature view '{VIEW}': publishing 100 entities against redis://127.0.0.1:{server.port}/0 "
                r"failed: the server did not answer within the socket timeout"
            )):
                publish(client, frame=snapshot(100, now_utc()), table=TABLE)
        finally:
            os.kill(server.pid, signal.SIGCONT)
        assert publish(client, frame=snapshot(100, now_utc()), table=TABLE).written == 100  # and recovers
        client.close()
