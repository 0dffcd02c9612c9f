"""The lean path: small feature requests answered without FastAPI, pydantic, polars or a worker thread.

Why: for one entity the framework around a read cost several times the read. A profile of the
server under load (py-spy, 1 entity x 3 features) spent its time on thread hops for the
blocking Redis read, Starlette's middleware and routing, pydantic, polars frames of one row and
JSON; the lookup itself was a small part. This path answers the same request with plain Python
on the event loop: parse (orjson), a plan cached per request shape, one pipelined async Redis
round trip for every view (`online.async_transport`), the same decode rule as the batch read
(`online.read.ReplyDecoder`), the same response encoder (`responses.encode_body`), and for
the request log a `LeanLogRecord` of what the request already holds, queued as is: the log's
writer thread turns it into the rows a `ServedRequest` of it would give.

It gives exactly what the full path gives: the same response bytes and headers (but the
X-Request-ID value) and the same log rows; `feature_pipelines_tests/serving/test_lean.py`
compares the two on many requests. Whatever it does not handle goes, untouched, to the full
FastAPI path, which answers as it always has (errors, OpenAPI contract and all):

* anything but a POST to /get-online-features with an `application/json` body of a declared
  size up to `LEAN_MAX_BODY_BYTES` (and the server's body limit);
* a body that is not exactly the request model's shape, a failed key check or access check;
* a request that reads a streaming view (its windows are merged from the stream's tiles at the
  request instant, `streaming.online`);
* a request shape the planner refuses, on-demand features that take request columns (on-demand
  features computed from stored ones are computed here, by `apply_on_demand` on the frame the
  full path builds), key columns that are not String or Int64, a value of the wrong type, more
  than `LEAN_MAX_ROWS` entity rows (or `max_entities`);
* a Redis configuration outside `AsyncReader`'s scope (TLS, unix socket, Cluster, ...), an
  unreachable Redis, an error reply, a value the decoder refuses.

Only a read slower than the request deadline is answered here: 503, the full path's body.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import polars as pl
from starlette.responses import JSONResponse

from feature_pipelines.features.access import FeatureAccessError, check_feature_access
from feature_pipelines.features.on_demand import (
    OnDemandFeature,
    OnDemandFeatureError,
    apply_on_demand,
    required_references,
)
from feature_pipelines.features.references import UnknownFeatureError, ViewRequest, resolve_references
from feature_pipelines.names import ON_DEMAND_VIEW
from feature_pipelines.online.async_transport import AsyncReader, AsyncReadError
from feature_pipelines.online.client import RedisConfigError
from feature_pipelines.online.encoding import TIMESTAMP_FIELD, VERSION_FIELD, OnlineEncodingError
from feature_pipelines.online.keys import OnlineKeyError
from feature_pipelines.online.read import SMALL_REQUEST_ROWS, ReplyDecoder, pack_hmgets, snapshot_time
from feature_pipelines.online.table import OnlineTable
from feature_pipelines.serving.auth import API_KEY_HEADER
from feature_pipelines.serving.errors import AuthenticationError, ServingError, StoreUnavailableError
from feature_pipelines.serving.models import GetOnlineFeaturesRequest, Status
from feature_pipelines.serving.request_log import LogColumns, entity_keys_json, value_float, value_json
from feature_pipelines.serving.responses import encode_body, json_floats, json_values, vector
from feature_pipelines.serving.server import FeatureServer

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ROUTE = "/get-online-features"
# Larger requests take the full path: its vectorised read beats value-by-value Python there.
LEAN_MAX_ROWS = SMALL_REQUEST_ROWS
LEAN_MAX_BODY_BYTES = 64 * 1024
# Distinct request shapes whose plans are kept; past it, new shapes are planned per request.
PLAN_CACHE_SIZE = 1024
_BODY_KEYS = frozenset({"features", "entities", "full_feature_names"})
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_PRESENT = Status.PRESENT.value
_STATUS_RANK = {Status.PRESENT.value: 0, Status.OUTSIDE_MAX_AGE.value: 1, Status.NOT_FOUND.value: 2}
_NOT_FOUND = Status.NOT_FOUND.value
_OUTSIDE_MAX_AGE = Status.OUTSIDE_MAX_AGE.value
_API_KEY_HEADER = API_KEY_HEADER.lower().encode("latin-1")


class _Fallback(Exception):
    """This request is the full path's to answer (see the module docstring for when)."""


