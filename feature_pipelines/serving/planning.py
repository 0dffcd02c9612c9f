"""A feature request validated into a plan: which features of which views, for which typed entity rows."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import polars as pl

from feature_pipelines.features.on_demand import OnDemandFeature
from feature_pipelines.features.references import (
    FeatureReference,
    UnknownFeatureError,
    ViewRequest,
    parse_reference,
    resolve_references,
)
from feature_pipelines.features.services import FeatureService
from feature_pipelines.features.spec import FeatureView
from feature_pipelines.names import ON_DEMAND_VIEW
from feature_pipelines.serving.errors import InvalidRequestError, TooLargeError, UnknownReferenceError
from feature_pipelines.serving.models import GetOnlineFeaturesRequest

_INT64_RANGE = range(-(2**63), 2**63)
# Per scalar dtype: the JSON types accepted, and how the message names them.
_JSON_TYPES: tuple[tuple[pl.DataType, tuple[type, ...], str], ...] = (
    (pl.String(), (str,), "strings"),
    (pl.Int64(), (int,), "integers"),
    (pl.Float64(), (int, float), "numbers"),
    (pl.Boolean(), (bool,), "booleans"),
)


@dataclass(frozen=True)
class RequestPlan:
    """A validated request: what to read, from which rows, and how to name and log it."""

    stored: list[str]
    requests: list[ViewRequest]
    on_demand: list[OnDemandFeature]
    entity_rows: pl.DataFrame
    entity_columns: list[str]
    full_feature_names: bool
    service: FeatureService | None = None  # a feature service's request: its vector, transformed


@dataclass(frozen=True)
class ColumnRole:
    """Why a request must carry a column, and what it is (an entity key or an on-demand request column)."""

    reason: str
    request_dtype: pl.DataType | None = None

    @property
    def what(self) -> str:
        return "entity key" if self.request_dtype is None else "request column"


class RequestPlanner:
    """Turns request bodies into plans against one catalog, refusing what it cannot serve."""

    def __init__(
        self,
        views: Mapping[str, FeatureView],
        on_demand: Mapping[str, OnDemandFeature],
        *,
        key_dtypes: Mapping[str, pl.DataType] | None,
        max_entities: int,
        services: Mapping[str, FeatureService] | None = None,
    ) -> None:
        if ON_DEMAND_VIEW in views:
            raise ValueError(f"a feature view may not be named {ON_DEMAND_VIEW!r}: that name holds on-demand features")
        if max_entities < 1:
            raise ValueError(f"max_entities must be positive, got {max_entities}")
        self.views = views
        self.on_demand = on_demand
        self.services = services or {}
        self.max_entities = max_entities
        self.key_dtypes: dict[str, pl.DataType] = {key: pl.String() for view in views.values() for key in view.entity_keys}
        self.key_dtypes.update(key_dtypes or {})

    def plan(self, body: GetOnlineFeaturesRequest) -> RequestPlan:
        service = self.service(body.feature_service) if body.feature_service is not None else None
        stored, chosen = self._split_references(list(service.features) if service else body.features or [])
        requests = resolve_references(stored, self.views) if stored else []
        roles = self._needed_columns(requests, chosen)
        self._check_columns(body.entities, roles)
        columns = [_column(name, values, self._dtype(name, roles[name]), roles[name].what)
                   for name, values in body.entities.items()]
        return RequestPlan(stored, requests, chosen, pl.DataFrame(columns), list(body.entities),
                           body.full_feature_names, service)

    def service(self, name: str) -> FeatureService:
        """A feature service of this server's catalog, or a 404 naming the known ones."""
        found = self.services.get(name)
        if found is None:
            raise UnknownReferenceError(f"unknown feature service {name!r}; known: {sorted(self.services)}")
        return found

    def references(self, body: GetOnlineFeaturesRequest) -> list[str]:
        """What a request reads: its references, or its service's (for authorisation before planning)."""
        if body.feature_service is not None:
            return list(self.service(body.feature_service).features)
        return list(body.features or [])

    def _split_references(self, references: list[str]) -> tuple[list[str], list[OnDemandFeature]]:
        """The stored references (resolved later against the views) and the on-demand features."""
        stored: list[str] = []
        chosen: list[OnDemandFeature] = []
        seen: set[str] = set()
        for reference in references:
            parsed = _parse(reference)
            if reference in seen:
                raise InvalidRequestError(f"feature reference {reference!r} is requested twice")
            seen.add(reference)
            if parsed.view != ON_DEMAND_VIEW:
                stored.append(reference)
                continue
            feature = self.on_demand.get(parsed.feature)
            if feature is None:
                raise UnknownReferenceError(f"feature reference {reference!r}: unknown on-demand feature "
                                            f"{parsed.feature!r}; known: {sorted(self.on_demand)}")
            chosen.append(feature)
        return stored, chosen

    def _needed_columns(self, requests: list[ViewRequest], chosen: list[OnDemandFeature]) -> dict[str, ColumnRole]:
        """Every column the request must carry, in the order it becomes needed, with why."""
        needed: dict[str, ColumnRole] = {}
        for request in requests:
            for key in request.view.entity_keys:
                needed.setdefault(key, ColumnRole(f"join key of view {request.view.name!r}"))
        for feature in chosen:
            for view_name in feature.input_views():
                for key in self.views[view_name].entity_keys:
                    needed.setdefault(key, ColumnRole(f"join key of view {view_name!r}, an input of {feature.name!r}"))
            for column in feature.request_columns:
                needed.setdefault(column, ColumnRole(f"request column of on-demand feature {feature.name!r}"))
                needed[column] = ColumnRole(needed[column].reason, feature.request_dtypes[column])
        return needed

    def _check_columns(self, entities: Mapping[str, list[Any]], needed: Mapping[str, ColumnRole]) -> None:
        """Refuse columns that are not exactly the needed ones, of one length, with 1 to max_entities rows."""
        missing = [column for column in needed if column not in entities]
        if missing:
            reasons = "; ".join(f"{column!r} ({needed[column].reason})" for column in missing)
            raise InvalidRequestError(f"entities: missing column(s) {reasons}")
        unknown = [column for column in entities if column not in needed]
        if unknown:
            raise InvalidRequestError(
                f"entities: column(s) {unknown} are neither join keys of the requested views nor "
                f"request columns of the requested on-demand features; expected {list(needed)}"
            )
        lengths = {column: len(values) for column, values in entities.items()}
        if len(set(lengths.values())) > 1:
            raise InvalidRequestError(f"entities: every column must have the same number of values, got {lengths}")
        height = next(iter(lengths.values()))
        if height == 0:
            raise InvalidRequestError("entities: no entity rows given")
        if height > self.max_entities:
            raise TooLargeError(
                f"entities: {height} rows requested, more than this server's limit of {self.max_entities}"
            )

    def _dtype(self, column: str, role: ColumnRole) -> pl.DataType:
        return role.request_dtype if role.request_dtype is not None else self.key_dtypes.get(column, pl.String())


