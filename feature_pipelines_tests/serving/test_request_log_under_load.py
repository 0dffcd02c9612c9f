"""The request log loses no row under load: a real `serve` process (uvicorn, 2 workers, request log
on, the lean path and the full path both answering) is driven by concurrent clients for a few
seconds; after it shuts down, the log table holds exactly one row per value served, each request
once, under the id its response carried."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import polars as pl

from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.online.local_server import LocalRedisServer
from feature_pipelines.online.publish import publish
from feature_pipelines.online.table import OnlineTable
from feature_pipelines.serving.request_log import FEATURE_LOG_TABLE
from feature_pipelines_tests.serving.serve_process import serve_process

PREFIX = "fp:logload"
VIEW = FEATURE_VIEWS["route_delay_stats"]
N_ENTITIES = 300
CLIENTS = 24
LOAD_SECONDS = 4.0
MAX_REQUESTS = 40_000  # a hard bound, whatever the speed
# Lean-path shapes (stored features only) and full-path ones (an on-demand feature).
SHAPES: list[tuple[list[str], int]] = [
    (["route_delay_stats:route_dep_delay_mean_24h", "route_delay_stats:route_flights_count_24h"], 1),
    ([f"route_delay_stats:{feature.name}" for feature in VIEW.features], 1),
    (["route_delay_stats:route_cancel_rate_24h"], 5),
    (["route_delay_stats:route_dep_delay_mean_24h", "on_demand:route_dep_delay_ratio_24h_7d"], 2),
]


def _publish(server: LocalRedisServer) -> None:
    rng = np.random.default_rng(7)
    now = datetime.now(UTC)
    columns: dict[str, Any] = {
        "origin": [f"O{i % 3}" for i in range(N_ENTITIES)],
        "dest": [f"D{i}" for i in range(N_ENTITIES)],
        "event_timestamp": pl.Series([now - timedelta(hours=1)] * N_ENTITIES, dtype=pl.Datetime("us", "UTC")),
    }
    for feature in VIEW.features:
        columns[feature.name] = (rng.integers(0, 100, N_ENTITIES) if feature.dtype == "int64"
                                 else rng.normal(5, 3, N_ENTITIES))
    client = server.client()
    try:
        publish(client, OnlineTable.for_view(VIEW, PREFIX), pl.DataFrame(columns))
    finally:
        client.close()


async def _drive(base: str) -> dict[str, int]:
    """Concurrent clients until the time is up; each response's id and the values it served."""
    served: dict[str, int] = {}
    failures: list[str] = []
    stop_at = time.monotonic() + LOAD_SECONDS

    async def client_loop(seed: int) -> None:
        rng = random.Random(seed)
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            while time.monotonic() < stop_at and len(served) < MAX_REQUESTS:
                features, rows = rng.choice(SHAPES)
                entities = [rng.randrange(N_ENTITIES + 20) for _ in range(rows)]  # some unknown
                body = {"features": features,
                        "entities": {"origin": [f"O{i % 3}" for i in entities], "dest": [f"D{i}" for i in entities]}}
                response = await client.post("/get-online-features", json=body)
                if response.status_code != 200:
                    failures.append(f"{response.status_code}: {response.text[:200]}")
                    return
                served[response.headers["x-request-id"]] = len(features) * rows

    await asyncio.gather(*(client_loop(seed) for seed in range(CLIENTS)))
    assert not failures, failures[:3]
    return served


def test_every_served_value_is_logged_once_under_load(redis_server: LocalRedisServer, tmp_path: Path) -> None:
    redis_server.client().flushall()
    _publish(redis_server)
    lake = tmp_path / "lake"
    env = {"FEATURE_PIPELINES_REDIS_URL": redis_server.url, "FEATURE_PIPELINES_REDIS_PREFIX": PREFIX,
           "FEATURE_PIPELINES_LAKE_ROOT": str(lake)}
    with serve_process(env, ["--workers", "2"], ready_within_s=60) as server:
        served = asyncio.run(_drive(server.base))
        health = httpx.get(f"{server.base}/health", timeout=5).json()
    assert server.returncode == 0, server.output[-2000:]
    assert health["request_log"]["dropped_rows"] == 0
    assert len(served) > 1_000, f"only {len(served)} requests in {LOAD_SECONDS} s"
    log = DeltaStore(root=str(lake)).read(FEATURE_LOG_TABLE)
    per_request = dict(log.group_by("request_id").len().iter_rows())
    assert per_request == served  # every request once, with exactly its values
    assert log.height == sum(served.values())
    print(f"{len(served)} requests, {log.height} rows logged")
    assert log.select(pl.struct("request_id", "entity_index", "view", "feature").is_unique().all()).item()
