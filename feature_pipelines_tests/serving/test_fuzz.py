"""The feature server fuzzed: schema-driven (schemathesis) and free-form JSON (hypothesis).

Whatever arrives, the answer is a 200 or a documented 4xx with a JSON `detail`, never a 5xx and
never a crash; Redis is up here, so the documented 503 must not appear either. Both fuzzers are
seeded and bounded (derandomized, capped examples) so a run is repeatable and quick.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import polars as pl
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from feature_pipelines.features.services import FEATURE_SERVICES, raw_service_schema
from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.offline.fitted_statistics import fit_statistics, write_fitted_statistics
from feature_pipelines.serving.service_statistics import ServiceStatistics
from feature_pipelines_tests.serving.conftest import Published, TestClient

ROUTE_FEATURES = [
    "route_delay_stats:route_dep_delay_mean_24h",
    "route_delay_stats:route_flights_count_24h",
    "route_delay_stats:route_dep_delay_p90_24h",
]
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection]


@pytest.fixture
def app(make_app: Callable[..., FastAPI], published: Published) -> FastAPI:
    """The server with every feature service of the catalog ready (its statistics fitted), so
    that service requests and GET /feature-services are fuzzed on their success paths too."""
    return make_app(max_entities=50, max_body_bytes=64 * 1024, service_statistics=_fitted_catalog(published.store))


def _fitted_catalog(store: DeltaStore) -> ServiceStatistics:
    """Each catalog service's statistics fitted on a small frame of its raw vector (version 1)."""
    for service in FEATURE_SERVICES.values():
        if service.needs_statistics:
            schema = raw_service_schema(service)
            frame = pl.DataFrame({name: [1, 2, None, 4, 7] if dtype.is_integer() else [1.5, 2.5, None, 4.0, 8.25]
                                  for name, dtype in schema.items()}, schema=schema)
            write_fitted_statistics(store, service, fit_statistics(frame, service), training_set="synthetic",
                                    training_set_version=0, training_rows=frame.height, fitted_at=datetime.now(UTC))
    statistics = ServiceStatistics.load(store, FEATURE_SERVICES)
    assert not statistics.missing, statistics.missing
    return statistics


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_schema_fuzzing_finds_no_server_error_and_conformant_responses(app: FastAPI, mode: GenerationMode) -> None:
    """Every operation of the OpenAPI spec, with schema-valid (positive) and schema-breaking
    (negative) data. Schema-breaking data must be refused (negative_data_rejection); every answer
    must be documented, of the documented content type and schema.

    (The strategy is driven by hypothesis directly rather than through `schema.parametrize`
    and `from_fixture`, whose lazy loader breaks on pytest 9's nodes.)
    """
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)

    @given(case=schema.as_strategy(mode))
    @settings(max_examples=120, derandomize=True, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    def fuzz(case: Any) -> None:
        case.call_and_validate(checks=CHECKS)

    fuzz()


# --- free-form JSON bodies -----------------------------------------------------------------------

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([10**400, -(10**400), 2**63, -(2**63) - 1, 0]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "nan", "1e999", "", "\x00", "\ud800", "\U0001f600",
                     "EWR", "ORD", "JFK", "LAX", "2024-05-01T14:30:00Z", "2024-02-30T00:00:00Z",
                     "9999-12-31T23:59:59+14:00", "0001-01-01T00:00:00-23:59", "-1", "route_delay_stats:"]),
    st.text(st.characters(codec=None, exclude_categories=()), max_size=12),
)
_JUNK = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(st.characters(exclude_categories=()), max_size=6), inner,
                                            max_size=4)),
    max_leaves=12,
)
_REFERENCES = st.one_of(
    st.sampled_from([*ROUTE_FEATURES, "carrier_delay_stats:carrier_dep_delay_mean_24h",
                     "on_demand:route_dep_delay_ratio_24h_7d", "on_demand:scheduled_departure_hour_utc",
                     "on_demand:", ":", "route_delay_stats:nope", "nope:x", "on_demand:route_dep_delay_ratio_24h_7d:x"]),
    st.text(max_size=20),
)
_COLUMNS = st.sampled_from(["origin", "dest", "carrier", "scheduled_departure", "tailnum", "", "\ud800"])


