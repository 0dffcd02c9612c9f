"""Feature services: the named feature vector of one model, declared once, the same in training
and serving (Feast's `FeatureService`, Databricks' `FeatureSpec`).

A service lists "view:feature" references (stored features, and on-demand features as
"on_demand:<name>") in the order of the model's vector, and the model-dependent transformations
applied to them (`features/transforms.py`). Its vector's columns are the referenced features'
names, in declared order, with the dtypes `service_schema` gives.

`version` is a fingerprint of everything that decides the vector's values: the references, the
definition of each referenced feature (dtype, aggregation, window, source column, null policy;
an on-demand feature's dtype, inputs, request columns and expression) and the transformations.
It is the first 12 hex digits of the SHA-256 of that declaration as canonical JSON, so it is
stable across processes and machines and changes whenever the vector could. The owner, the
description and the pinned statistics version are left out: they do not change a value, and
statistics are fitted for a service version (a pin inside the fingerprint would make every fit
change the version it was fitted for).

`statistics_version` pins which fitted version of the service's statistics every path applies
(`offline/fitted_statistics.load_fitted_statistics`). It is a declaration, reviewed like code:
a refit writes a new version, and nothing uses it until the pin moves.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import polars as pl

from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.features.on_demand import ON_DEMAND_FEATURES, OnDemandFeature
from feature_pipelines.features.references import split_reference
from feature_pipelines.features.spec import FeatureDefinitionError, FeatureView
from feature_pipelines.features.transforms import (
    ClipBounds,
    ClipQuantiles,
    FittedStatistics,
    FittedStatisticsError,
    FittedStep,
    Impute,
    ImputeStrategy,
    Standardize,
    Transform,
    needs_numeric,
    output_dtype,
    transformed_column,
)
from feature_pipelines.names import ON_DEMAND_VIEW

_SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
VERSION_LENGTH = 12


@dataclass(frozen=True)
class FeatureService:
    """A model's feature vector: `features` ("view:feature" or "on_demand:<name>") in vector order,
    `transforms` applied to them, and the fitted `statistics_version` they use (None when the
    service declares no transformation needing statistics, or before the first fit is pinned)."""

    name: str
    owner: str
    description: str
    features: tuple[str, ...]
    transforms: tuple[Transform, ...] = ()
    statistics_version: int | None = None
    version: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        if not _SNAKE.match(self.name):
            raise FeatureDefinitionError(f"feature service {self.name!r}: the name must be snake_case")
        if not self.features:
            raise FeatureDefinitionError(f"feature service {self.name!r} declares no features")
        names: dict[str, str] = {}
        for reference in self.features:
            parsed = split_reference(reference)
            if parsed is None:
                raise FeatureDefinitionError(
                    f"feature service {self.name!r}: reference {reference!r} is not of the form 'view:feature' "
                    f"or '{ON_DEMAND_VIEW}:<name>'"
                )
            if parsed.feature in names:
                raise FeatureDefinitionError(
                    f"feature service {self.name!r}: feature {parsed.feature!r} is referenced twice "
                    f"({names[parsed.feature]!r} and {reference!r}); a vector column appears once"
                )
            names[parsed.feature] = reference
        self._check_transforms(set(names))
        if self.statistics_version is not None and self.statistics_version < 1:
            raise FeatureDefinitionError(
                f"feature service {self.name!r}: statistics_version must be 1 or more, got {self.statistics_version}"
            )
        object.__setattr__(self, "version", _fingerprint(self))

    def _check_transforms(self, columns: set[str]) -> None:
        seen: set[tuple[str, str]] = set()  # kind, not strategy: a feature is imputed once
        for transform in self.transforms:
            if transform.feature not in columns:
                raise FeatureDefinitionError(
                    f"feature service {self.name!r}: {transform.kind} on {transform.feature!r}, which the service "
                    f"does not reference; its features: {sorted(columns)}"
                )
            if (transform.feature, transform.kind) in seen:
                raise FeatureDefinitionError(
                    f"feature service {self.name!r}: {transform.kind} declared twice on {transform.feature!r}"
                )
            seen.add((transform.feature, transform.kind))

    @property
    def column_names(self) -> list[str]:
        """The vector's columns, in declared order."""
        return [reference.partition(":")[2] for reference in self.features]

    @property
    def stored_references(self) -> tuple[str, ...]:
        """The references read from feature views (everything but on-demand features)."""
        return tuple(r for r in self.features if r.partition(":")[0] != ON_DEMAND_VIEW)

    @property
    def on_demand_names(self) -> tuple[str, ...]:
        return tuple(r.partition(":")[2] for r in self.features if r.partition(":")[0] == ON_DEMAND_VIEW)

    @property
    def needs_statistics(self) -> bool:
        """True when a transformation needs a fitted statistic (all but fixed-bound clipping)."""
        return any(transform.statistics for transform in self.transforms)

    def transforms_for(self, feature: str) -> tuple[Transform, ...]:
        return tuple(transform for transform in self.transforms if transform.feature == feature)


