"""POST /predict: a feature service's vector, exactly as /get-online-features serves it, scored by
the latest registered model of that service, each prediction logged with its request.

    POST /predict
        {"feature_service": "flight_delay_v1",
         "entities": {"origin": ["EWR"], "dest": ["ORD"], "carrier": ["UA"], "tailnum": ["N14228"]},
         "outcome_keys": {"flight_number": [1545], "scheduled_departure_at": ["2013-01-01T10:15:00+00:00"]}}
    ->  {"request_id": "...", "feature_service": "flight_delay_v1", "model_name": "flight_delay_model",
         "model_version": 3, "scores": [0.21]}

The vector is fetched by the feature route itself (same authorisation, plan, deadline, statuses
and request log row), so a prediction's inputs are that request's logged values, under the same
request id. Scores go to `_serving/predictions` (`models/predictions.py`) through the request
log's buffered writer, off the request path. `outcome_keys` are not features: they identify the
predicted event so that its outcome can be joined when it becomes known.

Models are loaded once at startup (`ServedModels.load`); a service without a registered model
answers 503 naming what to materialize.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
import orjson
import polars as pl
from fastapi import Depends, FastAPI
from pydantic import BaseModel, ConfigDict, Field
from sklearn.ensemble import HistGradientBoostingClassifier

from feature_pipelines.features.access import ConsumerPolicy
from feature_pipelines.features.services import FeatureService, service_schema
from feature_pipelines.models.predictions import PredictionRecord, predictions_frame
from feature_pipelines.models.registry import (
    ModelArtefactError,
    ModelNotFoundError,
    RegisteredModel,
    latest_model,
    load_estimator,
)
from feature_pipelines.models.training import score
from feature_pipelines.names import PREDICTIONS_TABLE
from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.serving.errors import InvalidRequestError, ServiceUnavailableError
from feature_pipelines.serving.models import ERROR_RESPONSES, ErrorResponse, GetOnlineFeaturesRequest
from feature_pipelines.serving.request_log import RequestLog
from feature_pipelines.serving.server import REQUEST_ID_HEADER, FeatureServer


class PredictRequest(BaseModel):
    """A feature service's name, its entity rows column-wise, and optionally the predicted events' keys."""

    model_config = ConfigDict(extra="forbid")

    feature_service: str = Field(min_length=1, description="The service whose vector is scored (GET /feature-services).")
    entities: dict[str, list[Any]] = Field(min_length=1, description="As in /get-online-features.")
    outcome_keys: dict[str, list[Any]] | None = Field(
        default=None, description="Identifiers of each predicted event, one list per column, logged with its "
        "prediction (not features): the outcome monitor joins outcomes on them when they become known.")


class PredictResponse(BaseModel):
    request_id: str
    feature_service: str
    feature_service_version: str
    model_name: str
    model_version: int
    scores: list[float]


@dataclass(frozen=True)
class ServedModel:
    """A registered model loaded for serving."""

    registered: RegisteredModel
    estimator: HistGradientBoostingClassifier


@dataclass(frozen=True)
class ServedModels:
    """Per feature service: its latest model, or why it has none (the 503's reason)."""

    loaded: Mapping[str, ServedModel] = field(default_factory=dict)
    missing: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, store: DeltaStore, services: Mapping[str, FeatureService]) -> ServedModels:
        loaded: dict[str, ServedModel] = {}
        missing: dict[str, str] = {}
        for name, service in services.items():
            try:
                registered = latest_model(store, service)
                loaded[name] = ServedModel(registered, load_estimator(store, registered))
            except (ModelNotFoundError, ModelArtefactError) as error:
                missing[name] = str(error)
        return cls(loaded, missing)

    def for_service(self, service: FeatureService) -> ServedModel:
        found = self.loaded.get(service.name)
        if found is None:
            reason = self.missing.get(service.name, "no model was loaded for it")
            raise ServiceUnavailableError(f"feature service {service.name!r} has no model to score with: {reason}")
        return found


