"""The HTTP feature server: what it serves, how it refuses bad input, and how it fails."""

from __future__ import annotations

import json
import math
import socket
import struct
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import polars as pl
import pytest
import redis
from fastapi import FastAPI

from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.features.on_demand import ON_DEMAND_FEATURES
from feature_pipelines.online.retrieval import get_online_features
from feature_pipelines.resources import RedisResource
from feature_pipelines.serving.app import create_app
from feature_pipelines_tests.serving.conftest import PREFIX, Published, TestClient

ROUTE_FEATURES = [
    "route_delay_stats:route_dep_delay_mean_24h",
    "route_delay_stats:route_flights_count_24h",
    "route_delay_stats:route_dep_delay_p90_24h",
]
ENTITIES = {"origin": ["JFK", "EWR", "EWR", "XXX"], "dest": ["LAX", "ORD", "BOS", "YYY"]}


def _post(client: TestClient, body: Any, **kwargs: Any) -> Any:
    return client.post("/get-online-features", json=body, **kwargs)


def _from_json(value: Any) -> Any:
    """Undo the non-finite float convention, to compare with the frame's values."""
    return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}.get(value, value) if isinstance(value, str) else value


def _bits(values: list[Any]) -> list[Any]:
    """Floats as IEEE bytes (so -0.0 and 0.1 + 0.2 are checked exactly); a NaN as "NaN", since
    JSON carries no NaN payload."""
    return [("NaN" if math.isnan(v) else struct.pack("<d", v)) if isinstance(v, float) else v for v in values]


@pytest.fixture
def client(make_app: Callable[..., FastAPI]) -> Iterator[TestClient]:
    with TestClient(make_app()) as test_client:
        yield test_client


def test_happy_path_serves_the_training_frame_values(
    client: TestClient, published: Published, redis_client: redis.Redis
) -> None:
    features = [
        "carrier_delay_stats:carrier_dep_delay_mean_24h",
        *ROUTE_FEATURES,
        "on_demand:route_dep_delay_ratio_24h_7d",
        "on_demand:scheduled_departure_hour_utc",
    ]
    entities = {
        **ENTITIES,
        "carrier": ["UA", "AA", "UA", "ZZ"],
        "scheduled_departure": ["2024-05-01T14:30:00Z", "2024-05-01T10:00:00-04:00", None, "2024-05-01T23:59:59+00:00"],
    }
    response = _post(client, {"features": features, "entities": entities})
    assert response.status_code == 200, response.text
    assert len(response.headers["x-request-id"]) == 32
    body = response.json()
    names = body["metadata"]["feature_names"]
    assert names == [
        "origin", "dest", "carrier", "scheduled_departure",
        "carrier_dep_delay_mean_24h",
        "route_dep_delay_mean_24h", "route_flights_count_24h", "route_dep_delay_p90_24h",
        "route_dep_delay_ratio_24h_7d", "scheduled_departure_hour_utc",
    ]
    results = dict(zip(names, body["results"]))
    # The reference: the same read done in process.
    rows = pl.DataFrame({k: v for k, v in entities.items() if k != "scheduled_departure"}).with_columns(
        scheduled_departure=pl.Series([datetime.fromisoformat(v) if v else None for v in entities["scheduled_departure"]],
                                      dtype=pl.Datetime("us", "UTC"))
    )
    frame = get_online_features(
        redis_client, prefix=PREFIX, views=FEATURE_VIEWS, entity_rows=rows,
        features=[f for f in features if not f.startswith("on_demand:")], now=published.read_at,
        on_demand=[ON_DEMAND_FEATURES["route_dep_delay_ratio_24h_7d"], ON_DEMAND_FEATURES["scheduled_departure_hour_utc"]],
    )
    for name in names[4:]:
        served = [_from_json(v) for v in results[name]["values"]]
        assert _bits(served) == _bits(frame[name].to_list()), name
    assert results["route_flights_count_24h"]["values"] == [42, None, None, None]
    assert results["route_dep_delay_p90_24h"]["values"][:2] == ["NaN", "Infinity"]
    assert results["route_dep_delay_mean_24h"]["statuses"] == ["PRESENT", "PRESENT", "OUTSIDE_MAX_AGE", "NOT_FOUND"]
    assert results["carrier_dep_delay_mean_24h"]["statuses"] == ["PRESENT", "PRESENT", "PRESENT", "NOT_FOUND"]
    assert results["carrier_dep_delay_mean_24h"]["values"] == [12.5, None, 12.5, None]  # AA: a stored null
    # An on-demand feature takes the worst status of its inputs; request data only: PRESENT.
    assert results["route_dep_delay_ratio_24h_7d"]["statuses"] == results["route_dep_delay_mean_24h"]["statuses"]
    assert results["scheduled_departure_hour_utc"]["values"] == [14, 14, None, 23]
    stamp = results["route_dep_delay_mean_24h"]["event_timestamps"][0]
    assert datetime.fromisoformat(stamp) == published.now - timedelta(days=1)
    assert results["route_dep_delay_mean_24h"]["event_timestamps"][3] is None
    assert results["origin"]["values"] == ENTITIES["origin"]
    assert results["scheduled_departure"]["values"][0] == "2024-05-01T14:30:00+00:00"