def _parse(reference: str) -> FeatureReference:
    """The catalog's parse of "view:feature"; a malformed one is the caller's error (422), not an unknown one."""
    try:
        return parse_reference(reference)
    except UnknownFeatureError as error:
        raise InvalidRequestError(str(error)) from error


def _type_name(value: Any) -> str:
    return "null" if value is None else {bool: "boolean", int: "integer", float: "number", str: "string"}.get(
        type(value), type(value).__name__
    )


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _column(name: str, values: list[Any], dtype: pl.DataType, what: str) -> pl.Series:
    """An entity or request column of its declared dtype, or a 422 naming the first bad value."""
    if isinstance(dtype, pl.Datetime):
        return _timestamps(name, values, what)
    accepted = next(((types, label) for scalar, types, label in _JSON_TYPES if dtype == scalar), None)
    if accepted is None:
        raise InvalidRequestError(f"{what} {name!r} has dtype {dtype}, which the server cannot parse")
    expected, label = accepted
    nullable = what == "request column"
    for position, value in enumerate(values):
        if value is None and nullable:
            continue
        if not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected):
            shown = "null" if value is None else f"{_type_name(value)} {value!r}"
            raise InvalidRequestError(f"{what} {name!r} expects {label} ({dtype}); position {position} is {shown}")
        if isinstance(value, str) and not _is_unicode(value):
            # JSON lets "\ud800" through; no key can hold it, and encoding it later would be a 500.
            raise InvalidRequestError(f"{what} {name!r}: position {position} is not valid Unicode (a lone surrogate)")
        if isinstance(value, int) and dtype == pl.Int64 and value not in _INT64_RANGE:
            raise InvalidRequestError(f"{what} {name!r}: position {position} is out of the Int64 range")
    try:
        return pl.Series(name, values, dtype=dtype, strict=True)
    except (pl.exceptions.PolarsError, TypeError, OverflowError) as error:
        raise InvalidRequestError(f"{what} {name!r} cannot be read as {dtype}: {error}") from error


def _timestamps(name: str, values: list[Any], what: str) -> pl.Series:
    """A timestamp column from ISO-8601 strings with a UTC offset (a naive time is never assumed UTC)."""
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
            raise InvalidRequestError(f"{what} {name!r} expects ISO-8601 timestamps with a UTC offset "
                                      f"(e.g. 2024-05-01T14:30:00Z); position {position} is {value!r}")
        parsed.append(moment)
    return pl.Series(name, parsed, dtype=pl.Datetime("us", "UTC"))