@dataclass(frozen=True)
class LeanView:
    """One view read for a planned request: its table, packed HMGET fields and decoder."""

    table: OnlineTable
    decoder: ReplyDecoder
    fields: tuple[str, ...]


@dataclass(frozen=True)
class OutputColumn:
    """A stored feature of the response: where its values are in the reads, and whether it is Float64."""

    view_index: int
    feature_index: int
    is_float: bool


@dataclass(frozen=True)
class OnDemandInput:
    """A column of the frame the on-demand features are computed from (as the full path builds it)."""

    name: str
    view_index: int
    feature_index: int
    dtype: pl.DataType


@dataclass(frozen=True)
class LoggedFeature:
    """A served column the request log records (not PII): which read holds its values.

    On-demand features come after the views in the reads, one read each (`view_index`)."""

    view_index: int
    feature_index: int
    view: str
    feature: str
    keys: tuple[str, ...]


@dataclass(frozen=True)
class LeanPlan:
    """A request shape (features, entity columns, full_feature_names) planned once, by the planner.

    `views` are what is read: the requested stored features and the inputs of the on-demand
    ones (`required_references`), grouped by view; `output` picks the response's stored columns
    from them, in the response's order; on-demand features are computed after the read, from the
    frame the full path would build (`on_demand_inputs`), by `apply_on_demand`.
    """

    views: tuple[LeanView, ...]
    output: tuple[OutputColumn, ...]
    on_demand: tuple[OnDemandFeature, ...]
    on_demand_inputs: tuple[OnDemandInput, ...]
    on_demand_views: tuple[tuple[int, ...], ...]
    entity_columns: tuple[str, ...]
    int_columns: frozenset[str]
    names: tuple[str, ...]
    logged: tuple[LoggedFeature, ...]
    log_key_sets: tuple[tuple[str, ...], ...]
    log_views: tuple[str, ...] = ()
    log_features: tuple[str, ...] = ()
    log_zeros: tuple[int, ...] = ()

    _masks: dict[tuple[str, ...], tuple[tuple[bool, ...], ...]] = field(default_factory=dict, compare=False)

    def log_key_masks(self, key_names: tuple[str, ...]) -> tuple[tuple[bool, ...], ...]:
        """Per key column of the log, which logged features' rows carry it (computed once per log schema)."""
        masks = self._masks.get(key_names)
        if masks is None:
            masks = self._masks[key_names] = tuple(tuple(name in f.keys for f in self.logged) for name in key_names)
        return masks

    @classmethod
    def of(cls, server: FeatureServer, features: list[str], entities: dict[str, list[Any]],
           full_feature_names: bool) -> LeanPlan | None:
        """The lean plan of this request's shape, None when the shape is not lean's to serve.

        Raises:
            _Fallback: the planner refuses this request (it may be its values: not cached).
        """
        body = GetOnlineFeaturesRequest.model_construct(
            features=features, entities=entities, full_feature_names=full_feature_names)
        try:
            plan = server.planner.plan(body)
        except (ServingError, UnknownFeatureError, ValueError) as error:
            raise _Fallback from error
        if any(feature.request_columns for feature in plan.on_demand):
            return None  # request data (timestamps and the like) is the full path's to parse
        dtypes = plan.entity_rows.schema
        if any(dtypes[column] not in (pl.String(), pl.Int64()) for column in plan.entity_columns):
            return None
        to_read = resolve_references(required_references(plan.stored, plan.on_demand), server.views)
        if any(request.view.streaming is not None for request in to_read):
            return None  # a streaming view is read from the stream's tiles, by the full path
        views = []
        where: dict[tuple[str, str], tuple[int, int]] = {}
        for view_index, request in enumerate(to_read):
            table = OnlineTable.for_view(request.view, server.prefix)
            views.append(LeanView(table, ReplyDecoder.of(table, request.features),
                                  (*request.features, TIMESTAMP_FIELD, VERSION_FIELD)))
            where.update(((request.view.name, f), (view_index, i)) for i, f in enumerate(request.features))
        output, names, logged = [], [*plan.entity_columns], []
        for request in plan.requests:
            view = request.view
            for feature in request.features:
                view_index, feature_index = where[view.name, feature]
                output.append(OutputColumn(view_index, feature_index, view.feature(feature).polars_dtype == pl.Float64()))
                names.append(f"{view.name}__{feature}" if full_feature_names else feature)
                if not view.feature(feature).pii:
                    logged.append(LoggedFeature(view_index, feature_index, view.name, feature, tuple(view.entity_keys)))
        view_index_of = {request.view.name: index for index, request in enumerate(to_read)}
        for position, feature in enumerate(plan.on_demand):
            names.append(f"{ON_DEMAND_VIEW}__{feature.name}" if full_feature_names else feature.name)
            if feature.name not in server.recorder.pii_derived:
                keys = tuple(dict.fromkeys(k for v in feature.input_views() for k in server.views[v].entity_keys))
                logged.append(LoggedFeature(len(views) + position, 0, ON_DEMAND_VIEW, feature.name, keys))
        return cls(
            views=tuple(views),
            output=tuple(output),
            on_demand=tuple(plan.on_demand),
            on_demand_inputs=_on_demand_inputs(to_read, output, where) if plan.on_demand else (),
            on_demand_views=tuple(tuple(view_index_of[v] for v in f.input_views()) for f in plan.on_demand),
            entity_columns=tuple(plan.entity_columns),
            int_columns=frozenset(c for c in plan.entity_columns if dtypes[c] == pl.Int64()),
            names=tuple(names),
            logged=tuple(logged),
            log_key_sets=tuple(dict.fromkeys(f.keys for f in logged)),
            log_views=tuple(f.view for f in logged),
            log_features=tuple(f.feature for f in logged),
            log_zeros=(0,) * len(logged),
        )