class PredictionLog(RequestLog):
    """The request log's buffered, retrying Delta writer, writing prediction rows to `_serving/predictions`."""

    def __init__(self, store: DeltaStore, *, table: str = PREDICTIONS_TABLE, **options: Any) -> None:
        super().__init__(store, key_columns={}, table=table, **options)

    def _to_frame(self, batch: list[Any]) -> tuple[pl.DataFrame | None, list[Any], int]:  # type: ignore[override]
        # Records are built by this module from already-validated values: a failure here is a bug, raised.
        return predictions_frame(batch), batch, sum(record.row_count for record in batch)


@dataclass(frozen=True)
class Predictor:
    """What /predict needs besides the feature server: the loaded models and where predictions go."""

    models: ServedModels
    log: PredictionLog | None = None

    async def predict(self, server: FeatureServer, body: PredictRequest, policy: ConsumerPolicy | None) -> PredictResponse:
        service = server.planner.service(body.feature_service)
        model = self.models.for_service(service)
        _check_outcome_keys(body)
        read_at = server.now()
        pinned = dataclasses.replace(server, now=lambda: read_at)  # the feature log's request_time, exactly
        features = await pinned.get_online_features(
            GetOnlineFeaturesRequest(feature_service=service.name, entities=body.entities), policy)
        request_id = features.headers[REQUEST_ID_HEADER]
        vector = served_vector(bytes(features.body), service)
        scores = await anyio.to_thread.run_sync(lambda: score(model.estimator, vector, service))
        registered = model.registered
        if self.log is not None:
            self.log.record(PredictionRecord(
                request_id=request_id, request_time=read_at, feature_service=service.name,
                feature_service_version=service.version, model_name=registered.name, model_version=registered.version,
                scores=scores.tolist(), entities=body.entities, vector=vector.to_dict(as_series=False),
                outcome_keys=body.outcome_keys,
            ))
        return PredictResponse(request_id=request_id, feature_service=service.name,
                               feature_service_version=service.version, model_name=registered.name,
                               model_version=registered.version, scores=scores.tolist())


def _check_outcome_keys(body: PredictRequest) -> None:
    if body.outcome_keys is None:
        return
    rows = {len(values) for values in body.entities.values()}
    lengths = {name: len(values) for name, values in body.outcome_keys.items()}
    if not lengths or set(lengths.values()) != rows or len(rows) != 1:
        raise InvalidRequestError(f"outcome_keys: every column must have one value per entity row ({sorted(rows)}), "
                                  f"got {lengths}")


def served_vector(body: bytes, service: FeatureService) -> pl.DataFrame:
    """The service's vector from a /get-online-features response body, in the service's dtypes
    (the wire's "NaN", "Infinity", "-Infinity" read back as floats)."""
    response = orjson.loads(body)
    columns = dict(zip(response["metadata"]["feature_names"], (r["values"] for r in response["results"])))
    schema = service_schema(service)
    return pl.DataFrame({name: _wire_values(columns[name], dtype) for name, dtype in schema.items()}, schema=schema)


def _wire_values(values: Sequence[Any], dtype: pl.DataType) -> list[Any]:
    if dtype == pl.Float64:
        return [float(v) if isinstance(v, str) else v for v in values]
    return list(values)


def add_predict_route(app: FastAPI, server: FeatureServer, predictor: Predictor) -> None:
    """Register POST /predict on the feature server's app, and run the prediction log with the app."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(application: FastAPI) -> AsyncIterator[Any]:
        if predictor.log is not None:
            predictor.log.start()
        try:
            async with inner(application) as state:
                yield state
        finally:
            if predictor.log is not None:
                await anyio.to_thread.run_sync(predictor.log.close)

    app.router.lifespan_context = lifespan

    @app.post(
        "/predict",
        response_model=PredictResponse,
        responses={422: {"model": ErrorResponse, "description": "Invalid request."}, **ERROR_RESPONSES},
        summary="Score entity rows with the latest model of a feature service (its vector fetched as "
        "/get-online-features does); every prediction is logged with its request.",
    )
    async def predict_endpoint(
        body: PredictRequest, policy: ConsumerPolicy | None = Depends(server.auth.caller_policy)  # noqa: B008 - FastAPI declares dependencies as defaults
    ) -> PredictResponse:
        return await predictor.predict(server, body, policy)