def _feature_declaration(reference: str) -> dict[str, object]:
    """What decides a referenced feature's values, from the project's catalog (unknown: the bare
    reference; the catalog check refuses it before any version is used)."""
    view_name, _, name = reference.partition(":")
    if view_name == ON_DEMAND_VIEW:
        on_demand = ON_DEMAND_FEATURES.get(name)
        if on_demand is None:
            return {"reference": reference}
        return {"reference": reference, "dtype": on_demand.dtype, "inputs": list(on_demand.inputs),
                "request_columns": list(on_demand.request_columns), "expression": str(on_demand.expression)}
    view = FEATURE_VIEWS.get(view_name)
    feature = next((f for f in view.features if f.name == name), None) if view is not None else None
    if feature is None:
        return {"reference": reference}
    return {"reference": reference, "dtype": feature.dtype, "aggregation": feature.aggregation.value,
            "window": feature.window, "source_column": feature.source_column, "null_policy": feature.null_policy.value}


def _fingerprint(service: FeatureService) -> str:
    declaration = {
        "features": [_feature_declaration(reference) for reference in service.features],
        "transforms": [transform.declaration() for transform in service.transforms],
    }
    text = json.dumps(declaration, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:VERSION_LENGTH]


def _raw_dtype(service: FeatureService, reference: str, views: Mapping[str, FeatureView],
               on_demand: Mapping[str, OnDemandFeature]) -> pl.DataType:
    view_name, _, name = reference.partition(":")
    if view_name == ON_DEMAND_VIEW:
        feature = on_demand.get(name)
        if feature is None:
            raise FeatureDefinitionError(
                f"feature service {service.name!r}: {reference!r} is not a declared on-demand feature; "
                f"known: {sorted(on_demand)}"
            )
        return feature.polars_dtype
    view = views.get(view_name)
    if view is None:
        raise FeatureDefinitionError(
            f"feature service {service.name!r}: {reference!r} names unknown feature view {view_name!r}; known: {sorted(views)}"
        )
    declared = next((f for f in view.features if f.name == name), None)
    if declared is None:
        raise FeatureDefinitionError(
            f"feature service {service.name!r}: view {view_name!r} has no feature {name!r}; its features: "
            f"{list(view.feature_names)}"
        )
    return declared.polars_dtype


def raw_service_schema(
    service: FeatureService, views: Mapping[str, FeatureView] = FEATURE_VIEWS,
    on_demand: Mapping[str, OnDemandFeature] = ON_DEMAND_FEATURES,
) -> dict[str, pl.DataType]:
    """The vector's columns and dtypes before any transformation (what a training-set table holds)."""
    return {reference.partition(":")[2]: _raw_dtype(service, reference, views, on_demand) for reference in service.features}


def service_schema(
    service: FeatureService, views: Mapping[str, FeatureView] = FEATURE_VIEWS,
    on_demand: Mapping[str, OnDemandFeature] = ON_DEMAND_FEATURES,
) -> dict[str, pl.DataType]:
    """The exact columns, in order, and polars dtypes of the service's vector, transformations
    applied: what a training frame and a served vector of this service both hold."""
    raw = raw_service_schema(service, views, on_demand)
    return {name: output_dtype(dtype, service.transforms_for(name)) for name, dtype in raw.items()}


def vector_dtype_problem(schema: Mapping[str, pl.DataType], expected: Mapping[str, pl.DataType]) -> str | None:
    """What a frame's `schema` lacks of a service vector's `expected` columns and dtypes, in words
    (None when it holds them all): what a training frame and a model's input both refuse."""
    wrong = {name: str(schema.get(name)) for name, dtype in expected.items() if schema.get(name) != dtype}
    if not wrong:
        return None
    return f"column(s) {wrong} (found dtype, None = missing) should be { {name: str(expected[name]) for name in wrong} }"


def validate_services(
    services: Sequence[FeatureService], views: Mapping[str, FeatureView],
    on_demand: Mapping[str, OnDemandFeature],
) -> dict[str, FeatureService]:
    """Index services by name and check each against the views and on-demand features, at load time:
    a duplicated name, an unknown reference, or a numeric transformation of a non-numeric feature
    is refused here rather than on the first request."""
    by_name: dict[str, FeatureService] = {}
    for service in services:
        if service.name in by_name:
            raise FeatureDefinitionError(f"feature service {service.name!r} is declared twice")
        raw = raw_service_schema(service, views, on_demand)
        for transform in service.transforms:
            dtype = raw[transform.feature]
            if needs_numeric(transform) and dtype not in (pl.Int64(), pl.Float64()):
                raise FeatureDefinitionError(
                    f"feature service {service.name!r}: {transform.kind} on {transform.feature!r} needs a numeric "
                    f"feature (int64 or float64), got {dtype}"
                )
        if service.needs_statistics is False and service.statistics_version is not None:
            raise FeatureDefinitionError(
                f"feature service {service.name!r} pins statistics_version {service.statistics_version} but no "
                "transformation of it needs fitted statistics"
            )
        by_name[service.name] = service
    return by_name


class ServiceStatisticsError(LookupError):
    """Fitted statistics that do not belong to the service they are applied with."""