def _on_demand_inputs(to_read: list[ViewRequest], output: list[OutputColumn],
                      where: Mapping[tuple[str, str], tuple[int, int]]) -> tuple[OnDemandInput, ...]:
    """The stored columns of the full path's on-demand frame, in its order: the requested
    features, then the other features read (`retrieval.get_online_features`)."""
    by_position = {(request_index, i): (request.view, name)
                   for request_index, request in enumerate(to_read) for i, name in enumerate(request.features)}
    columns = [by_position[column.view_index, column.feature_index] for column in output]
    requested = {name for _, name in columns}
    seen = set(requested)
    for request in to_read:
        for name in request.features:
            if name not in seen:
                seen.add(name)
                columns.append((request.view, name))
    return tuple(OnDemandInput(name, *where[view.name, name], view.feature(name).polars_dtype) for view, name in columns)


class LeanRoute:
    """POST /get-online-features for small requests, in front of the full app (`fallback`)."""

    def __init__(self, server: FeatureServer, *, max_entities: int, max_body_bytes: int) -> None:
        self.server = server
        self.max_rows = min(max_entities, LEAN_MAX_ROWS)
        self.max_body_bytes = min(max_body_bytes, LEAN_MAX_BODY_BYTES)
        self.plans: dict[tuple[tuple[str, ...], tuple[str, ...], bool], LeanPlan | None] = {}
        self.answered = 0  # requests answered here rather than by the full path
        self._reader: AsyncReader | None = None
        self._store_in_scope = True  # False once the client turns out to be outside AsyncReader's scope

    def handles(self, scope: Scope) -> bool:
        """Whether this request is one to try here (the rest go straight to the full app)."""
        return (self._store_in_scope and scope["type"] == "http" and scope["path"] == ROUTE
                and scope["method"] == "POST" and not scope.get("root_path"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send, fallback: ASGIApp) -> None:
        declared = None
        api_key = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
            elif name == b"content-type":
                if value != b"application/json":
                    return await fallback(scope, receive, send)
            elif name == _API_KEY_HEADER and api_key is None:
                api_key = value
        if declared is None or not declared.isdigit() or int(declared) > self.max_body_bytes:
            return await fallback(scope, receive, send)
        body = await _read_body(receive)
        if body is None:
            return  # the client went away
        try:
            await self._answer(body, api_key, send)
        except _Fallback:
            await fallback(scope, _replay(body, receive), send)
        except StoreUnavailableError as error:
            await unavailable_response(error)(scope, receive, send)

    async def _answer(self, body: bytes, api_key: bytes | None, send: Send) -> None:
        server = self.server
        features, entities, full_feature_names = _parse(body)
        if server.auth.identities:
            try:
                policy = server.auth.authenticate(None if api_key is None else api_key.decode("latin-1"))
            except AuthenticationError as error:
                raise _Fallback from error
            try:
                check_feature_access(features, server.views, policy, on_demand_inputs=server.auth.on_demand_inputs)
            except FeatureAccessError as error:
                raise _Fallback from error  # the full path refuses it and logs the consumer
        plan = self._plan(features, entities, full_feature_names)
        height = self._check_rows(plan, entities)
        payload, count = self._commands(plan, entities, height)
        read_at = server.now()
        if read_at.tzinfo is None:
            raise _Fallback  # the full path refuses a naive clock
        request_id = uuid.uuid4().hex
        replies = await self._read(payload, count)
        results, reads = _decode(plan, entities, height, replies, (read_at - _EPOCH) // _ONE_US)
        response = encode_body(list(plan.names), results)
        if server.request_log is not None and plan.logged:
            # The request only queues what it holds; the log's writer thread makes the rows.
            server.request_log.record(LeanLogRecord(plan, request_id, read_at, entities, height, reads))
        await send({
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"x-request-id", request_id.encode()),
                (b"content-length", str(len(response)).encode()),
                (b"content-type", b"application/json"),
            ],
        })
        await send({"type": "http.response.body", "body": response})
        self.answered += 1

    def _plan(self, features: list[str], entities: dict[str, list[Any]], full_feature_names: bool) -> LeanPlan:
        shape = (tuple(features), tuple(entities), full_feature_names)
        try:
            plan = self.plans[shape]
        except KeyError:
            plan = LeanPlan.of(self.server, features, entities, full_feature_names)
            if len(self.plans) < PLAN_CACHE_SIZE:
                self.plans[shape] = plan
        if plan is None:
            raise _Fallback
        return plan

    def _check_rows(self, plan: LeanPlan, entities: dict[str, list[Any]]) -> int:
        """The number of entity rows, once every column is of one length and holds values of its
        dtype (the planner's checks; anything it would refuse goes to it)."""
        height = -1
        for column, values in entities.items():
            if height < 0:
                height = len(values)
            elif len(values) != height:
                raise _Fallback
            if column in plan.int_columns:
                for value in values:
                    if type(value) is not int or not _INT64_MIN <= value <= _INT64_MAX:
                        raise _Fallback
            else:
                for value in values:
                    if type(value) is not str:
                        raise _Fallback
        if not 0 < height <= self.max_rows:
            raise _Fallback
        return height

    def _commands(self, plan: LeanPlan, entities: dict[str, list[Any]], height: int) -> tuple[bytes, int]:
        """One HMGET per (view, entity row), every view's in one buffer."""
        parts = []
        for view in plan.views:
            rows = list(zip(*(entities[key] for key in view.table.entity_keys)))
            try:
                keys = view.table.keys_for_rows(rows)
                parts.append(pack_hmgets([key.encode() for key in keys], view.fields))
            except (OnlineKeyError, UnicodeEncodeError) as error:
                raise _Fallback from error
        return b"".join(parts), height * len(plan.views)

    async def _read(self, payload: bytes, count: int) -> list[Any]:
        reader = self._reader or self._open_reader()
        deadline = self.server.deadlines.request_s
        try:
            async with asyncio.timeout(deadline):
                return await reader.pipeline(payload, count)
        except TimeoutError:
            reader.abandon()
            raise StoreUnavailableError(f"online store (Redis) did not answer within {deadline:g} s") from None
        except AsyncReadError as error:
            raise _Fallback from error

    def _open_reader(self) -> AsyncReader:
        try:
            client = self.server.client.get()
        except RedisConfigError as error:
            raise _Fallback from error
        reader = AsyncReader.for_client(client)
        if reader is None:
            self._store_in_scope = False
            raise _Fallback
        self._reader = reader
        return reader

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()


