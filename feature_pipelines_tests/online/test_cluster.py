"""On a real 3-node Redis Cluster: single-slot script calls, per-node pipelines, reads across nodes."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import replace

import pytest
from redis.cluster import RedisCluster

from feature_pipelines.online import read as read_module
from feature_pipelines.online.keys import hash_key
from feature_pipelines.online.local_server import LocalRedisServer
from feature_pipelines.online.publish import PublishResult, publish
from feature_pipelines.online.read import read_online
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

CLUSTER_ARGS = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "5000"]


def _cluster_port() -> int:
    """A free port whose cluster-bus port (port + 10000) is free too, so below 55536."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20_000, 40_000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10_000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    if shutil.which("redis-cli") is None:
        pytest.skip("redis-cli (Debian package redis-tools) is needed to form a cluster")
    with ExitStack() as stack:
        servers = [
            stack.enter_context(LocalRedisServer(port=_cluster_port(), extra_args=CLUSTER_ARGS))
            for _ in range(3)
        ]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{s.port}" for s in servers),
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=30,
        )
        probes = [s.client() for s in servers]
        deadline = time.monotonic() + 20
        while not all(p.execute_command("CLUSTER INFO").get("cluster_state") == "ok" for p in probes):
            assert time.monotonic() < deadline, "the test cluster did not reach state ok"
            time.sleep(0.05)
        for probe in probes:
            probe.close()
        client = RedisCluster(host="127.0.0.1", port=servers[0].port)
        yield client
        client.close()


def test_publish_and_read_on_a_cluster(cluster: RedisCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    cluster.flushall()
    event_time = now_utc()
    frame = snapshot(3_000, event_time)
    assert publish(cluster, frame=frame, batch_size=500, table=TABLE) == PublishResult(VIEW, written=3_000)
    sizes = [cluster.get_redis_connection(node).dbsize() for node in cluster.get_primaries()]
    assert sum(sizes) == 3_000 and len(sizes) == 3 and min(sizes) > 0  # really spread over nodes
    older = snapshot(3_000, event_time.replace(year=event_time.year - 1))
    assert publish(cluster, frame=older, table=replace(TABLE, ttl=TTL * 1000)).skipped_as_older == 3_000
    request = frame.select(ENTITY_KEYS).reverse()
    for threshold in (read_module.SMALL_REQUEST_ROWS, 0):
        monkeypatch.setattr(read_module, "SMALL_REQUEST_ROWS", threshold)
        got = read_online(cluster, entity_rows=request, features=FEATURES, now=event_time, table=TABLE)
        assert_frames_identical(got, frame.reverse().drop("event_timestamp"))


def test_views_of_one_entity_share_a_slot(cluster: RedisCluster) -> None:
    a = hash_key(PREFIX, VIEW, ("JFK", "LAX"))
    b = hash_key(PREFIX, "route_weather", ("JFK", "LAX"))
    assert cluster.keyslot(a) == cluster.keyslot(b)