def apply_service_transforms(frame: pl.DataFrame, service: FeatureService, statistics: FittedStatistics | None) -> pl.DataFrame:
    """`frame` with the service's transformations applied to its vector columns, in place (same
    names, same column order; other columns untouched). The function the training set,
    `get_historical_features(feature_service=...)` and the feature server all call.

    `statistics` must be the fitted version the service uses (`load_fitted_statistics`), fitted
    for this very service version; None only when the service needs no fitted statistic. Nothing
    here computes a statistic: a row's output depends on that row and `statistics` alone.

    Raises:
        ServiceStatisticsError: statistics for another service or service version, or missing.
        FittedStatisticsError: statistics that do not match the declared transformations.
        TypeError: `statistics` is not a `FittedStatistics` (say, a frame to fit on).
    """
    if not service.transforms:
        return frame
    if statistics is None:
        if service.needs_statistics:
            raise ServiceStatisticsError(
                f"feature service {service.name!r} (version {service.version}) needs fitted statistics; load them with "
                "load_fitted_statistics(store, service)"
            )
        steps = {name: [FittedStep(t) for t in service.transforms_for(name)] for name in service.column_names}
    else:
        if not isinstance(statistics, FittedStatistics):
            raise TypeError(f"statistics must be FittedStatistics, got {type(statistics).__name__}")
        _check_statistics_belong(service, statistics)
        steps = {name: list(statistics.steps_for(name)) for name in service.column_names}
    missing = [name for name in service.column_names if name not in frame.columns]
    if missing:
        raise ServiceStatisticsError(f"feature service {service.name!r}: the frame lacks vector column(s) {missing}")
    schema = frame.schema
    return frame.with_columns(
        transformed_column(name, schema[name], chosen) for name, chosen in steps.items() if chosen
    )


def _check_statistics_belong(service: FeatureService, statistics: FittedStatistics) -> None:
    if (statistics.service, statistics.service_version) != (service.name, service.version):
        raise ServiceStatisticsError(
            f"statistics version {statistics.version} were fitted for service {statistics.service!r} version "
            f"{statistics.service_version}, not {service.name!r} version {service.version}"
        )
    declared = [t.declaration() for t in service.transforms]
    fitted = [step.transform.declaration() for step in statistics.steps]
    if fitted != declared:
        raise FittedStatisticsError(
            f"statistics version {statistics.version} of {service.name!r} hold transformations {fitted}, "
            f"the service declares {declared}"
        )


# -- the catalog ---------------------------------------------------------------------------------

_FLIGHT_DELAY_FEATURES = (
    "route_delay_stats:route_dep_delay_mean_24h",
    "route_delay_stats:route_dep_delay_p90_7d",
    "route_delay_stats:route_cancel_rate_7d",
    "route_delay_stats:route_flights_count_7d",
    "carrier_delay_stats:carrier_dep_delay_mean_24h",
    "carrier_delay_stats:carrier_cancel_rate_24h",
    "origin_weather:origin_visib_latest",
    "origin_weather:origin_wind_speed_latest",
    "origin_weather:origin_precip_sum_6h",
    "aircraft_utilisation:aircraft_flights_count_24h",
    f"{ON_DEMAND_VIEW}:route_dep_delay_ratio_24h_7d",
)

flight_delay_v1 = FeatureService(
    name="flight_delay_v1",
    owner="pricing-ml@feature-pipelines.example",
    description="Will a flight arrive more than 15 minutes late: the flight-delay training set's features "
    "as stored, plus today's route delay relative to its week. No transformation.",
    features=_FLIGHT_DELAY_FEATURES,
)
"""The vector of the flight-delay model, raw: a tree model needs no scaling and reads nulls itself."""

flight_delay_v2 = FeatureService(
    name="flight_delay_v2",
    owner="pricing-ml@feature-pipelines.example",
    description="flight_delay_v1 for a linear model: delays imputed with their training median and "
    "standardised, the ratio clipped to its 1st-99th training percentiles, counts clipped at 0.",
    features=_FLIGHT_DELAY_FEATURES,
    transforms=(
        Impute("route_dep_delay_mean_24h", ImputeStrategy.MEDIAN),
        Standardize("route_dep_delay_mean_24h"),
        Impute("carrier_dep_delay_mean_24h", ImputeStrategy.MEAN),
        Standardize("carrier_dep_delay_mean_24h"),
        Impute("origin_visib_latest", ImputeStrategy.MODE),
        Impute("route_dep_delay_ratio_24h_7d", ImputeStrategy.MEDIAN),
        ClipQuantiles("route_dep_delay_ratio_24h_7d", lower=0.01, upper=0.99),
        ClipBounds("route_flights_count_7d", lower=0.0),
        Standardize("route_flights_count_7d"),
    ),
    statistics_version=1,
)
"""A linear model cannot take a null or a delay in minutes next to a rate in [0, 1]."""


FEATURE_SERVICES: dict[str, FeatureService] = validate_services(
    [flight_delay_v1, flight_delay_v2], FEATURE_VIEWS, ON_DEMAND_FEATURES
)
"""This project's feature services, by name."""
