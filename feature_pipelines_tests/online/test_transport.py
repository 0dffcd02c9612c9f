"""The one re-send rule for calls Redis refused without running them, as publish and read both use it."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import redis
from redis.connection import Connection
from redis.exceptions import MovedError

from feature_pipelines.online.publish import publish
from feature_pipelines.online.read import fetch_hashes, read_online
from feature_pipelines.online.transport import ATTEMPTS, RefusedError, batches, send_routed
from feature_pipelines_tests.online.conftest import (
    ENTITY_KEYS,
    FEATURES,
    TABLE,
    assert_frames_identical,
    now_utc,
    snapshot,
)


def test_batches_cover_every_row_once() -> None:
    assert batches(7, 3) == [range(0, 3), range(3, 6), range(6, 7)]
    assert batches(0, 3) == []
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        batches(3, 0)


def test_only_refused_work_is_sent_again(redis_client: redis.Redis) -> None:
    sent: list[list[int]] = []

    def send(node: redis.Redis, items: Sequence[int]) -> list[int]:
        sent.append(list(items))
        return [i for i in items if i % 3 == 0] if len(sent) == 1 else []

    send_routed(redis_client, range(7), key_of=str, send=send, what="test")
    assert sent == [[0, 1, 2, 3, 4, 5, 6], [0, 3, 6]]


def test_work_still_refused_after_the_last_attempt_is_an_error(redis_client: redis.Redis) -> None:
    attempts: list[int] = []

    def send(node: redis.Redis, items: Sequence[int]) -> list[int]:
        attempts.append(len(items))
        return list(items)[:2]

    with pytest.raises(RefusedError, match=rf"feature view 'v': 2 calls were still refused .* after {ATTEMPTS} attempts"):
        send_routed(redis_client, range(5), key_of=str, send=send, what="feature view 'v'")
    assert attempts == [5] + [2] * (ATTEMPTS - 1)


def test_a_read_refused_with_moved_is_read_again(redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """A MOVED reply to one HMGET (slots migrating) costs a second read of that key only; the
    pipeline's other replies stay in step and the answer is complete."""
    event_time = now_utc()
    frame = snapshot(400, event_time)
    publish(redis_client, TABLE, frame)
    real_read = Connection.read_response
    seen = {"replies": 0, "moved": 0}

    def read_response(self: Connection, *args: object, **kwargs: object) -> object:
        reply = real_read(self, *args, **kwargs)  # type: ignore[arg-type]
        seen["replies"] += 1
        if seen["replies"] == 250 and not seen["moved"]:
            seen["moved"] += 1
            raise MovedError("1234 127.0.0.1:1")  # read in full, so the next reply is the next key's
        return reply

    monkeypatch.setattr(Connection, "read_response", read_response)
    got = read_online(redis_client, TABLE, frame.select(ENTITY_KEYS), FEATURES, event_time)
    assert seen == {"replies": 401, "moved": 1}
    assert_frames_identical(got, frame.drop("event_timestamp"))
    assert fetch_hashes(redis_client, [], ["x"]) == []
