"""Consumers at the feature server: who is who by API key, and PII kept from those excluding it.

The test-only `aircraft_registry` view (features/test_access.py) holds one PII feature; it is
published to the real session redis-server next to the catalog's route view.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import polars as pl
import pytest
import redis

from feature_pipelines.features.on_demand import ON_DEMAND_FEATURES, OnDemandFeature
from feature_pipelines.online.local_server import LocalRedisServer
from feature_pipelines.online.publish import publish
from feature_pipelines.online.table import OnlineTable
from feature_pipelines.serving.app import create_app
from feature_pipelines.serving.cli import app_from_env
from feature_pipelines.serving.consumers import CONSUMERS_ENV_VAR, ConsumerConfigError, ConsumerKey, consumers_from_env
from feature_pipelines_tests.features.test_access import PII_FEATURE, PII_REF, PII_VIEW, SEATS_REF, VIEWS
from feature_pipelines_tests.serving.conftest import PREFIX, Published, TestClient

ADMIN_KEY = "admin-key-0a1b2c"
PRICING_KEY = "pricing-key-3d4e5f"
FRAUD_KEY = "fraud-key-6a7b8c"
DASHBOARD_KEY = "dashboard-key-9d0e1f"
KEYS = [ADMIN_KEY, PRICING_KEY, FRAUD_KEY, DASHBOARD_KEY]
CONSUMERS_JSON = (
    '{"pricing": {"api_key_env": "TEST_PRICING_KEY"},'
    ' "fraud": {"api_key_env": "TEST_FRAUD_KEY", "exclude_pii": false},'
    ' "dashboard": {"api_key_env": "TEST_DASHBOARD_KEY", "exclude_pii": true, "allowed_views": ["route_delay_stats"]}}'
)
ROUTE_REF = "route_delay_stats:route_dep_delay_mean_24h"
OWNER_NAME_LENGTH = OnDemandFeature(
    name="owner_name_length", dtype="int64", expression=pl.col(PII_FEATURE).str.len_chars().cast(pl.Int64),
    inputs=(PII_REF,),
)


@pytest.fixture
def consumer_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CONSUMERS_ENV_VAR, CONSUMERS_JSON)
    monkeypatch.setenv("TEST_PRICING_KEY", PRICING_KEY)
    monkeypatch.setenv("TEST_FRAUD_KEY", FRAUD_KEY)
    monkeypatch.setenv("TEST_DASHBOARD_KEY", DASHBOARD_KEY)


@pytest.fixture
def client(published: Published, redis_client: redis.Redis, consumer_env: None) -> Iterator[TestClient]:
    """The server over the PII view and the catalog's route view, with an admin key and the
    three consumers of CONSUMERS_JSON."""
    now = datetime.now(timezone.utc)
    frame = pl.DataFrame({
        "tailnum": ["N1", "N2"],
        "event_timestamp": pl.Series([now - timedelta(hours=1)] * 2, dtype=pl.Datetime("us", "UTC")),
        PII_FEATURE: ["Jane Doe", None], "aircraft_seats_latest": [4, 180],
    })
    publish(redis_client, OnlineTable.for_view(PII_VIEW, PREFIX), frame)
    server: LocalRedisServer = published.server
    app = create_app(
        redis_client_factory=lambda: server.client(socket_timeout=2),
        prefix=PREFIX, views=VIEWS, on_demand={"owner_name_length": OWNER_NAME_LENGTH},
        api_key=ADMIN_KEY, consumers=consumers_from_env(), now=lambda: published.read_at,
    )
    with TestClient(app) as test_client:
        yield test_client


def _ask(client: TestClient, features: list[str], key: str | None) -> Any:
    entities: dict[str, list[str]] = {}
    if any(not f.startswith("route_delay_stats:") for f in features):
        entities["tailnum"] = ["N1", "N2"]
    if any(f.startswith("route_delay_stats:") for f in features):
        entities.update(origin=["JFK", "EWR"], dest=["LAX", "ORD"])
    headers = {"X-API-Key": key.encode()} if key is not None else {}  # bytes: non-ASCII keys go as UTF-8
    return client.post("/get-online-features", json={"features": features, "entities": entities}, headers=headers)


def test_a_consumer_excluding_pii_gets_403_naming_the_feature(client: TestClient) -> None:
    refused = _ask(client, [SEATS_REF, PII_REF], PRICING_KEY)
    assert refused.status_code == 403, refused.text
    assert refused.json()["detail"] == (
        "consumer 'pricing' may not read feature(s): "
        "'aircraft_registry:aircraft_owner_name_latest' (PII, excluded for this consumer)"
    )
    served = _ask(client, [SEATS_REF], PRICING_KEY)
    assert served.status_code == 200, served.text
    assert served.json()["results"][1]["values"] == [4, 180]


def test_pii_is_served_to_a_consumer_allowed_it_and_to_the_admin_key(client: TestClient) -> None:
    for key in (FRAUD_KEY, ADMIN_KEY):
        response = _ask(client, [PII_REF, SEATS_REF], key)
        assert response.status_code == 200, response.text
        assert response.json()["results"][1]["values"] == ["Jane Doe", None]


def test_an_on_demand_feature_over_pii_is_refused_too(client: TestClient) -> None:
    refused = _ask(client, ["on_demand:owner_name_length"], PRICING_KEY)
    assert refused.status_code == 403
    assert "'on_demand:owner_name_length' (computed from refused input(s)" in refused.json()["detail"]
    allowed = _ask(client, ["on_demand:owner_name_length"], FRAUD_KEY)
    assert allowed.status_code == 200 and allowed.json()["results"][1]["values"] == [8, None]


def test_allowed_views_limit_a_consumer(client: TestClient) -> None:
    assert _ask(client, [ROUTE_REF], DASHBOARD_KEY).status_code == 200
    refused = _ask(client, [ROUTE_REF, SEATS_REF], DASHBOARD_KEY)
    assert refused.status_code == 403
    assert "view 'aircraft_registry' is not among its allowed views ['route_delay_stats']" in refused.json()["detail"]


def test_without_a_known_key_nothing_is_served(client: TestClient) -> None:
    for key in (None, "", "pricing", PRICING_KEY[:-1], PRICING_KEY + "x", "\u00e9"):
        response = _ask(client, [SEATS_REF], key)
        assert response.status_code == 401, (key, response.text)
    assert client.get("/health").status_code == 200


def test_keys_never_reach_logs_or_responses(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    texts = [_ask(client, [PII_REF], key).text for key in (*KEYS, "wrong")]
    texts.append(repr(consumers_from_env()))
    texts.append(client.get("/openapi.json").text)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "refused consumer 'pricing'" in logged  # refusals are logged, by name
    for key in KEYS:
        assert key not in logged and all(key not in text for text in texts)


def test_app_from_env_wires_the_consumers(consumer_env: None, published: Published,
                                          monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """The `serve` factory reads FEATURE_PIPELINES_CONSUMERS: the catalog's views, a consumer
    restricted to routes, the admin key from FEATURE_PIPELINES_API_KEY."""
    monkeypatch.setenv("FEATURE_PIPELINES_REDIS_URL", published.server.url)
    monkeypatch.setenv("FEATURE_PIPELINES_REDIS_PREFIX", PREFIX)
    monkeypatch.setenv("FEATURE_PIPELINES_API_KEY", ADMIN_KEY)
    monkeypatch.setenv("FEATURE_PIPELINES_SERVE_REQUEST_LOG", "0")
    monkeypatch.delenv("FEATURE_PIPELINES_REDIS_PASSWORD", raising=False)
    carrier = "carrier_delay_stats:carrier_dep_delay_mean_24h"
    with TestClient(app_from_env()) as test_client:
        def ask(features: list[str], key: str) -> Any:
            entities = {"origin": ["JFK"], "dest": ["LAX"], **({"carrier": ["UA"]} if carrier in features else {})}
            return test_client.post("/get-online-features", json={"features": features, "entities": entities},
                                    headers={"X-API-Key": key})
        assert ask([ROUTE_REF, "on_demand:route_dep_delay_ratio_24h_7d"], DASHBOARD_KEY).status_code == 200
        refused = ask([ROUTE_REF, carrier], DASHBOARD_KEY)
        assert refused.status_code == 403 and "consumer 'dashboard'" in refused.json()["detail"]
        assert ask([ROUTE_REF, carrier], ADMIN_KEY).status_code == 200
        assert ask([ROUTE_REF], "nobody").status_code == 401


CONFIG_ERRORS = [
    ("not json", "{", {}, "FEATURE_PIPELINES_CONSUMERS is not valid JSON"),
    ("not an object", "[]", {}, "must be a JSON object of consumer name -> settings, got list"),
    ("entry not an object", '{"a": 1}', {}, "consumer 'a' must be an object, got int"),
    ("unknown field", '{"a": {"api_key_env": "K", "api_key": "inline"}}', {"K": "k1"},
     "consumer 'a' has unknown field(s) ['api_key']"),
    ("no key variable", '{"a": {}}', {}, "consumer 'a' needs \"api_key_env\""),
    ("unset key", '{"a": {"api_key_env": "UNSET_KEY_VAR"}}', {}, "its key variable UNSET_KEY_VAR is unset or empty"),
    ("empty key", '{"a": {"api_key_env": "K"}}', {"K": " "}, "its key variable K is unset or empty"),
    ("exclude_pii not a bool", '{"a": {"api_key_env": "K", "exclude_pii": "no"}}', {"K": "k1"},
     "\"exclude_pii\" must be true or false, got 'no'"),
    ("views not a list", '{"a": {"api_key_env": "K", "allowed_views": "route_delay_stats"}}', {"K": "k1"},
     "\"allowed_views\" must be a list of view names"),
    ("shared key", '{"a": {"api_key_env": "K"}, "b": {"api_key_env": "L"}}', {"K": "same-secret", "L": "same-secret"},
     "consumers 'a' and 'b' have the same API key"),
]


@pytest.mark.parametrize(("raw", "extra_env", "message"), [c[1:] for c in CONFIG_ERRORS], ids=[c[0] for c in CONFIG_ERRORS])
def test_bad_consumer_configuration_is_refused_without_revealing_keys(
    raw: str, extra_env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConsumerConfigError) as error:
        consumers_from_env({CONSUMERS_ENV_VAR: raw, **extra_env})
    assert message in str(error.value)
    assert all(value not in str(error.value) for value in extra_env.values() if value.strip())


def test_configuration_defaults_and_the_admin_key_clash() -> None:
    assert consumers_from_env({}) == []
    (only,) = consumers_from_env({CONSUMERS_ENV_VAR: '{"a": {"api_key_env": "K"}}', "K": "k-1"})
    assert only.policy.exclude_pii is True and only.policy.allowed_views is None and "k-1" not in repr(only)
    with pytest.raises(ConsumerConfigError, match="'a' and '<FEATURE_PIPELINES_API_KEY>' have the same API key"):
        create_app(redis_client_factory=lambda: redis.Redis(), prefix=PREFIX, views=VIEWS, on_demand=ON_DEMAND_FEATURES,
                   api_key="k-1", consumers=[ConsumerKey(only.policy, "k-1")])


def test_pii_served_to_an_allowed_consumer_is_never_written_to_the_request_log(
    published: Published, redis_client: redis.Redis, consumer_env: None, tmp_path: Any
) -> None:
    from feature_pipelines.names import FEATURE_LOG_TABLE
    from feature_pipelines.offline.delta_store import DeltaStore
    from feature_pipelines.serving.request_log import RequestLog, key_columns_of

    now = datetime.now(timezone.utc)
    publish(redis_client, OnlineTable.for_view(PII_VIEW, PREFIX), pl.DataFrame({
        "tailnum": ["N1"], "event_timestamp": pl.Series([now - timedelta(hours=1)], dtype=pl.Datetime("us", "UTC")),
        PII_FEATURE: ["Jane Doe"], "aircraft_seats_latest": [4]}))
    store = DeltaStore(root=str(tmp_path / "lake"))
    log = RequestLog(store, key_columns=key_columns_of(list(VIEWS.values())), flush_interval_s=60)
    app = create_app(redis_client_factory=lambda: published.server.client(socket_timeout=2), prefix=PREFIX,
                     views=VIEWS, on_demand={"owner_name_length": OWNER_NAME_LENGTH}, consumers=consumers_from_env(),
                     request_log=log, now=lambda: published.read_at)
    with TestClient(app) as test_client:
        response = test_client.post("/get-online-features", headers={"X-API-Key": FRAUD_KEY}, json={
            "features": [PII_REF, SEATS_REF, "on_demand:owner_name_length"], "entities": {"tailnum": ["N1"]}})
        assert response.status_code == 200, response.text
        assert [r["values"] for r in response.json()["results"][1:]] == [["Jane Doe"], [4], [8]]
    logged = store.read(FEATURE_LOG_TABLE)  # the app closed (flushed) the log on shutdown
    assert logged["feature"].to_list() == ["aircraft_seats_latest"]
    assert "Jane Doe" not in str(logged.rows())
