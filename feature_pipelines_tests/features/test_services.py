"""Feature services: the catalog refuses what it cannot serve, the version follows the definition,
and the schema is the vector's exact columns and dtypes."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import polars as pl
import pytest

from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.features.on_demand import ON_DEMAND_FEATURES, OnDemandFeature
from feature_pipelines.features.services import (
    FEATURE_SERVICES,
    FeatureService,
    raw_service_schema,
    service_schema,
    validate_services,
)
from feature_pipelines.features.spec import FeatureDefinitionError
from feature_pipelines.features.transforms import ClipBounds, ClipQuantiles, Impute, ImputeStrategy, Standardize
from feature_pipelines.training.spec import FLIGHT_DELAY_TRAINING_SET

V1 = FEATURE_SERVICES["flight_delay_v1"]
V2 = FEATURE_SERVICES["flight_delay_v2"]


def _service(features: tuple[str, ...], transforms: tuple = (), **kwargs: object) -> FeatureService:
    return FeatureService(name="probe", owner="me@example.com", description="a probe", features=features,
                          transforms=transforms, **kwargs)  # type: ignore[arg-type]


def _validate(*services: FeatureService, on_demand: dict[str, OnDemandFeature] | None = None) -> dict[str, FeatureService]:
    return validate_services(list(services), FEATURE_VIEWS, ON_DEMAND_FEATURES if on_demand is None else on_demand)


def test_catalog_has_the_training_set_service_and_more() -> None:
    assert len(FEATURE_SERVICES) >= 2
    assert FLIGHT_DELAY_TRAINING_SET.service is V1
    stored = [r for r in V1.features if not r.startswith("on_demand:")]
    assert tuple(stored) == FLIGHT_DELAY_TRAINING_SET.features
    assert V1.on_demand_names == ("route_dep_delay_ratio_24h_7d",)
    assert V2.needs_statistics and V2.statistics_version == 1


@pytest.mark.parametrize(
    ("features", "message"),
    [
        (("route_delay_stats:route_dep_delay_mean_24h", "nowhere:x"), "unknown feature view 'nowhere'"),
        (("route_delay_stats:route_magic_24h",), "view 'route_delay_stats' has no feature 'route_magic_24h'"),
        (("on_demand:route_magic_ratio",), "'on_demand:route_magic_ratio' is not a declared on-demand feature"),
    ],
)
def test_unknown_references_are_refused_at_load(features: tuple[str, ...], message: str) -> None:
    with pytest.raises(FeatureDefinitionError, match=message):
        _validate(_service(features))


@pytest.mark.parametrize(
    ("features", "transforms", "message"),
    [
        (("route_delay_stats:route_dep_delay_mean_24h", "route_delay_stats:route_dep_delay_mean_24h"), (),
         "feature 'route_dep_delay_mean_24h' is referenced twice"),
        (("route_delay_stats:route_dep_delay_mean_24h",), (Standardize("carrier_dep_delay_mean_24h"),),
         "standardize on 'carrier_dep_delay_mean_24h', which the service does not reference"),
        (("route_delay_stats:route_dep_delay_mean_24h",),
         (Standardize("route_dep_delay_mean_24h"), Standardize("route_dep_delay_mean_24h")),
         "standardize declared twice on 'route_dep_delay_mean_24h'"),
        (("route_delay_stats:route_dep_delay_mean_24h",),
         (Impute("route_dep_delay_mean_24h", ImputeStrategy.MEAN), Impute("route_dep_delay_mean_24h", ImputeStrategy.MODE)),
         "impute declared twice on 'route_dep_delay_mean_24h'"),
        (("route_dep_delay_mean_24h",), (), "is not of the form 'view:feature'"),
        ((), (), "declares no features"),
    ],
)
def test_malformed_services_are_refused(features: tuple[str, ...], transforms: tuple, message: str) -> None:
    with pytest.raises(FeatureDefinitionError, match=message):
        _service(features, transforms)


def test_duplicate_service_names_and_useless_pins_are_refused() -> None:
    service = _service(("route_delay_stats:route_dep_delay_mean_24h",))
    with pytest.raises(FeatureDefinitionError, match="feature service 'probe' is declared twice"):
        _validate(service, service)
    pinned = _service(("route_delay_stats:route_dep_delay_mean_24h",), (ClipBounds("route_dep_delay_mean_24h", 0.0),),
                      statistics_version=1)
    with pytest.raises(FeatureDefinitionError, match="pins statistics_version 1 but no transformation"):
        _validate(pinned)
    with pytest.raises(FeatureDefinitionError, match="statistics_version must be 1 or more"):
        _service(("route_delay_stats:route_dep_delay_mean_24h",), (Standardize("route_dep_delay_mean_24h"),), statistics_version=0)


def test_numeric_transformations_of_a_text_feature_are_refused_and_mode_is_not() -> None:
    text = OnDemandFeature(name="route_label", dtype="string", expression=pl.col("label"), inputs=(),
                           request_columns=("label",), request_dtypes={"label": pl.String()})
    on_demand = {**ON_DEMAND_FEATURES, "route_label": text}
    with pytest.raises(FeatureDefinitionError, match="standardize on 'route_label' needs a numeric feature"):
        _validate(_service(("on_demand:route_label",), (Standardize("route_label"),)), on_demand=on_demand)
    moded = _service(("on_demand:route_label",), (Impute("route_label", ImputeStrategy.MODE),))
    assert _validate(moded, on_demand=on_demand)["probe"] is moded
    assert service_schema(moded, FEATURE_VIEWS, on_demand) == {"route_label": pl.String()}


def test_version_changes_with_the_definition_and_only_with_it() -> None:
    base = _service(("route_delay_stats:route_dep_delay_mean_24h", "origin_weather:origin_visib_latest"),
                    (ClipQuantiles("route_dep_delay_mean_24h", 0.01, 0.99),), statistics_version=1)
    assert len(base.version) == 12 and base.version == replace(base).version
    changed = [
        _service(("origin_weather:origin_visib_latest", "route_delay_stats:route_dep_delay_mean_24h"),
                 base.transforms, statistics_version=1),  # order of the vector
        _service(base.features, (ClipQuantiles("route_dep_delay_mean_24h", 0.05, 0.99),), statistics_version=1),
        _service(base.features, (*base.transforms, Standardize("origin_visib_latest")), statistics_version=1),
        _service((*base.features, "on_demand:route_dep_delay_ratio_24h_7d"), base.transforms, statistics_version=1),
    ]
    assert len({base.version, *(s.version for s in changed)}) == 1 + len(changed)
    same = [replace(base, owner="other@example.com"), replace(base, description="reworded"),
            replace(base, statistics_version=7), replace(base, name="probe_renamed")]
    assert {s.version for s in same} == {base.version}


def test_version_follows_the_referenced_feature_definitions(monkeypatch: pytest.MonkeyPatch) -> None:
    """Re-defining a referenced feature (here, an on-demand expression) must give a new version: the
    statistics fitted for the old definition describe other values."""
    from feature_pipelines.features import services

    service = _service(("on_demand:route_dep_delay_ratio_24h_7d",))
    original = ON_DEMAND_FEATURES["route_dep_delay_ratio_24h_7d"]
    redefined = replace(original, expression=pl.col("route_dep_delay_mean_24h") - pl.col("route_dep_delay_mean_7d"))
    monkeypatch.setattr(services, "ON_DEMAND_FEATURES", {**ON_DEMAND_FEATURES, original.name: redefined})
    assert replace(service).version != service.version
    monkeypatch.undo()
    assert replace(service).version == service.version


def test_version_is_the_same_in_another_process() -> None:
    code = "from feature_pipelines.features.services import FEATURE_SERVICES as S; print(S['flight_delay_v2'].version)"
    printed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert printed == V2.version


def test_service_schema_is_the_vector_in_order_with_transformed_dtypes() -> None:
    raw = raw_service_schema(V2)
    schema = service_schema(V2)
    assert list(schema) == V2.column_names == [r.split(":")[1] for r in V2.features]
    assert raw["route_flights_count_7d"] == pl.Int64() and schema["route_flights_count_7d"] == pl.Float64()
    assert schema["aircraft_flights_count_24h"] == pl.Int64()  # untransformed: as declared
    assert schema["route_dep_delay_ratio_24h_7d"] == pl.Float64()
    assert service_schema(V1) == raw_service_schema(V1) == raw
