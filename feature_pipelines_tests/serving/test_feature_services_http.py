"""Feature services over HTTP, against a real redis-server and a real Delta lake: a service's
vector comes in its declared order with its fitted transformations applied, exactly as the
FeatureStore facade (and so the training frame) gives it; GET /feature-services lists every
service and whether it is ready; a service without its statistics answers 503 saying why; the
request log records the service asked for and the values read before transformation."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import polars as pl
from fastapi import FastAPI

from feature_pipelines.feature_store import FeatureStore
from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.features.on_demand import ON_DEMAND_FEATURES
from feature_pipelines.features.services import FeatureService, service_schema
from feature_pipelines.features.transforms import ClipBounds, Impute, ImputeStrategy, Standardize
from feature_pipelines.offline.fitted_statistics import fit_statistics, write_fitted_statistics
from feature_pipelines.serving.request_log import FEATURE_LOG_TABLE, RequestLog, key_columns_of
from feature_pipelines.serving.service_statistics import ServiceStatistics
from feature_pipelines_tests.serving.conftest import PREFIX, Published, TestClient

# Views interleaved on purpose (a read groups them by view): the vector follows the service.
PLAIN = FeatureService(
    name="route_and_carrier", owner="ml@example", description="raw, views interleaved",
    features=("route_delay_stats:route_dep_delay_mean_24h", "carrier_delay_stats:carrier_dep_delay_mean_24h",
              "route_delay_stats:route_flights_count_24h"),
)
SCALED = FeatureService(
    name="route_and_carrier_scaled", owner="ml@example", description="imputed and standardised",
    features=PLAIN.features,
    transforms=(Impute("route_dep_delay_mean_24h", ImputeStrategy.MEDIAN), Standardize("route_dep_delay_mean_24h"),
                Impute("carrier_dep_delay_mean_24h", ImputeStrategy.MEAN), ClipBounds("route_flights_count_24h", lower=0.0)),
    statistics_version=1,
)
UNFITTED = FeatureService(
    name="never_fitted", owner="ml@example", description="pins statistics nobody fitted",
    features=("route_delay_stats:route_dep_delay_mean_24h",),
    transforms=(Standardize("route_dep_delay_mean_24h"),), statistics_version=1,
)
SERVICES = {s.name: s for s in (PLAIN, SCALED, UNFITTED)}
ENTITIES = {"origin": ["JFK", "EWR", "XXX", "LGA"], "dest": ["LAX", "ORD", "YYY", "ATL"], "carrier": ["UA", "AA", "UA", "ZZ"]}


def _fit(published: Published) -> ServiceStatistics:
    """Statistics of SCALED fitted on a training-like frame of its raw vector, written as version 1."""
    training = pl.DataFrame({
        "carrier_dep_delay_mean_24h": [3.5, None, 12.25, 7.0, 1.0],
        "route_dep_delay_mean_24h": [10.0, 4.5, None, 22.75, 8.0],
        "route_flights_count_24h": [3, 7, 1, 12, 5],
    }, schema={"carrier_dep_delay_mean_24h": pl.Float64, "route_dep_delay_mean_24h": pl.Float64,
               "route_flights_count_24h": pl.Int64})
    steps = fit_statistics(training, SCALED)
    write_fitted_statistics(published.store, SCALED, steps, training_set="synthetic", training_set_version=0,
                            training_rows=training.height, fitted_at=published.now)
    return ServiceStatistics.load(published.store, SERVICES)


def _columns(body: dict[str, Any]) -> dict[str, list[Any]]:
    return dict(zip(body["metadata"]["feature_names"], (r["values"] for r in body["results"]), strict=True))


def test_a_service_serves_its_vector_in_order_transformed_as_offline(
    published: Published, make_app: Callable[..., FastAPI], redis_client: Any
) -> None:
    statistics = _fit(published)
    assert statistics.missing.keys() == {"never_fitted"}
    app = make_app(services=SERVICES, service_statistics=statistics)
    store = FeatureStore(lake=published.store, redis_client=redis_client, key_prefix=PREFIX, services=SERVICES)
    entities = pl.DataFrame(ENTITIES)
    with TestClient(app) as client:
        by_references = client.post("/get-online-features", json={"features": list(PLAIN.features), "entities": ENTITIES})
        plain = client.post("/get-online-features", json={"feature_service": PLAIN.name, "entities": ENTITIES})
        scaled = client.post("/get-online-features", json={"feature_service": SCALED.name, "entities": ENTITIES})
    assert by_references.status_code == plain.status_code == scaled.status_code == 200, scaled.text
    # The plain service: the references' values, in the service's order (carrier first).
    assert plain.json()["metadata"]["feature_names"] == [*ENTITIES, *PLAIN.column_names]
    assert by_references.json()["metadata"]["feature_names"] != plain.json()["metadata"]["feature_names"]
    assert _columns(plain.json()) == _columns(by_references.json())  # the same values, the service's order
    # The scaled service: exactly the facade's transformed vector (the training frame's function).
    expected = store.get_online_features(entities, feature_service=SCALED.name, now=published.read_at)
    served = _columns(scaled.json())
    for name in SCALED.column_names:
        assert served[name] == expected[name].to_list(), name
    assert all(v is not None for v in served["route_dep_delay_mean_24h"])  # imputed: unknown routes get the median
    assert not math.isclose(served["route_dep_delay_mean_24h"][0], _columns(plain.json())["route_dep_delay_mean_24h"][0])
    assert {name: pl.Float64 if isinstance(values[0], float) else pl.Int64 for name, values in served.items()
            if name in SCALED.column_names} == service_schema(SCALED, FEATURE_VIEWS, ON_DEMAND_FEATURES)


def test_feature_services_are_listed_with_their_readiness_and_an_unready_one_says_why(
    published: Published, make_app: Callable[..., FastAPI]
) -> None:
    app = make_app(services=SERVICES, service_statistics=_fit(published))
    with TestClient(app) as client:
        listed = client.get("/feature-services").json()["services"]
        route_only = {key: ENTITIES[key] for key in ("origin", "dest")}
        unready = client.post("/get-online-features", json={"feature_service": UNFITTED.name, "entities": route_only})
        unknown = client.post("/get-online-features", json={"feature_service": "nope", "entities": ENTITIES})
        both = client.post("/get-online-features",
                           json={"feature_service": PLAIN.name, "features": list(PLAIN.features), "entities": ENTITIES})
        neither = client.post("/get-online-features", json={"entities": ENTITIES})
    info = {service["name"]: service for service in listed}
    assert list(info) == list(SERVICES)
    assert info[SCALED.name]["ready"] and info[SCALED.name]["version"] == SCALED.version
    assert info[SCALED.name]["statistics_version"] == 1
    assert [c["name"] for c in info[PLAIN.name]["columns"]] == PLAIN.column_names
    assert [c["dtype"] for c in info[PLAIN.name]["columns"]] == ["Float64", "Float64", "Int64"]
    assert not info[UNFITTED.name]["ready"] and "no statistics" in info[UNFITTED.name]["reason"].lower()
    assert unready.status_code == 503 and "never_fitted" in unready.json()["detail"]
    assert "feature-pipelines backfill" in unready.json()["detail"]
    assert unknown.status_code == 404 and "unknown feature service 'nope'" in unknown.json()["detail"]
    assert both.status_code == 422 and neither.status_code == 422


def test_the_request_log_records_the_service_and_the_values_before_transformation(
    published: Published, make_app: Callable[..., FastAPI]
) -> None:
    log = RequestLog(published.store, key_columns=key_columns_of(list(FEATURE_VIEWS.values())))
    app = make_app(services=SERVICES, service_statistics=_fit(published), request_log=log)
    with TestClient(app) as client:
        plain = client.post("/get-online-features", json={"feature_service": PLAIN.name, "entities": ENTITIES})
        scaled = client.post("/get-online-features", json={"feature_service": SCALED.name, "entities": ENTITIES})
        by_references = client.post("/get-online-features", json={"features": list(PLAIN.features), "entities": ENTITIES})
    rows = published.store.read(FEATURE_LOG_TABLE)
    by_request = {request_id: rows.filter(pl.col("request_id") == request_id)
                  for request_id in (r.headers["X-Request-ID"] for r in (plain, scaled, by_references))}
    plain_rows, scaled_rows, reference_rows = by_request.values()
    assert plain_rows["feature_service"].unique().to_list() == [PLAIN.name]
    assert scaled_rows["feature_service"].unique().to_list() == [SCALED.name]
    assert reference_rows["feature_service"].null_count() == reference_rows.height > 0
    # The scaled service logs what it read, not what it answered: the same values as the plain one.
    key = ["entity_index", "feature"]
    assert scaled_rows.sort(key).select(*key, "value_json").equals(plain_rows.sort(key).select(*key, "value_json"))
    assert scaled_rows.height == len(SCALED.column_names) * len(ENTITIES["origin"])


def test_no_serving_module_fits_statistics() -> None:
    """The server applies fitted statistics and never computes one: nothing under serving/ or
    online/ imports the fitting functions."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "feature_pipelines"
    for folder in ("serving", "online"):
        for module in (root / folder).glob("*.py"):
            text = module.read_text()
            assert "fit_statistics" not in text and "write_fitted_statistics" not in text, module
