"""The feature server's HTTP contract: request and response models, as the OpenAPI spec shows them."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator


class Status(str, Enum):
    """How a value was found, per entity row (Feast's FieldStatus names)."""

    PRESENT = "PRESENT"
    NOT_FOUND = "NOT_FOUND"
    OUTSIDE_MAX_AGE = "OUTSIDE_MAX_AGE"


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
                },
                {
                    "feature_service": "flight_delay_v2",
                    "entities": {"origin": ["EWR"], "dest": ["ORD"], "carrier": ["UA"], "tailnum": ["N14228"]},
                },
            ]
        },
    )

    features: list[str] | None = Field(
        default=None,
        min_length=1,
        description='References "view:feature"; on-demand features as "on_demand:<name>". Give this or '
        "`feature_service`.",
    )
    feature_service: str | None = Field(
        default=None,
        min_length=1,
        description="A feature service's name (GET /feature-services): its vector, in its order, with its "
        "fitted transformations applied, exactly as its training frame. Give this or `features`.",
    )
    entities: dict[str, list[Any]] = Field(
        min_length=1,
        description="Entity join keys and request columns, one list per column, all of one length.",
    )
    full_feature_names: StrictBool = Field(
        default=False, description='Name features "view__feature" in the response metadata.'
    )

    @model_validator(mode="after")
    def _features_or_service(self) -> GetOnlineFeaturesRequest:
        if (self.features is None) == (self.feature_service is None):
            raise ValueError("give exactly one of `features` and `feature_service`")
        return self


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


class PushRequest(BaseModel):
    """Raw events for a streaming table, as its rows (datetimes as integer microseconds since the epoch)."""

    model_config = ConfigDict(extra="forbid")

    table: str = Field(min_length=1, description="A raw table that streams (raw_flights, raw_weather).")
    events: list[dict[str, Any]] = Field(
        min_length=1,
        description="The events, one object per row of the table. They are not judged here: the stream "
        "consumer applies the raw rules and dead-letters what fails, with its reason.",
    )


class PushResponse(BaseModel):
    table: str
    accepted: int
    entry_ids: list[str] = Field(description="The events' stream entry ids, in the order sent.")


class ServiceColumn(BaseModel):
    name: str
    dtype: str


class FeatureServiceInfo(BaseModel):
    """One feature service: what it serves, and whether its fitted statistics are loaded."""

    name: str
    owner: str
    description: str
    version: str = Field(description="Fingerprint of the definition: references, features' definitions, transforms.")
    features: list[str]
    columns: list[ServiceColumn] = Field(description="The served vector: columns in order, with their dtypes.")
    transforms: list[str]
    statistics_version: int | None = Field(description="The fitted statistics version the service pins.")
    ready: bool
    reason: str | None = Field(default=None, description="Why the service cannot be served, when not ready.")


class FeatureServicesResponse(BaseModel):
    services: list[FeatureServiceInfo]


class HealthResponse(BaseModel):
    status: Literal["ok", "unavailable"]
    redis: str
    request_log: dict[str, Any] | None = None


# The documented error answers of /get-online-features (the statuses of serving.errors).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in (
        (400, "A body that cannot be parsed at all (not UTF-8 text)."),
        (401, "Missing or invalid API key."),
        (403, "The authenticated consumer may not read some of the requested features."),
        (404, "Unknown feature view, feature or feature service."),
        (413, "Too many entity rows, or too large a body."),
        (503, "The online store (Redis) is unreachable or slow, or a service's fitted statistics are not loaded."),
    )
}