def test_full_feature_names(client: TestClient) -> None:
    response = _post(client, {"features": [ROUTE_FEATURES[0], "on_demand:route_dep_delay_ratio_24h_7d"],
                              "entities": ENTITIES, "full_feature_names": True})
    assert response.json()["metadata"]["feature_names"] == [
        "origin", "dest", "route_delay_stats__route_dep_delay_mean_24h", "on_demand__route_dep_delay_ratio_24h_7d",
    ]


BAD_REQUESTS: list[tuple[str, Any, int, str]] = [
    ("missing features", {"entities": ENTITIES}, 422, "features"),
    ("empty features", {"features": [], "entities": ENTITIES}, 422, "features"),
    ("extra field", {"features": ROUTE_FEATURES, "entities": ENTITIES, "max_age": 3}, 422, "max_age"),
    ("entities not a mapping", {"features": ROUTE_FEATURES, "entities": ["JFK"]}, 422, "entities"),
    ("full_feature_names not a bool", {"features": ROUTE_FEATURES, "entities": ENTITIES, "full_feature_names": "yes"},
     422, "full_feature_names"),
    ("no colon", {"features": ["route_dep_delay_mean_24h"], "entities": ENTITIES}, 422,
     "'route_dep_delay_mean_24h' is not of the form 'view:feature'"),
    ("unknown view", {"features": ["nope:x"], "entities": ENTITIES}, 404, "unknown feature view 'nope'"),
    ("unknown feature", {"features": ["route_delay_stats:route_magic_24h"], "entities": ENTITIES}, 404,
     "view 'route_delay_stats' has no feature 'route_magic_24h'"),
    ("unknown on-demand", {"features": ["on_demand:magic"], "entities": ENTITIES}, 404, "unknown on-demand feature 'magic'"),
    ("duplicate", {"features": [ROUTE_FEATURES[0], ROUTE_FEATURES[0]], "entities": ENTITIES}, 422, "requested twice"),
    ("missing key", {"features": ROUTE_FEATURES, "entities": {"origin": ["JFK"]}}, 422,
     "missing column(s) 'dest' (join key of view 'route_delay_stats')"),
    ("unknown column", {"features": ROUTE_FEATURES, "entities": {**ENTITIES, "tailnum": ["N1"] * 4}}, 422,
     "['tailnum'] are neither join keys"),
    ("integer key", {"features": ROUTE_FEATURES, "entities": {"origin": ["JFK", 7], "dest": ["LAX", "ORD"]}}, 422,
     "entity key 'origin' expects strings (String); position 1 is integer 7"),
    ("null key", {"features": ROUTE_FEATURES, "entities": {"origin": [None], "dest": ["LAX"]}}, 422,
     "entity key 'origin' expects strings (String); position 0 is null"),
    ("nested key", {"features": ROUTE_FEATURES, "entities": {"origin": [["JFK"]], "dest": ["LAX"]}}, 422,
     "position 0 is list"),
    ("lengths differ", {"features": ROUTE_FEATURES, "entities": {"origin": ["JFK", "EWR"], "dest": ["LAX"]}}, 422,
     "same number of values, got {'origin': 2, 'dest': 1}"),
    ("no rows", {"features": ROUTE_FEATURES, "entities": {"origin": [], "dest": []}}, 422, "no entity rows"),
    ("too many", {"features": ROUTE_FEATURES, "entities": {"origin": ["JFK"] * 11, "dest": ["LAX"] * 11}}, 413,
     "11 rows requested, more than this server's limit of 10"),
    ("naive request time", {"features": ["on_demand:scheduled_departure_hour_utc"],
                            "entities": {"scheduled_departure": ["2024-05-01T14:30:00"]}}, 422,
     "request column 'scheduled_departure' expects ISO-8601 timestamps with a UTC offset"),
    ("request time not a string", {"features": ["on_demand:scheduled_departure_hour_utc"],
                                   "entities": {"scheduled_departure": [1714573800]}}, 422,
     "'scheduled_departure' expects ISO-8601"),
]


@pytest.mark.parametrize(("body", "status", "message"), [case[1:] for case in BAD_REQUESTS],
                         ids=[case[0] for case in BAD_REQUESTS])
def test_bad_requests_get_a_4xx_naming_the_problem(
    make_app: Callable[..., FastAPI], body: Any, status: int, message: str
) -> None:
    with TestClient(make_app(max_entities=10), raise_server_exceptions=True) as test_client:
        response = _post(test_client, body)
    assert response.status_code == status, response.text
    assert message in json.dumps(response.json()) or message in response.json()["detail"], response.text