def _parse(body: bytes) -> tuple[list[str], dict[str, list[Any]], bool]:
    """The request model's fields, when the body has exactly its shape (else the full path says why not)."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise _Fallback from error
    if type(parsed) is not dict or not parsed.keys() <= _BODY_KEYS:
        raise _Fallback
    features = parsed.get("features")
    entities = parsed.get("entities")
    full_feature_names = parsed.get("full_feature_names", False)
    if (type(features) is not list or not features or type(entities) is not dict or not entities
            or type(full_feature_names) is not bool):
        raise _Fallback
    if any(type(feature) is not str for feature in features):
        raise _Fallback
    if any(type(values) is not list for values in entities.values()):
        raise _Fallback
    return features, entities, full_feature_names


@dataclass(frozen=True)
class ViewRead:
    """One view's part of an answer: each feature's values, and each row's status and snapshot time."""

    columns: list[list[Any]]
    statuses: list[str]
    stamps: list[datetime | None]
    ts_us: list[int | None]


def _decode(plan: LeanPlan, entities: Mapping[str, list[Any]], height: int, replies: list[Any], now_us: int
            ) -> tuple[list[dict[str, Any]], list[ViewRead]]:
    """The response's results, and what each view read (then each on-demand feature, for the
    log), as the full path builds them."""
    reads = []
    start = 0
    for view in plan.views:
        decode = view.decoder.decode
        n_features = len(view.decoder.features)
        columns: list[list[Any]] = [[] for _ in range(n_features)]
        statuses: list[str] = []
        stamps: list[datetime | None] = []
        ts_us: list[int | None] = []
        key_columns = [entities[key] for key in view.table.entity_keys]
        for row in range(height):
            reply = replies[start + row]
            if type(reply) is not list or len(reply) != n_features + 2:
                raise _Fallback  # an error reply (hiredis.ReplyError) or not an HMGET answer
            try:
                values, ts, expired = decode([column[row] for column in key_columns], reply, now_us)
            except OnlineEncodingError as error:
                raise _Fallback from error
            for column, value in zip(columns, values or _nulls(n_features)):
                column.append(value)
            ts_us.append(ts)
            if ts is None:
                statuses.append(_NOT_FOUND)
                stamps.append(None)
            else:
                statuses.append(_OUTSIDE_MAX_AGE if expired else _PRESENT)
                stamps.append(snapshot_time(ts))
        start += height
        reads.append(ViewRead(columns, statuses, stamps, ts_us))
    present = [_PRESENT] * height
    no_times = [None] * height
    results = [vector(entities[column], present, no_times) for column in plan.entity_columns]
    iso = [[None if stamp is None else stamp.isoformat() for stamp in read.stamps] for read in reads]
    for column in plan.output:
        read = reads[column.view_index]
        values = read.columns[column.feature_index]
        results.append(vector(json_floats(values) if column.is_float else values, read.statuses,
                              iso[column.view_index]))
    if plan.on_demand:
        for feature, series, views in zip(plan.on_demand, _on_demand(plan, entities, reads), plan.on_demand_views):
            statuses = _worst([reads[v].statuses for v in views], present)
            results.append(vector(json_values(series), statuses, no_times))
            reads.append(ViewRead([series.to_list()], statuses, no_times, no_times))
    return results, reads


