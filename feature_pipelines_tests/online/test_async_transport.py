"""The serving path's async Redis reads, against real redis-servers: replies reach their callers in
order however many are in flight, AUTH and SELECT are sent, a dropped connection is retried once,
an abandoned connection is replaced, and configurations outside its scope are declined."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import hiredis
import pytest
import redis
from redis.cluster import RedisCluster

from feature_pipelines.online.async_transport import AsyncReader, AsyncReadError
from feature_pipelines.online.local_server import LocalRedisServer


def _get(*keys: str) -> bytes:
    return b"".join(b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key.encode()) for key in keys)


@pytest.fixture
def filled(redis_client: redis.Redis) -> Iterator[redis.Redis]:
    redis_client.mset({f"k{i}": f"v{i}" for i in range(200)})
    yield redis_client


def test_concurrent_pipelines_each_get_their_own_replies(filled: redis.Redis) -> None:
    reader = AsyncReader.for_client(filled)
    assert reader is not None

    async def run() -> list[list[object]]:
        calls = [reader.pipeline(_get(f"k{i}", f"k{i + 1}", "missing"), 3) for i in range(0, 150, 2)]
        try:
            return await asyncio.gather(*calls)
        finally:
            reader.close()

    replies = asyncio.run(run())
    assert replies == [[f"v{i}".encode(), f"v{i + 1}".encode(), None] for i in range(0, 150, 2)]


def test_error_replies_come_back_as_values(filled: redis.Redis) -> None:
    filled.hset("a-hash", "f", "1")
    reader = AsyncReader.for_client(filled)
    assert reader is not None

    async def run() -> list[object]:
        try:
            return await reader.pipeline(_get("a-hash", "k1"), 2)
        finally:
            reader.close()

    wrong_type, value = asyncio.run(run())
    assert isinstance(wrong_type, hiredis.ReplyError) and "WRONGTYPE" in str(wrong_type)
    assert value == b"v1"


def test_a_dropped_connection_is_replaced_by_a_fresh_one(filled: redis.Redis) -> None:
    reader = AsyncReader.for_client(filled)
    assert reader is not None

    async def run() -> tuple[list[object], list[object]]:
        try:
            first = await reader.pipeline(_get("k1"), 1)
            filled.client_kill_filter(_type="normal", skipme=True)  # drops the reader's connection
            await asyncio.sleep(0.05)
            return first, await reader.pipeline(_get("k2"), 1)
        finally:
            reader.close()

    assert asyncio.run(run()) == ([b"v1"], [b"v2"])


def test_a_connection_lost_with_replies_owed_is_retried_once(filled: redis.Redis) -> None:
    """The server closes the connection while a read waits (CLIENT KILL from another client): the
    read is sent again on a fresh connection and answers."""
    reader = AsyncReader.for_client(filled)
    assert reader is not None

    async def run() -> list[object]:
        try:
            await reader.pipeline(_get("k1"), 1)  # connected
            pending = asyncio.ensure_future(reader.pipeline(b"*3\r\n$5\r\nBLPOP\r\n$5\r\nempty\r\n$1\r\n1\r\n", 1))
            await asyncio.sleep(0.1)
            filled.client_kill_filter(_type="normal", skipme=True)
            filled.rpush("empty", "now")  # the resent BLPOP finds it at once
            return await pending
        finally:
            reader.close()

    assert asyncio.run(run()) == [[b"empty", b"now"]]


def test_an_abandoned_connection_is_replaced(filled: redis.Redis) -> None:
    reader = AsyncReader.for_client(filled)
    assert reader is not None

    async def run() -> list[object]:
        try:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):
                    await reader.pipeline(b"*3\r\n$5\r\nBLPOP\r\n$5\r\nempty\r\n$1\r\n5\r\n", 1)
            reader.abandon()  # what the lean path does when its deadline passes
            return await reader.pipeline(_get("k3"), 1)
        finally:
            reader.close()

    assert asyncio.run(run()) == [b"v3"]


def test_auth_and_select_are_sent() -> None:
    with LocalRedisServer(password="s3cret") as server:
        client = server.client(db=3)
        try:
            client.set("in-db-3", "yes")
            reader = AsyncReader.for_client(client)
            assert reader is not None and reader.address.db == 3

            async def run() -> list[object]:
                try:
                    return await reader.pipeline(_get("in-db-3"), 1)
                finally:
                    reader.close()

            assert asyncio.run(run()) == [b"yes"]
            wrong = AsyncReader.for_client(server.client(password="wrong"))
            assert wrong is not None
            with pytest.raises(AsyncReadError, match="refused the connection's setup"):
                asyncio.run(wrong.pipeline(_get("in-db-3"), 1))
        finally:
            client.close()


def test_an_unreachable_server_is_an_async_read_error() -> None:
    reader = AsyncReader.for_client(redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5))
    assert reader is not None
    with pytest.raises(AsyncReadError, match="cannot connect"):
        asyncio.run(reader.pipeline(_get("k"), 1))


def test_configurations_outside_its_scope_are_declined() -> None:
    assert AsyncReader.for_client(redis.Redis.from_url("rediss://127.0.0.1:6390/0")) is None
    assert AsyncReader.for_client(redis.Redis(unix_socket_path="/tmp/redis.sock")) is None
    assert AsyncReader.for_client(redis.Redis(host="127.0.0.1", port=6390, protocol=3)) is None
    cluster = RedisCluster.__new__(RedisCluster)  # a cluster client is declined before any use
    assert AsyncReader.for_client(cluster) is None
