"""The HTTP feature server: Feast-shaped online feature retrieval over the Redis online store.

    POST /get-online-features
        {"features": ["route_delay_stats:route_dep_delay_mean_24h",
                      "on_demand:route_dep_delay_ratio_24h_7d"],
         "entities": {"origin": ["EWR", "JFK"], "dest": ["ORD", "LAX"]},
         "full_feature_names": false}
    ->  {"metadata": {"feature_names": ["origin", "dest", "route_dep_delay_mean_24h",
                                        "route_dep_delay_ratio_24h_7d"]},
         "results": [{"values": [...], "statuses": [...], "event_timestamps": [...]}, ...]}

One result per column, as in Feast: first the entity columns as sent, then the features in the
order of a training frame (views in first-appearance order, each view's features in request
order), then on-demand features. `metadata.feature_names` gives that order (as
"view__feature" with `full_feature_names`). Values are exactly what `get_online_features`
returns -- the training frame's values -- with non-finite floats as the strings "NaN",
"Infinity", "-Infinity" (JSON has no such numbers; this is protobuf's JSON convention).

Statuses: PRESENT (a value was found and is within its view's TTL; the value itself may be a
stored null), NOT_FOUND (no such entity), OUTSIDE_MAX_AGE (found, but past the TTL: the value
is null, as in a training set). An on-demand feature takes the worst status of its input views.
`event_timestamps` holds the snapshot time of each value (null when there is none).

Failure modes, all answered with a JSON {"detail": ...} naming the problem, never a 500 for bad
input: a body that is not UTF-8 400; malformed body 422 (with each issue in "errors"); unknown
view or feature 404; badly formed or duplicated reference, missing/unknown/mistyped entity
column, a string that is not valid Unicode, columns of different lengths or no rows 422; more
than `max_entities` rows or a body over `max_body_bytes` (counted as it streams in) 413; missing
or wrong API key 401; a consumer asking for features its policy refuses (PII, or a view outside
its allowed views) 403 naming them; Redis unreachable or slower than `request_timeout_s` 503
(every read runs under that deadline, so a dead or hung Redis never hangs the request).

    POST /get-online-features  {"feature_service": "flight_delay_v2", "entities": {...}}
        a feature service's vector: its columns in its declared order, with its dtypes and its
        fitted transformations (the statistics version it pins) applied, exactly as its training
        frame; the request log records the service and the values read before transformation.
        A service whose statistics are not loaded answers 503 saying why and what to run.
    POST /push  {"table": "raw_flights", "events": [{<a raw_flights row>}, ...]}
        appends raw events (datetimes as integer microseconds) to the table's Redis stream, in
        order, and answers 202 with their entry ids; `feature-pipelines stream` consumes them,
        judging each with the batch path's raw rules (rejects go to a dead-letter stream with
        their reason), into the streaming views' exact tiles. At most `max_push_events` per push.
    GET /catalog
        the feature catalog page (`feature-pipelines catalog --html` writes it; 404 until then).
    GET /feature-services
        every service: owner, version, references, columns and dtypes, transformations, the
        statistics version it pins, and whether it is ready to serve.

Small requests (up to 300 entity rows; on-demand features without request columns included)
are answered by `serving.lean` without FastAPI, pydantic or a worker thread, with the same
bytes and log rows; everything else, errors included, by the FastAPI route below.

PII-tagged features, and on-demand features computed from them, are served to callers allowed
them but never written to the request log: the log is for skew monitoring, not a copy of
personal data.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl
import redis
from fastapi import Depends, FastAPI
from fastapi.responses import FileResponse, JSONResponse, Response

from feature_pipelines.features.access import ConsumerPolicy
from feature_pipelines.features.on_demand import OnDemandFeature
from feature_pipelines.features.services import FEATURE_SERVICES, FeatureService, service_schema
from feature_pipelines.features.spec import FeatureView
from feature_pipelines.serving.auth import API_KEY_ENV_VAR, API_KEY_HEADER, Authenticator
from feature_pipelines.serving.body_limit import BodyLimit
from feature_pipelines.serving.consumers import ConsumerKey
from feature_pipelines.serving.errors import UnknownReferenceError, install_error_handler
from feature_pipelines.serving.lean import LeanRoute
from feature_pipelines.serving.log_records import LogRecorder
from feature_pipelines.serving.models import (
    ERROR_RESPONSES,
    ErrorResponse,
    FeatureServiceInfo,
    FeatureServicesResponse,
    GetOnlineFeaturesRequest,
    GetOnlineFeaturesResponse,
    HealthResponse,
    PushRequest,
    PushResponse,
    ServiceColumn,
)
from feature_pipelines.serving.planning import RequestPlanner
from feature_pipelines.serving.predict import Predictor, add_predict_route
from feature_pipelines.serving.request_log import RequestLog, key_columns_of
from feature_pipelines.serving.server import REQUEST_ID_HEADER, Deadlines, FeatureServer, LazyClient
from feature_pipelines.serving.service_statistics import ServiceStatistics
from feature_pipelines.timeutil import utc_now

__all__ = ["API_KEY_ENV_VAR", "API_KEY_HEADER", "DEFAULT_MAX_BODY_BYTES", "REQUEST_ID_HEADER", "create_app",
           "key_columns_of"]

DEFAULT_MAX_BODY_BYTES = 1 << 20
DEFAULT_MAX_PUSH_EVENTS = 10_000


def create_app(
    *,
    redis_client_factory: Callable[[], redis.Redis],
    prefix: str,
    views: Mapping[str, FeatureView],
    on_demand: Mapping[str, OnDemandFeature],
    max_entities: int = 1000,
    api_key: str | None = None,
    request_log: RequestLog | None = None,
    now: Callable[[], datetime] = utc_now,
    key_dtypes: Mapping[str, pl.DataType] | None = None,
    request_timeout_s: float = 2.0,
    health_timeout_s: float = 0.5,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    consumers: Sequence[ConsumerKey] = (),
    lean: bool = True,
    services: Mapping[str, FeatureService] | None = None,
    service_statistics: ServiceStatistics | None = None,
    max_push_events: int = DEFAULT_MAX_PUSH_EVENTS,
    catalog_page: Path | None = None,
    predictor: Predictor | None = None,
) -> FastAPI:
    """The feature server as an ASGI app (see the module docstring for the API).

    `redis_client_factory` is called once, lazily, and the client (a thread-safe pool) is shared
    by all requests; give it short socket timeouts (`RedisResource.client()` does). `api_key`,
    when given, is required in the X-API-Key header of feature requests (not of /health or the
    OpenAPI docs, which reveal nothing secret); pass it from the FEATURE_PIPELINES_API_KEY
    environment variable, never from code. The app owns `request_log`: it starts it on startup
    and closes (flushes) it on shutdown. `key_dtypes` declares each join key's type (default:
    String for every join key of `views`).

    `consumers` adds identities with their own keys and policies (`serving.consumers`): a request
    bearing a consumer's key is served only the features its policy allows (403 otherwise); one
    bearing `api_key` reads everything. With consumers and no `api_key`, every feature request
    must bear a consumer's key.

    With `lean` (the default), small feature requests are answered by `serving.lean` with the
    same bytes and log rows, at a fraction of the CPU; everything else by the FastAPI routes.

    `services` (default: the catalog's `FEATURE_SERVICES`) can be asked for by name; those that
    pin fitted statistics are served with `service_statistics` (loaded once from the lake by the
    caller; without them such services answer 503 and show as not ready).

    GET /catalog serves the catalog page `catalog_page` (written by `feature-pipelines catalog --html`), read
    at each request; without one it answers 404 saying so.
    """
    services = dict(FEATURE_SERVICES if services is None else services)
    statistics = service_statistics or ServiceStatistics.without_lake(services)
    server = FeatureServer(
        client=LazyClient(redis_client_factory),
        prefix=prefix,
        views=views,
        auth=Authenticator(api_key, consumers, views, on_demand),
        planner=RequestPlanner(views, on_demand, key_dtypes=key_dtypes, max_entities=max_entities, services=services),
        recorder=LogRecorder(views, on_demand),
        request_log=request_log,
        now=now,
        deadlines=Deadlines(request_s=request_timeout_s, health_s=health_timeout_s),
        statistics=statistics,
    )
    lean_route = LeanRoute(server, max_entities=max_entities, max_body_bytes=max_body_bytes) if lean else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with server.lifespan(app):
            try:
                yield
            finally:
                if lean_route is not None:
                    lean_route.close()

    app = FeatureServerApp(title="feature-pipelines feature server", description=__doc__, version="1",
                           lifespan=lifespan)
    app.lean = lean_route
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    install_error_handler(app)
    _add_routes(app, server, max_push_events, catalog_page)
    if predictor is not None:  # POST /predict: the service's vector scored by its model (serving/predict.py)
        add_predict_route(app, server, predictor)
    return app


class FeatureServerApp(FastAPI):
    """The FastAPI app, with the lean path in front of it: a request `lean.handles` goes there
    first (and comes back to FastAPI untouched if it is not the lean path's to answer)."""

    lean: LeanRoute | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        lean = self.lean
        if lean is not None and lean.handles(scope):
            await lean(scope, receive, send, super().__call__)
        else:
            await super().__call__(scope, receive, send)


def services_response(services: Mapping[str, FeatureService], statistics: ServiceStatistics) -> FeatureServicesResponse:
    """What GET /feature-services lists: every service, its vector and its readiness."""
    infos = []
    for name, service in services.items():
        reason = statistics.missing.get(name)
        infos.append(FeatureServiceInfo(
            name=name, owner=service.owner, description=service.description, version=service.version,
            features=list(service.features),
            columns=[ServiceColumn(name=column, dtype=str(dtype)) for column, dtype in service_schema(service).items()],
            transforms=[str(transform) for transform in service.transforms],
            statistics_version=service.statistics_version, ready=reason is None, reason=reason,
        ))
    return FeatureServicesResponse(services=infos)


def _add_routes(app: FastAPI, server: FeatureServer, max_push_events: int, catalog_page: Path | None) -> None:
    """The endpoints, documented for the OpenAPI spec; `server` does the work."""

    @app.post(
        "/get-online-features",
        response_model=GetOnlineFeaturesResponse,
        responses={422: {"model": ErrorResponse, "description": "Invalid request."}, **ERROR_RESPONSES},
        summary="Feature values for entity rows, as the training path would give them now.",
    )
    async def get_online_features_endpoint(
        body: GetOnlineFeaturesRequest, policy: ConsumerPolicy | None = Depends(server.auth.caller_policy)  # noqa: B008 - FastAPI declares dependencies as defaults
    ) -> Response:
        return await server.get_online_features(body, policy)

    @app.post(
        "/push",
        response_model=PushResponse,
        status_code=202,
        responses={422: {"model": ErrorResponse, "description": "Invalid request."}, **ERROR_RESPONSES},
        summary="Append raw events to their table's stream; the stream consumer judges and aggregates them.",
    )
    async def push_endpoint(
        body: PushRequest, _policy: ConsumerPolicy | None = Depends(server.auth.caller_policy)  # noqa: B008 - FastAPI declares dependencies as defaults
    ) -> PushResponse:
        return await server.push(body, max_push_events)

    @app.get(
        "/feature-services",
        response_model=FeatureServicesResponse,
        summary="The feature services: each model's named vector, its columns and dtypes, and whether it is served.",
    )
    async def feature_services() -> FeatureServicesResponse:
        return services_response(server.planner.services, server.statistics)

    @app.get(
        "/health",
        response_model=HealthResponse,
        responses={503: {"model": HealthResponse, "description": "Redis is unreachable."}},
        summary="Whether this server can reach Redis (PING under a short timeout).",
    )
    async def health() -> JSONResponse:
        return await server.health()

    @app.get(
        "/catalog",
        response_class=FileResponse,
        responses={404: {"model": ErrorResponse, "description": "No catalog page has been written."}},
        summary="The feature catalog: every feature's owner, lineage, users, freshness, quality, drift and skew.",
    )
    async def catalog() -> FileResponse:
        if catalog_page is None:
            raise UnknownReferenceError("this server was started without a catalog page (create_app(catalog_page=...))")
        if not catalog_page.is_file():
            raise UnknownReferenceError(
                f"no catalog page at {catalog_page}: write it with `feature-pipelines catalog --html {catalog_page}`"
            )
        return FileResponse(catalog_page, media_type="text/html")