def _on_demand(plan: LeanPlan, entities: Mapping[str, list[Any]], reads: list[ViewRead]) -> list[pl.Series]:
    """The on-demand features, computed by `apply_on_demand` from the frame the full path gives it."""
    columns = [pl.Series(name, entities[name], dtype=pl.Int64() if name in plan.int_columns else pl.String())
               for name in plan.entity_columns]
    columns += [pl.Series(i.name, reads[i.view_index].columns[i.feature_index], dtype=i.dtype)
                for i in plan.on_demand_inputs]
    try:
        computed = apply_on_demand(pl.DataFrame(columns), plan.on_demand)
    except OnDemandFeatureError as error:
        raise _Fallback from error
    return [computed.get_column(feature.name) for feature in plan.on_demand]


def _worst(inputs: list[list[str]], present: list[str]) -> list[str]:
    """Per row, the worst status of an on-demand feature's input views (as `ServedStatuses`)."""
    if not inputs:
        return present
    return [max(row, key=_STATUS_RANK.__getitem__) for row in zip(*inputs)]


def _nulls(count: int) -> list[None]:
    return [None] * count


class LeanLogRecord:
    """A lean answer as the request log's `RowSource`: what the request already holds, queued as
    is; the writer thread writes the rows `LogRecorder.served_request` would give for it."""

    __slots__ = ("entities", "height", "plan", "read_at", "reads", "request_id", "row_count")

    def __init__(self, plan: LeanPlan, request_id: str, read_at: datetime, entities: Mapping[str, list[Any]],
                 height: int, reads: list[ViewRead]) -> None:
        self.plan, self.request_id, self.read_at, self.entities = plan, request_id, read_at, entities
        self.height, self.reads, self.row_count = height, reads, height * len(plan.logged)

    def add_rows(self, columns: LogColumns) -> None:
        plan, reads, height, entities = self.plan, self.reads, self.height, self.entities
        logged = plan.logged
        rows = self.row_count
        columns.add_request_id([self.request_id] * rows)
        columns.add_request_time([columns.micros(self.read_at)] * rows)
        columns.add_service([None] * rows)  # the lean path serves feature references, never a service
        if height == 1:  # the common case: one row per logged feature, the plan's lists as they are
            columns.add_index(plan.log_zeros)
            columns.add_view(plan.log_views)
            columns.add_feature(plan.log_features)
            key_json = {keys: columns.entity_key_json(keys, tuple(entities[key][0] for key in keys))
                        for keys in plan.log_key_sets}
            columns.add_entity_key([key_json[field.keys] for field in logged])
            for (name, add_key), mask in zip(columns.add_keys, plan.log_key_masks(columns.key_names)):
                value = entities[name][0] if name in entities else None
                add_key([value if has_key else None for has_key in mask])
            values = [reads[field.view_index].columns[field.feature_index][0] for field in logged]
            columns.add_status([reads[field.view_index].statuses[0] for field in logged])
            columns.add_event_time([reads[field.view_index].ts_us[0] for field in logged])
        else:
            nulls = [None] * height
            columns.add_index(list(range(height)) * len(logged))
            columns.add_view([field.view for field in logged for _ in nulls])
            columns.add_feature([field.feature for field in logged for _ in nulls])
            key_lists = {keys: entity_keys_json(entities, keys, height) for keys in plan.log_key_sets}
            columns.add_entity_key([text for field in logged for text in key_lists[field.keys]])
            for name, add_key in columns.add_keys:
                column = entities.get(name, nulls)
                add_key([value for field in logged for value in (column if name in field.keys else nulls)])
            values = [value for field in logged for value in reads[field.view_index].columns[field.feature_index]]
            columns.add_status([status for field in logged for status in reads[field.view_index].statuses])
            columns.add_event_time([ts for field in logged for ts in reads[field.view_index].ts_us])
        # A finite float's JSON is its repr (as value_json gives it); v - v is 0.0 only when finite.
        columns.add_json([repr(v) if type(v) is float and v - v == 0.0 else value_json(v) for v in values])
        columns.add_float([v if type(v) is float else value_float(v) for v in values])


_EPOCH = snapshot_time(0)
_ONE_US = snapshot_time(1) - _EPOCH


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None if the client disconnected first."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the full app the body already read, then the client's own messages."""
    pending = True

    async def replayed() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def unavailable_response(error: StoreUnavailableError) -> JSONResponse:
    """The 503 the full path's error handler gives for the same error."""
    return JSONResponse(error.to_error_detail(), status_code=error.http_status, headers=error.headers)


