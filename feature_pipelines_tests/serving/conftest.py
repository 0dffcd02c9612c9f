"""The online store tests' real redis-server, plus a published feature set and an app factory."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi import FastAPI

from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.features.on_demand import ON_DEMAND_FEATURES
from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.online.local_server import LocalRedisServer
from feature_pipelines.serving.app import create_app
from feature_pipelines_tests.online.conftest import redis_client, redis_server  # noqa: F401 - fixtures
from feature_pipelines_tests.online.test_retrieval import READ_DELAY, build_stores

with warnings.catch_warnings():
    # Starlette 1.x prefers the `httpx2` fork for its test client; httpx still works.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
    from fastapi.testclient import TestClient

__all__ = ["TestClient"]

PREFIX = "fp:serving"


@dataclass
class Published:
    """Feature tables in a tmp lake and the same snapshots in Redis, published at `now`."""

    server: LocalRedisServer
    store: DeltaStore
    now: datetime

    @property
    def read_at(self) -> datetime:
        """READ_DELAY after `now`: the EWR-BOS route is then past its TTL but still in Redis."""
        return self.now + READ_DELAY


@pytest.fixture
def published(redis_server: LocalRedisServer, redis_client: redis.Redis, tmp_path: Path) -> Published:  # noqa: F811
    now = datetime.now(timezone.utc)
    store = build_stores(redis_client, tmp_path / "lake", now, prefix=PREFIX)
    return Published(redis_server, store, now)


@pytest.fixture
def make_app(published: Published) -> Iterator[Callable[..., FastAPI]]:
    """create_app over the published set, reading at `published.read_at` unless overridden."""
    clients: list[redis.Redis] = []

    def factory() -> redis.Redis:
        client = published.server.client(socket_timeout=2, socket_connect_timeout=1)
        clients.append(client)
        return client

    def make(**overrides: Any) -> FastAPI:
        kwargs: dict[str, Any] = dict(
            redis_client_factory=factory,
            prefix=PREFIX,
            views=FEATURE_VIEWS,
            on_demand=ON_DEMAND_FEATURES,
            now=lambda: published.read_at,
        )
        kwargs.update(overrides)
        return create_app(**kwargs)

    yield make
    for client in clients:
        client.close()