def test_malformed_json_and_oversized_bodies(make_app: Callable[..., FastAPI]) -> None:
    with TestClient(make_app(max_body_bytes=1000)) as test_client:
        broken = test_client.post("/get-online-features", content=b'{"features": [', headers={"content-type": "application/json"})
        assert broken.status_code == 422 and "json" in broken.text.lower()
        big = _post(test_client, {"features": ROUTE_FEATURES, "entities": {"origin": ["JFK"] * 200, "dest": ["LAX"] * 200}})
        assert big.status_code == 413 and "exceeds this server's limit of 1000 bytes" in big.json()["detail"]
        # Without a Content-Length (chunked), the limit is enforced as the body streams in.
        chunked = test_client.post("/get-online-features", content=iter([b" " * 600, b" " * 600]),
                                   headers={"content-type": "application/json"})
        assert chunked.status_code == 413 and "limit of 1000 bytes" in chunked.json()["detail"]


def test_api_key_is_required_when_configured(make_app: Callable[..., FastAPI]) -> None:
    body = {"features": ROUTE_FEATURES[:1], "entities": ENTITIES}
    with TestClient(make_app(api_key="s3cret-key")) as test_client:
        missing = _post(test_client, body)
        assert missing.status_code == 401
        assert "X-API-Key" in missing.json()["detail"] and missing.headers["www-authenticate"] == "APIKey"
        assert _post(test_client, body, headers={"X-API-Key": "wrong"}).status_code == 401
        assert _post(test_client, body, headers={"X-API-Key": "s3cret-ke"}).status_code == 401
        ok = _post(test_client, body, headers={"X-API-Key": "s3cret-key"})
        assert ok.status_code == 200, ok.text
        assert test_client.get("/health").status_code == 200  # load balancers probe without a key
        spec = test_client.get("/openapi.json").json()
        assert "APIKeyHeader" in spec["components"]["securitySchemes"]
    with pytest.raises(ValueError, match="empty"):
        make_app(api_key="")


def test_health_and_openapi(client: TestClient) -> None:
    health = client.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    spec = client.get("/openapi.json").json()
    operation = spec["paths"]["/get-online-features"]["post"]
    assert {"200", "401", "404", "413", "422", "503"} <= set(operation["responses"])
    assert "GetOnlineFeaturesRequest" in spec["components"]["schemas"]
    assert "/health" in spec["paths"]
    assert client.get("/docs").status_code == 200


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _app_for(url_port: int, **overrides: Any) -> FastAPI:
    def factory() -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=url_port, socket_timeout=5, socket_connect_timeout=5)

    return create_app(redis_client_factory=factory, prefix=PREFIX, views=FEATURE_VIEWS,
                      on_demand=ON_DEMAND_FEATURES, **overrides)


def test_redis_refusing_connections_gives_503_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the resource's client (bounded retries), a dead Redis is reported at once, with
    the connection error; the deadline is only the backstop."""
    monkeypatch.setenv("FEATURE_PIPELINES_REDIS_URL", f"redis://127.0.0.1:{_closed_port()}/0")
    resource = RedisResource(key_prefix=PREFIX)
    app = create_app(redis_client_factory=resource.client, prefix=PREFIX, views=FEATURE_VIEWS,
                     on_demand=ON_DEMAND_FEATURES)
    with TestClient(app) as test_client:
        began = time.monotonic()
        response = _post(test_client, {"features": ROUTE_FEATURES, "entities": ENTITIES})
        health = test_client.get("/health")
        elapsed = time.monotonic() - began
    assert response.status_code == 503, response.text
    assert response.json()["detail"].startswith("online store (Redis) unavailable: ConnectionError")
    assert health.status_code == 503 and health.json()["status"] == "unavailable"
    assert "ConnectionError" in health.json()["redis"]
    assert elapsed < 1.0


def test_unconfigured_redis_gives_503_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEATURE_PIPELINES_REDIS_URL", raising=False)
    resource = RedisResource(key_prefix=PREFIX)
    app = create_app(redis_client_factory=resource.client, prefix=PREFIX, views=FEATURE_VIEWS,
                     on_demand=ON_DEMAND_FEATURES)
    with TestClient(app) as test_client:
        response = _post(test_client, {"features": ROUTE_FEATURES, "entities": ENTITIES})
    assert response.status_code == 503
    assert "FEATURE_PIPELINES_REDIS_URL" in response.json()["detail"]


def test_redis_that_never_answers_gives_503_within_the_deadline() -> None:
    """A server that accepts connections but never replies (a hung Redis): the client's own
    timeouts here are 5 s, so only the server's deadline can answer in time."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        app = _app_for(silent.getsockname()[1], request_timeout_s=1.0, health_timeout_s=0.3)
        with TestClient(app) as test_client:
            began = time.monotonic()
            response = _post(test_client, {"features": ROUTE_FEATURES, "entities": ENTITIES})
            elapsed = time.monotonic() - began
            assert response.status_code == 503 and "did not answer within 1 s" in response.json()["detail"]
            assert elapsed < 2.0
            began = time.monotonic()
            health = test_client.get("/health")
            assert health.status_code == 503 and "did not answer PING within 0.3 s" in health.json()["redis"]
            assert time.monotonic() - began < 1.0