@st.composite
def _plausible_bodies(draw: st.DrawFn) -> Any:
    """Bodies shaped like requests, so the fuzzing reaches parsing, planning and the Redis read
    rather than stopping at the schema: real references, real column names, junk values."""
    height = draw(st.integers(min_value=0, max_value=4))
    columns = draw(st.lists(_COLUMNS, min_size=1, max_size=4, unique=True))
    entities: dict[str, Any] = {}
    for column in columns:
        if draw(st.booleans()):
            entities[column] = draw(st.lists(_SCALARS, min_size=height, max_size=height))
        else:
            entities[column] = draw(_JUNK)
    body: dict[str, Any] = {"features": draw(st.lists(_REFERENCES, min_size=0, max_size=4)), "entities": entities}
    if draw(st.booleans()):
        body["full_feature_names"] = draw(_SCALARS)
    if draw(st.integers(0, 5)) == 0:
        body[draw(st.text(max_size=5))] = draw(_JUNK)
    return body


def _encode(body: Any) -> bytes:
    """JSON as a hostile client may send it: NaN and Infinity literals, lone surrogates escaped."""
    return json.dumps(body, allow_nan=True).encode()


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def _assert_answered(response: Any, body: bytes) -> None:
    assert response.status_code == 200 or 400 <= response.status_code < 500, (
        f"{response.status_code} for body {body[:500]!r}: {response.text[:500]}"
    )
    payload = response.json()  # always JSON, whatever the outcome
    if response.status_code != 200:
        assert "detail" in payload, response.text
    else:
        assert set(payload) == {"metadata", "results"}


@given(body=st.one_of(_JUNK, _plausible_bodies()))
@settings(max_examples=200, derandomize=True, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_random_json_bodies_get_200_or_4xx(client: TestClient, body: Any) -> None:
    raw = _encode(body)
    response = client.post("/get-online-features", content=raw, headers={"content-type": "application/json"})
    _assert_answered(response, raw)


@given(raw=st.one_of(st.binary(max_size=200), st.sampled_from([
    b"", b"null", b"[]", b"{}", b'{"features": NaN}', b'{"features": ["a:b"], "entities": {"x": [1e999]}}',
    b'{"features": ["route_delay_stats:route_dep_delay_mean_24h"], "entities": {"origin": ["\\ud800"], "dest": ["x"]}}',
    b"\xff\xfe{", b'{"a": ' * 5000, b"[" * 100_000,
])), content_type=st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded", ""]))
@settings(max_examples=100, derandomize=True, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_random_bytes_get_200_or_4xx(client: TestClient, raw: bytes, content_type: str) -> None:
    response = client.post("/get-online-features", content=raw, headers={"content-type": content_type})
    _assert_answered(response, raw)


def test_the_fuzzers_reach_the_success_path(client: TestClient) -> None:
    """A plausible body with real keys is served: the harness posts what the server accepts, so
    the 4xx the fuzzers see are the server's refusals, not the harness's mistakes."""
    body = {"features": ROUTE_FEATURES, "entities": {"origin": ["JFK"], "dest": ["LAX"]}}
    response = client.post("/get-online-features", content=_encode(body), headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    assert math.isnan(float(response.json()["results"][4]["values"][0]))


def test_a_lone_surrogate_key_is_a_422_not_a_500(client: TestClient) -> None:
    """Found by the fuzzing above: JSON may carry "\\ud800", which no UTF-8 key can hold."""
    raw = b'{"features": ["route_delay_stats:route_dep_delay_mean_24h"], "entities": {"origin": ["\\ud800"], "dest": ["x"]}}'
    response = client.post("/get-online-features", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["detail"] == "entity key 'origin': position 0 is not valid Unicode (a lone surrogate)"


def test_a_malformed_body_gets_the_documented_error_shape(client: TestClient) -> None:
    """Found by the schema fuzzing: FastAPI's own 422 (a list in `detail`) broke the documented
    ErrorResponse; now `detail` is one sentence and `errors` lists each issue."""
    response = client.post("/get-online-features", json={"features": "x", "entities": {}, "extra": 1})
    assert response.status_code == 422
    body = response.json()
    assert body["detail"].startswith("invalid request: body.features: Input should be a valid list")
    assert {tuple(e["loc"]) for e in body["errors"]} == {("body", "features"), ("body", "entities"), ("body", "extra")}
    assert all(set(e) == {"loc", "msg", "type"} for e in body["errors"])  # the input is not echoed
