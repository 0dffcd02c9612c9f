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
(the blocking read runs in a worker thread under a deadline, so a dead or hung Redis never
hangs the request).

PII-tagged features, and on-demand features computed from them, are served to callers allowed
them but never written to the request log: the log is for skew monitoring, not a copy of
personal data.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, Literal

import anyio
import anyio.to_thread
import polars as pl
import redis
from fastapi import Depends, FastAPI, HTTPException, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from feature_pipelines.features.access import ConsumerPolicy, FeatureAccessError, check_feature_access
from feature_pipelines.features.on_demand import ON_DEMAND_VIEW, OnDemandFeature, OnDemandFeatureError
from feature_pipelines.features.references import UnknownFeatureError, ViewRequest, resolve_references
from feature_pipelines.features.spec import FeatureView
from feature_pipelines.online.encoding import OnlineEncodingError
from feature_pipelines.online.keys import OnlineKeyError
from feature_pipelines.online.read import OnlineReadError, metadata_columns
from feature_pipelines.online.resource import RedisConfigError
from feature_pipelines.online.retrieval import get_online_features
from feature_pipelines.serving.consumers import ConsumerKey, check_distinct_keys
from feature_pipelines.serving.request_log import RequestLog, ServedFeature, ServedRequest
from feature_pipelines.timeutil import utc_now

logger = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"
API_KEY_ENV_VAR = "FEATURE_PIPELINES_API_KEY"
REQUEST_ID_HEADER = "X-Request-ID"
DEFAULT_MAX_BODY_BYTES = 1 << 20
_NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


class Status(str, Enum):
    """How a value was found, per entity row (Feast's FieldStatus names)."""

    PRESENT = "PRESENT"
    NOT_FOUND = "NOT_FOUND"
    OUTSIDE_MAX_AGE = "OUTSIDE_MAX_AGE"


_STATUS_RANK = {Status.PRESENT.value: 0, Status.OUTSIDE_MAX_AGE.value: 1, Status.NOT_FOUND.value: 2}


class GetOnlineFeaturesRequest(BaseModel):
    """Feature references and entity rows given column-wise, as in Feast's HTTP API."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "features": [
                        "route_delay_stats:route_dep_delay_mean_24h",
                        "on_demand:route_dep_delay_ratio_24h_7d",
                    ],
                    "entities": {"origin": ["EWR", "JFK"], "dest": ["ORD", "LAX"]},
                    "full_feature_names": False,
                }
            ]
        },
    )

    features: list[str] = Field(
        min_length=1,
        description='References "view:feature"; on-demand features as "on_demand:<name>".',
    )
    entities: dict[str, list[Any]] = Field(
        min_length=1,
        description="Entity join keys and request columns, one list per column, all of one length.",
    )
    full_feature_names: StrictBool = Field(
        default=False, description='Name features "view__feature" in the response metadata.'
    )


class FeatureVector(BaseModel):
    """One column of the response: a value, status and event time per entity row."""

    values: list[Any]
    statuses: list[Status]
    event_timestamps: list[datetime | None]


class ResponseMetadata(BaseModel):
    feature_names: list[str]


class GetOnlineFeaturesResponse(BaseModel):
    metadata: ResponseMetadata
    results: list[FeatureVector]


class ValidationIssue(BaseModel):
    """One reason a body failed validation: where (`loc`), what (`msg`) and its pydantic `type`."""

    loc: list[str | int]
    msg: str
    type: str


class ErrorResponse(BaseModel):
    """Every error: `detail` says what is wrong in one sentence; a malformed body also lists each
    validation issue in `errors`."""

    detail: str
    errors: list[ValidationIssue] | None = None


class HealthResponse(BaseModel):
    status: Literal["ok", "unavailable"]
    redis: str
    request_log: dict[str, Any] | None = None


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in (
        (400, "A body that cannot be parsed at all (not UTF-8 text)."),
        (401, "Missing or invalid API key."),
        (403, "The authenticated consumer may not read some of the requested features."),
        (404, "Unknown feature view or feature."),
        (413, "Too many entity rows, or too large a body."),
        (503, "The online store (Redis) is unreachable or too slow."),
    )
}


@dataclass(frozen=True)
class _Plan:
    """A validated request: what to read, from which rows, and how to name and log it."""

    stored: list[str]
    requests: list[ViewRequest]
    on_demand: list[OnDemandFeature]
    entity_rows: pl.DataFrame
    entity_columns: list[str]
    full_feature_names: bool


def _validation_failed(_: Request, error: Exception) -> JSONResponse:
    """A malformed body as the documented ErrorResponse (one `detail` string, as every other error)
    instead of FastAPI's bare list; the offending input is not echoed back."""
    issues = error.errors() if isinstance(error, RequestValidationError) else []
    errors = [
        {"loc": [part if isinstance(part, int) else str(part) for part in issue.get("loc", ())],
         "msg": str(issue.get("msg", "")), "type": str(issue.get("type", ""))}
        for issue in issues
    ]
    summary = "; ".join(f"{'.'.join(str(part) for part in e['loc'])}: {e['msg']}" for e in errors[:5])
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return JSONResponse({"detail": f"invalid request: {summary or 'malformed body'}{more}", "errors": errors},
                        status_code=422)


