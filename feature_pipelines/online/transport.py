"""How the online store talks to Redis: batches, routing to cluster nodes, and re-sending refused calls.

Publish and read both stream many commands on one pooled connection per server. What they
share lives here, once: cutting rows into batches, grouping work by the node that serves its
slot, holding a connection so that one left mid-conversation is never pooled again, and the one
retry rule for calls Redis refused without running them (NOSCRIPT, MOVED, ASK, TRYAGAIN): re-send
only those, after refreshing the cluster topology, at most `ATTEMPTS` times in all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import redis
import redis.connection
from redis.exceptions import AskError, MovedError, NoScriptError, TryAgainError

from feature_pipelines.online.keys import is_cluster_client, key_slot

# Replies meaning "this call ran nothing; send it again (after reloading / re-routing)".
REFUSED = (NoScriptError, MovedError, AskError, TryAgainError)
# Sends of one piece of work, the first included; slot migrations settle within a refresh or two.
ATTEMPTS = 3

W = TypeVar("W")
T = TypeVar("T")


class RefusedError(redis.RedisError):
    """Redis kept refusing calls without running them (NOSCRIPT/MOVED/ASK/TRYAGAIN)."""


def batches(count: int, size: int) -> list[range]:
    """Consecutive row ranges of at most `size` rows covering `range(count)`."""
    if size < 1:
        raise ValueError(f"batch_size must be >= 1, got {size}")
    return [range(start, min(start + size, count)) for start in range(0, count, size)]


def plan_batches(keys: Sequence[bytes], batch_size: int, *, by_slot: bool) -> list[range] | list[list[int]]:
    """Row indices of each multi-key call.

    On a single node any rows can share a call. On Redis Cluster every key of one call must hash
    to one slot, so rows are grouped by slot first (the hash tag makes that the entity's slot).
    """
    if not by_slot:
        return batches(len(keys), batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    by: dict[int, list[int]] = {}
    for index, key in enumerate(keys):
        by.setdefault(key_slot(key), []).append(index)
    return [rows[start:start + batch_size] for rows in by.values() for start in range(0, len(rows), batch_size)]


def route(
    client: redis.Redis, work: Sequence[W], key_of: Callable[[W], bytes | str]
) -> list[tuple[redis.Redis, Sequence[W]]]:
    """Which server gets which work: the one node, or on a cluster each slot's primary.

    redis-py's cluster pipeline refuses EVALSHA and re-packs every command, so each node gets
    its own stream of single-slot calls on that node's plain client instead.
    """
    if not is_cluster_client(client):
        return [(client, work)]
    by_node: dict[str, tuple[redis.Redis, list[W]]] = {}
    for item in work:
        node = client.get_node_from_key(key_of(item))  # type: ignore[attr-defined]
        if node.name not in by_node:
            by_node[node.name] = (client.get_redis_connection(node), [])  # type: ignore[attr-defined]
        by_node[node.name][1].append(item)
    return list(by_node.values())  # type: ignore[arg-type]


def send_routed(
    client: redis.Redis,
    work: Sequence[W],
    *,
    key_of: Callable[[W], bytes | str],
    send: Callable[[redis.Redis, Sequence[W]], list[W]],
    what: str,
) -> None:
    """Run `send(node, items)` for every node's share of `work`, re-sending what it refused.

    `send` returns the items Redis refused without running them. Re-sending those is always
    safe: a refused call changed nothing. On a cluster the topology is refreshed first, so MOVED
    and ASK items go to their new node. Raises `RefusedError` after `ATTEMPTS` sends.
    """
    pending: Sequence[W] = work
    for _attempt in range(ATTEMPTS):
        refused: list[W] = []
        for node, items in route(client, pending, key_of):
            refused.extend(send(node, items))
        if not refused:
            return
        if is_cluster_client(client):
            client.nodes_manager.initialize()  # type: ignore[attr-defined]
        pending = refused
    raise RefusedError(
        f"{what}: {len(pending)} calls were still refused (NOSCRIPT/MOVED/ASK/TRYAGAIN) after {ATTEMPTS} attempts"
    )


def on_connection(
    client: redis.Redis, use: Callable[[redis.connection.AbstractConnection], T], *, attempts: int = 1
) -> T:
    """`use(connection)` on one pooled connection of `client`, which goes back to the pool after.

    If `use` does not finish, replies may still be on the wire, so the connection is dropped
    rather than handed to the next caller. A connection error is retried on a fresh connection
    up to `attempts` times in all: pass more than 1 only for idempotent work (reads).
    """
    pool = client.connection_pool
    for attempt in range(1, attempts + 1):
        connection = pool.get_connection()
        clean = False
        try:
            value = use(connection)
            clean = True
            return value
        except (redis.ConnectionError, redis.TimeoutError):
            if attempt == attempts:
                raise
        finally:
            if not clean:
                connection.disconnect()
            pool.release(connection)
    raise AssertionError("unreachable: the last attempt returns or raises")
