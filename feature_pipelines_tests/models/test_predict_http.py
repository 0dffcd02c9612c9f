"""POST /predict against a real redis-server and a real Delta lake: the service's vector, fetched as
/get-online-features serves it, scored by the latest registered model of that service; every
prediction logged to `_serving/predictions` under the request id of its feature-log rows."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import numpy as np
import polars as pl
from fastapi import FastAPI

from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.features.services import FeatureService
from feature_pipelines.models.registry import register_model
from feature_pipelines.models.training import ModelSpec, score, train_model
from feature_pipelines.names import PREDICTIONS_TABLE
from feature_pipelines.serving.predict import PredictionLog, Predictor, ServedModels, served_vector
from feature_pipelines.serving.request_log import FEATURE_LOG_TABLE, RequestLog, key_columns_of
from feature_pipelines.training.frames import TrainingFrame
from feature_pipelines.training.spec import FLIGHT_DELAY_TRAINING_SET, PREDICTION_TIMESTAMP
from feature_pipelines_tests.serving.conftest import Published, TestClient

SERVICE = FeatureService(
    name="route_and_carrier", owner="ml@example", description="raw route and carrier delays",
    features=("route_delay_stats:route_dep_delay_mean_24h", "carrier_delay_stats:carrier_dep_delay_mean_24h",
              "route_delay_stats:route_flights_count_24h"),
)
UNMODELLED = FeatureService(name="no_model_yet", owner="ml@example", description="never trained",
                            features=("route_delay_stats:route_dep_delay_mean_24h",))
SERVICES = {s.name: s for s in (SERVICE, UNMODELLED)}
ENTITIES = {"origin": ["JFK", "EWR", "XXX", "LGA"], "dest": ["LAX", "ORD", "YYY", "ATL"], "carrier": ["UA", "AA", "UA", "ZZ"]}


def _register(published: Published) -> None:
    """A model of SERVICE trained on a synthetic frame of its vector (late when the route is late)."""
    rng = np.random.default_rng(0)
    rows = 600
    delay = rng.exponential(15.0, rows)
    frame = pl.DataFrame({
        PREDICTION_TIMESTAMP: [published.now - timedelta(hours=rows - i) for i in range(rows)],
        "route_dep_delay_mean_24h": delay, "carrier_dep_delay_mean_24h": rng.normal(10, 5, rows),
        "route_flights_count_24h": rng.poisson(8, rows).astype(np.int64),
        "arrived_late_15m": rng.random(rows) < 1 / (1 + np.exp(-(delay - 15) / 5)),
    }).with_columns(pl.col(PREDICTION_TIMESTAMP).dt.cast_time_unit("us"))
    spec = ModelSpec(name="route_model", training=FLIGHT_DELAY_TRAINING_SET, service=SERVICE, max_iter=20)
    trained = train_model(TrainingFrame(frame, SERVICE, table_version=0, statistics=None), spec)
    register_model(published.store, trained, reference={"bins": []}, registered_at=published.now)


def test_predict_scores_the_served_vector_and_logs_it(published: Published, make_app: Callable[..., FastAPI]) -> None:
    _register(published)
    models = ServedModels.load(published.store, SERVICES)
    assert set(models.loaded) == {SERVICE.name} and "no model is registered" in models.missing[UNMODELLED.name]
    request_log = RequestLog(published.store, key_columns=key_columns_of(list(FEATURE_VIEWS.values())))
    app = make_app(services=SERVICES, request_log=request_log,
                   predictor=Predictor(models, PredictionLog(published.store)))
    outcome_keys = {"flight_number": [1, 2, 3, 4], "scheduled_departure_at": ["2026-01-01T10:00:00+00:00"] * 4}
    with TestClient(app) as client:
        features = client.post("/get-online-features", json={"feature_service": SERVICE.name, "entities": ENTITIES})
        predicted = client.post("/predict", json={"feature_service": SERVICE.name, "entities": ENTITIES,
                                                  "outcome_keys": outcome_keys})
        missing = client.post("/predict", json={"feature_service": UNMODELLED.name, "entities": {k: v[:1] for k, v in ENTITIES.items() if k != "carrier"}})
        unknown = client.post("/predict", json={"feature_service": "nope", "entities": ENTITIES})
        ragged = client.post("/predict", json={"feature_service": SERVICE.name, "entities": ENTITIES,
                                               "outcome_keys": {"flight_number": [1]}})
    assert features.status_code == 200 and predicted.status_code == 200, predicted.text
    body = predicted.json()
    vector = served_vector(features.content, SERVICE)
    assert vector["route_dep_delay_mean_24h"].null_count() < vector.height  # real values were served
    expected = score(models.loaded[SERVICE.name].estimator, vector, SERVICE)
    assert body["scores"] == expected.tolist()  # the same vector, the same model, the same bits
    assert (body["model_name"], body["model_version"], body["feature_service_version"]) == ("route_model", 1, SERVICE.version)
    assert missing.status_code == 503 and "no model is registered" in missing.json()["detail"]
    assert unknown.status_code == 404 and ragged.status_code == 422

    logged = published.store.read(PREDICTIONS_TABLE).sort("entity_index")  # flushed when the app stopped
    assert logged["request_id"].to_list() == [body["request_id"]] * 4
    assert logged["score"].to_list() == body["scores"]
    assert logged["model_version"].to_list() == [1] * 4
    assert '"flight_number": 3' in logged["outcome_key"][2] and '"origin": "XXX"' in logged["entity_key"][2]
    served = published.store.read(FEATURE_LOG_TABLE).filter(pl.col("request_id") == body["request_id"])
    assert served.height == 4 * len(SERVICE.features)  # the prediction's inputs, under its request id
    assert served["request_time"].unique().to_list() == logged["request_time"].unique().to_list()