def _bad(status: int, detail: str) -> HTTPException:
    return HTTPException(status_code=status, detail=detail)


def _type_name(value: Any) -> str:
    return "null" if value is None else {bool: "boolean", int: "integer", float: "number", str: "string"}.get(
        type(value), type(value).__name__
    )


def _is_pii(reference: str, views: Mapping[str, FeatureView]) -> bool:
    view_name, _, name = reference.partition(":")
    view = views.get(view_name)
    return view is not None and name in view.feature_names and view.feature(name).pii


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _column(name: str, values: list[Any], dtype: pl.DataType, what: str) -> pl.Series:
    """An entity or request column of its declared dtype, or a 422 naming the first bad value."""
    if isinstance(dtype, pl.Datetime):
        parsed: list[datetime | None] = []
        for position, value in enumerate(values):
            if value is None:
                parsed.append(None)
                continue
            moment = None
            if isinstance(value, str):
                try:
                    moment = datetime.fromisoformat(value)
                except ValueError:
                    moment = None
            if moment is None or moment.tzinfo is None or moment.utcoffset() is None:
                raise _bad(422, f"{what} {name!r} expects ISO-8601 timestamps with a UTC offset "
                                f"(e.g. 2024-05-01T14:30:00Z); position {position} is {value!r}")
            parsed.append(moment)
        return pl.Series(name, parsed, dtype=pl.Datetime("us", "UTC"))
    expected: tuple[type, ...]
    label: str
    if dtype == pl.String:
        expected, label = (str,), "strings"
    elif dtype == pl.Int64:
        expected, label = (int,), "integers"
    elif dtype == pl.Float64:
        expected, label = (int, float), "numbers"
    elif dtype == pl.Boolean:
        expected, label = (bool,), "booleans"
    else:
        raise _bad(422, f"{what} {name!r} has dtype {dtype}, which the server cannot parse")
    nullable = what == "request column"
    for position, value in enumerate(values):
        if value is None and nullable:
            continue
        if not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected):
            shown = "null" if value is None else f"{_type_name(value)} {value!r}"
            raise _bad(422, f"{what} {name!r} expects {label} ({dtype}); position {position} is {shown}")
        if isinstance(value, str) and not _is_unicode(value):
            # JSON lets "\ud800" through; no key can hold it, and encoding it later would be a 500.
            raise _bad(422, f"{what} {name!r}: position {position} is not valid Unicode (a lone surrogate)")
        if isinstance(value, int) and dtype == pl.Int64 and not -(2**63) <= value < 2**63:
            raise _bad(422, f"{what} {name!r}: position {position} is out of the Int64 range")
    try:
        return pl.Series(name, values, dtype=dtype, strict=True)
    except (pl.exceptions.PolarsError, TypeError, OverflowError) as error:
        raise _bad(422, f"{what} {name!r} cannot be read as {dtype}: {error}") from error


def _json_values(series: pl.Series) -> list[Any]:
    """A column's values as JSON-able Python: floats kept exact (repr), non-finite as strings."""
    values = series.to_list()
    if series.dtype == pl.Float64:
        return [v if v is None or math.isfinite(v) else ("NaN" if math.isnan(v) else _NON_FINITE[v]) for v in values]
    if isinstance(series.dtype, pl.Datetime):
        return [None if v is None else v.isoformat() for v in values]
    return values


def _iso(values: list[datetime | None]) -> list[str | None]:
    return [None if v is None else v.isoformat() for v in values]


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
    """
    if api_key is not None and not api_key:
        raise ValueError(f"the API key is empty; unset {API_KEY_ENV_VAR} or give it a value")
    check_distinct_keys(consumers, api_key)
    if ON_DEMAND_VIEW in views:
        raise ValueError(f"a feature view may not be named {ON_DEMAND_VIEW!r}: that name holds on-demand features")
    if max_entities < 1:
        raise ValueError(f"max_entities must be positive, got {max_entities}")
    dtypes: dict[str, pl.DataType] = {key: pl.String() for view in views.values() for key in view.entity_keys}
    dtypes.update(key_dtypes or {})

    client_lock = threading.Lock()
    client_box: list[redis.Redis] = []

    def client() -> redis.Redis:
        if not client_box:
            with client_lock:
                if not client_box:
                    client_box.append(redis_client_factory())
        return client_box[0]

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if request_log is not None:
            request_log.start()
        try:
            yield
        finally:
            if client_box:
                client_box[0].close()
            if request_log is not None:
                await anyio.to_thread.run_sync(request_log.close)

    app = FastAPI(
        title="feature-pipelines feature server",
        description=__doc__,
        version="1",
        lifespan=lifespan,
    )
    app.add_middleware(_BodyLimit, max_bytes=max_body_bytes)
    app.add_exception_handler(RequestValidationError, _validation_failed)

    header_scheme = APIKeyHeader(
        name=API_KEY_HEADER, auto_error=False, description=f"The key from {API_KEY_ENV_VAR}."
    )
    # (key bytes, policy): None is the full-access key of FEATURE_PIPELINES_API_KEY.
    identities: list[tuple[bytes, ConsumerPolicy | None]] = [
        *([(api_key.encode(), None)] if api_key is not None else []),
        *[(consumer.api_key.encode(), consumer.policy) for consumer in consumers],
    ]
    on_demand_inputs = {name: feature.inputs for name, feature in on_demand.items()}
    pii_derived = {
        name for name, feature in on_demand.items()
        if any(_is_pii(reference, views) for reference in feature.inputs)
    }

    def authenticate(provided: str | None = Security(header_scheme)) -> ConsumerPolicy | None:
        """The caller's policy (None: unrestricted), by a constant-time comparison with every
        configured key, so neither a key nor which consumers exist can be guessed from timing.

        Compared as bytes: the header as received (ASGI hands it over latin-1 decoded) against
        the key's UTF-8 bytes, so a non-ASCII key sent as UTF-8 matches.
        """
        if not identities:
            return None
        sent = provided.encode("latin-1") if provided is not None else b""
        matched: list[ConsumerPolicy | None] = []
        for key, policy in identities:  # no early exit: every key is compared
            if secrets.compare_digest(sent, key):
                matched.append(policy)
        if provided is None or not matched:
            raise HTTPException(
                status_code=401,
                detail=f"missing or invalid API key: send it in the {API_KEY_HEADER} header",
                headers={"WWW-Authenticate": "APIKey"},
            )
        return matched[0]

    def unrestricted() -> None:
        """No key configured: everyone may read everything (the server binds to loopback)."""
        return None

    # Without keys the OpenAPI spec advertises no security scheme.
    caller_policy: Callable[..., ConsumerPolicy | None] = authenticate if identities else unrestricted

    def authorize(references: Sequence[str], policy: ConsumerPolicy | None) -> None:
        try:
            check_feature_access(references, views, policy, on_demand_inputs=on_demand_inputs)
        except FeatureAccessError as error:
            logger.warning("refused consumer %r: %s", error.consumer, sorted(error.refused))
            raise _bad(403, str(error)) from error

    def plan(body: GetOnlineFeaturesRequest) -> _Plan:
        stored: list[str] = []
        chosen: list[OnDemandFeature] = []
        seen: set[str] = set()
        for reference in body.features:
            view_name, sep, name = reference.partition(":")
            if not sep or not view_name or not name:
                raise _bad(422, f"feature reference {reference!r} is not of the form 'view:feature'")
            if reference in seen:
                raise _bad(422, f"feature reference {reference!r} is requested twice")
            seen.add(reference)
            if view_name == ON_DEMAND_VIEW:
                feature = on_demand.get(name)
                if feature is None:
                    raise _bad(404, f"feature reference {reference!r}: unknown on-demand feature {name!r}; "
                                    f"known: {sorted(on_demand)}")
                chosen.append(feature)
            else:
                stored.append(reference)
        try:
            requests = resolve_references(stored, views) if stored else []
        except UnknownFeatureError as error:
            raise _bad(404, str(error)) from error
        needed: dict[str, str] = {}  # column -> why it is needed
        for request in requests:
            for key in request.view.entity_keys:
                needed.setdefault(key, f"join key of view {request.view.name!r}")
        request_dtypes: dict[str, pl.DataType] = {}
        for feature in chosen:
            for view_name in feature.input_views():
                for key in views[view_name].entity_keys:
                    needed.setdefault(key, f"join key of view {view_name!r}, an input of {feature.name!r}")
            for column in feature.request_columns:
                needed.setdefault(column, f"request column of on-demand feature {feature.name!r}")
                request_dtypes[column] = feature.request_dtypes[column]
        missing = [column for column in needed if column not in body.entities]
        if missing:
            reasons = "; ".join(f"{column!r} ({needed[column]})" for column in missing)
            raise _bad(422, f"entities: missing column(s) {reasons}")
        unknown = [column for column in body.entities if column not in needed]
        if unknown:
            raise _bad(422, f"entities: column(s) {unknown} are neither join keys of the requested views nor "
                            f"request columns of the requested on-demand features; expected {list(needed)}")
        lengths = {column: len(values) for column, values in body.entities.items()}
        if len(set(lengths.values())) > 1:
            raise _bad(422, f"entities: every column must have the same number of values, got {lengths}")
        height = next(iter(lengths.values()))
        if height == 0:
            raise _bad(422, "entities: no entity rows given")
        if height > max_entities:
            raise _bad(413, f"entities: {height} rows requested, more than this server's limit of {max_entities}")
        columns = []
        for column, values in body.entities.items():
            if column in request_dtypes:
                columns.append(_column(column, values, request_dtypes[column], "request column"))
            else:
                columns.append(_column(column, values, dtypes.get(column, pl.String()), "entity key"))
        return _Plan(stored, requests, chosen, pl.DataFrame(columns), list(body.entities), body.full_feature_names)

    def serve(request_plan: _Plan, read_at: datetime) -> pl.DataFrame:
        return get_online_features(
            client(),
            prefix=prefix,
            views=views,
            entity_rows=request_plan.entity_rows,
            features=request_plan.stored,
            now=read_at,
            include_metadata=True,
            on_demand=request_plan.on_demand,
        )

    def respond(request_plan: _Plan, frame: pl.DataFrame, request_id: str, read_at: datetime) -> Response:
        entity_names = request_plan.entity_columns
        stored_requests = request_plan.requests
        view_status: dict[str, tuple[list[str], list[datetime | None], list[str | None]]] = {}
        for view_name in [r.view.name for r in stored_requests] + [
            v for f in request_plan.on_demand for v in f.input_views()
        ]:
            if view_name in view_status:
                continue
            ts_column, expired_column = metadata_columns(view_name)
            stamps = frame.get_column(ts_column).to_list()
            expired = frame.get_column(expired_column).to_list()
            statuses = [
                Status.NOT_FOUND.value if stamp is None
                else Status.OUTSIDE_MAX_AGE.value if gone else Status.PRESENT.value
                for stamp, gone in zip(stamps, expired)
            ]
            view_status[view_name] = (statuses, stamps, _iso(stamps))
        height = frame.height
        present = [Status.PRESENT.value] * height
        no_times: list[datetime | None] = [None] * height
        names: list[str] = []
        results: list[dict[str, Any]] = []
        served: list[ServedFeature] = []
        for column in entity_names:
            names.append(column)
            results.append({"values": _json_values(frame.get_column(column)), "statuses": present,
                            "event_timestamps": no_times})
        for request in stored_requests:
            statuses, stamps, iso_stamps = view_status[request.view.name]
            for feature in request.features:
                series = frame.get_column(feature)
                names.append(f"{request.view.name}__{feature}" if request_plan.full_feature_names else feature)
                results.append({"values": _json_values(series), "statuses": statuses, "event_timestamps": iso_stamps})
                if request.view.feature(feature).pii:
                    continue  # served, never logged
                served.append(ServedFeature(request.view.name, feature, request.view.entity_keys,
                                            series.to_list(), statuses, stamps))
        for feature in request_plan.on_demand:
            inputs = [view_status[v][0] for v in feature.input_views()]
            statuses = [
                max((s[row] for s in inputs), key=_STATUS_RANK.__getitem__, default=Status.PRESENT.value)
                for row in range(height)
            ] if inputs else present
            series = frame.get_column(feature.name)
            names.append(f"{ON_DEMAND_VIEW}__{feature.name}" if request_plan.full_feature_names else feature.name)
            results.append({"values": _json_values(series), "statuses": statuses, "event_timestamps": no_times})
            if feature.name in pii_derived:
                continue  # computed from PII: served, never logged
            keys = tuple(dict.fromkeys(
                [k for v in feature.input_views() for k in views[v].entity_keys] + list(feature.request_columns)
            ))
            served.append(ServedFeature(ON_DEMAND_VIEW, feature.name, keys, series.to_list(), statuses, no_times))
        if request_log is not None:
            entities = {column: frame.get_column(column).to_list()
                        for column in dict.fromkeys([k for f in served for k in f.key_columns])}
            request_log.record(ServedRequest(request_id, read_at, entities, served))
        payload = {"metadata": {"feature_names": names}, "results": results}
        body = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
        return Response(content=body, media_type="application/json", headers={REQUEST_ID_HEADER: request_id})

    @app.post(
        "/get-online-features",
        response_model=GetOnlineFeaturesResponse,
        responses={422: {"model": ErrorResponse, "description": "Invalid request."}, **_ERRORS},
        summary="Feature values for entity rows, as the training path would give them now.",
    )
    async def get_online_features_endpoint(
        body: GetOnlineFeaturesRequest, policy: ConsumerPolicy | None = Depends(caller_policy)
    ) -> Response:
        authorize(body.features, policy)  # before any other work: a refusal reveals nothing else
        request_plan = plan(body)
        read_at = now()
        request_id = uuid.uuid4().hex
        try:
            with anyio.fail_after(request_timeout_s):
                frame = await anyio.to_thread.run_sync(serve, request_plan, read_at, abandon_on_cancel=True)
        except TimeoutError as error:
            raise _bad(503, f"online store (Redis) did not answer within {request_timeout_s:g} s") from error
        except RedisConfigError as error:
            raise _bad(503, f"online store not configured: {error}") from error
        except OnlineEncodingError as error:
            logger.error("undecodable value in the online store: %s", error)
            raise _bad(500, f"the online store holds a value this server cannot decode: {error}") from error
        except (OnlineReadError, OnDemandFeatureError, OnlineKeyError, UnknownFeatureError) as error:
            raise _bad(422, str(error)) from error
        except redis.RedisError as error:
            raise _bad(503, f"online store (Redis) unavailable: {type(error).__name__}: {error}") from error
        return respond(request_plan, frame, request_id, read_at)

    @app.get(
        "/health",
        response_model=HealthResponse,
        responses={503: {"model": HealthResponse, "description": "Redis is unreachable."}},
        summary="Whether this server can reach Redis (PING under a short timeout).",
    )
    async def health() -> JSONResponse:
        stats = request_log.stats() if request_log is not None else None
        began = time.perf_counter()
        try:
            with anyio.fail_after(health_timeout_s):
                await anyio.to_thread.run_sync(lambda: client().ping(), abandon_on_cancel=True)
        except TimeoutError:
            reason = f"unavailable: Redis did not answer PING within {health_timeout_s:g} s"
        except RedisConfigError as error:
            reason = f"unavailable: not configured: {error}"
        except redis.RedisError as error:
            reason = f"unavailable: {type(error).__name__}: {error}"
        else:
            elapsed_ms = (time.perf_counter() - began) * 1000
            payload = HealthResponse(status="ok", redis=f"ok ({elapsed_ms:.1f} ms)", request_log=stats)
            return JSONResponse(payload.model_dump())
        payload = HealthResponse(status="unavailable", redis=reason, request_log=stats)
        return JSONResponse(payload.model_dump(), status_code=503)

    return app


class _BodyLimit:
    """Refuse bodies over `max_bytes` with a JSON 413, before they are parsed.

    A declared Content-Length over the limit is refused before anything is read; a body
    without one (chunked) is counted as it streams in, and the read stops at the limit. (Used
    rather than FastAPI's `max_body_size`, which answers the first case in plain text.)
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((value for name, value in scope["headers"] if name == b"content-length"), b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            response = JSONResponse(
                {"detail": f"request body of {int(declared)} bytes exceeds this server's limit of "
                           f"{self.max_bytes} bytes"},
                status_code=413,
            )
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> dict[str, Any]:
            nonlocal received
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # An HTTPException passes through FastAPI's body parsing as itself (any other
                    # error there becomes a 400) and is rendered as JSON by its handler.
                    raise HTTPException(
                        status_code=413, detail=f"request body exceeds this server's limit of {self.max_bytes} bytes"
                    )
            return message

        await self.app(scope, limited_receive, send)


def key_columns_of(views: Sequence[FeatureView]) -> dict[str, pl.DataType]:
    """Every join key of the views, String-typed, in first-appearance order (the log's key columns)."""
    return {key: pl.String() for view in views for key in view.entity_keys}
