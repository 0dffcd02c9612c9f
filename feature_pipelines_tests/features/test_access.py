"""Consumer policies: PII and view restrictions, checked alike for training sets and serving.

`PII_VIEW` is a test-only view (the catalog declares no PII): an aircraft's registered owner
name is PII, its seat count is not. The serving tests use it too.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest

from feature_pipelines.features.access import (
    ConsumerPolicy,
    FeatureAccessError,
    check_feature_access,
    refused_features,
)
from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.features.entities import aircraft
from feature_pipelines.features.flights import FLIGHTS_SOURCE
from feature_pipelines.features.spec import (
    Aggregation,
    Feature,
    FeatureView,
    FreshnessSLA,
    NullPolicy,
    Partitioning,
)
from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.offline.historical import get_historical_features

PII_FEATURE = "aircraft_owner_name_latest"
PII_VIEW = FeatureView(
    name="aircraft_registry",
    entity=aircraft,
    source=FLIGHTS_SOURCE,
    partitioning=Partitioning.DAILY,
    features=(
        Feature(PII_FEATURE, "string", Aggregation.LATEST, "30d", source_column="owner_name",
                null_policy=NullPolicy.KEEP, pii=True, description="Registered owner (a person for private planes)."),
        Feature("aircraft_seats_latest", "int64", Aggregation.LATEST, "30d", source_column="seats",
                null_policy=NullPolicy.KEEP),
    ),
    ttl=timedelta(days=30),
    owner="tests@example.com",
    description="Test-only: one PII feature next to a harmless one.",
    freshness=FreshnessSLA(timedelta(days=1), timedelta(days=2)),
)
VIEWS: dict[str, FeatureView] = {PII_VIEW.name: PII_VIEW, "route_delay_stats": FEATURE_VIEWS["route_delay_stats"]}
PII_REF = f"{PII_VIEW.name}:{PII_FEATURE}"
SEATS_REF = f"{PII_VIEW.name}:aircraft_seats_latest"
ROUTE_REF = "route_delay_stats:route_dep_delay_mean_24h"
NO_PII = ConsumerPolicy("pricing-model", exclude_pii=True)
WITH_PII = ConsumerPolicy("fraud-team", exclude_pii=False)


def test_pii_is_refused_only_to_consumers_that_exclude_it() -> None:
    with pytest.raises(FeatureAccessError) as refused:
        check_feature_access([SEATS_REF, PII_REF, ROUTE_REF], VIEWS, NO_PII)
    assert str(refused.value) == (
        "consumer 'pricing-model' may not read feature(s): "
        "'aircraft_registry:aircraft_owner_name_latest' (PII, excluded for this consumer)"
    )
    assert refused.value.consumer == "pricing-model" and list(refused.value.refused) == [PII_REF]
    check_feature_access([SEATS_REF, PII_REF, ROUTE_REF], VIEWS, WITH_PII)
    check_feature_access([SEATS_REF, ROUTE_REF], VIEWS, NO_PII)
    check_feature_access([PII_REF], VIEWS, None)  # no consumer: unrestricted


def test_pii_exclusion_is_the_default() -> None:
    assert ConsumerPolicy("new-consumer").exclude_pii is True
    assert refused_features([PII_REF], VIEWS, ConsumerPolicy("new-consumer")) == {
        PII_REF: "PII, excluded for this consumer"
    }


def test_allowed_views_limit_a_consumer_and_every_refusal_is_named() -> None:
    routes_only = ConsumerPolicy("dashboard", exclude_pii=True, allowed_views=("route_delay_stats",))
    assert refused_features([ROUTE_REF, SEATS_REF, PII_REF], VIEWS, routes_only) == {
        SEATS_REF: "view 'aircraft_registry' is not among its allowed views ['route_delay_stats']",
        PII_REF: "view 'aircraft_registry' is not among its allowed views ['route_delay_stats']",
    }
    with pytest.raises(FeatureAccessError, match="aircraft_seats_latest.*aircraft_owner_name_latest"):
        check_feature_access([ROUTE_REF, SEATS_REF, PII_REF], VIEWS, routes_only)


def test_an_on_demand_feature_over_pii_is_refused() -> None:
    inputs = {"owner_name_length": (PII_REF,), "route_ratio": (ROUTE_REF,)}
    assert refused_features(["on_demand:owner_name_length", "on_demand:route_ratio"], VIEWS, NO_PII,
                            on_demand_inputs=inputs) == {
        "on_demand:owner_name_length": f"computed from refused input(s) {[PII_REF]}",
    }


def test_unknown_references_are_left_to_the_catalog_error() -> None:
    assert refused_features(["nope:x", f"{PII_VIEW.name}:nope", "no-colon"], VIEWS, NO_PII) == {}


def test_a_policy_needs_a_name_and_a_tuple_of_views() -> None:
    with pytest.raises(ValueError, match="non-empty name"):
        ConsumerPolicy(" ")
    with pytest.raises(ValueError, match="tuple of view names"):
        ConsumerPolicy("x", allowed_views="route_delay_stats")  # type: ignore[arg-type]


def _registry_table(now: datetime) -> pl.DataFrame:
    stamp = pl.Series([now - timedelta(days=1)] * 2, dtype=pl.Datetime("us", "UTC"))
    return pl.DataFrame({
        "tailnum": ["N1", "N2"], "event_timestamp": stamp, "created_timestamp": stamp,
        PII_FEATURE: ["Jane Doe", None], "aircraft_seats_latest": [4, 180],
    })


def test_a_training_set_for_an_excluding_consumer_cannot_include_pii(tmp_path: Path) -> None:
    """The offline path refuses exactly what the server refuses, before reading anything."""
    now = datetime.now(timezone.utc)
    store = DeltaStore(root=str(tmp_path / "lake"))
    store.write(PII_VIEW.name, _registry_table(now), time_slice=None)
    labels = pl.DataFrame({"tailnum": ["N1", "N2"],
                           "event_timestamp": pl.Series([now, now], dtype=pl.Datetime("us", "UTC"))})
    with pytest.raises(FeatureAccessError, match="consumer 'pricing-model' may not read .*aircraft_owner_name_latest"):
        get_historical_features(store, VIEWS, labels, [SEATS_REF, PII_REF], consumer=NO_PII)
    harmless = get_historical_features(store, VIEWS, labels, [SEATS_REF], consumer=NO_PII).frame
    assert harmless.columns == ["tailnum", "event_timestamp", "aircraft_seats_latest"]
    assert harmless["aircraft_seats_latest"].to_list() == [4, 180]
    allowed = get_historical_features(store, VIEWS, labels, [SEATS_REF, PII_REF], consumer=WITH_PII).frame
    assert allowed[PII_FEATURE].to_list() == ["Jane Doe", None]


def test_the_feature_store_facade_applies_its_consumer_to_both_paths(tmp_path: Path) -> None:
    from feature_pipelines import FeatureStore
    from feature_pipelines.online.local_server import LocalRedisServer

    store = DeltaStore(root=str(tmp_path / "lake"))
    entities = pl.DataFrame({"tailnum": ["N1"], "event_timestamp": [datetime(2013, 1, 2, tzinfo=timezone.utc)]})
    with LocalRedisServer() as server:
        facade = FeatureStore(lake=store, views=VIEWS, redis_client=server.client(), consumer=NO_PII)
        with pytest.raises(FeatureAccessError, match=f"pricing-model.*{PII_FEATURE}"):
            facade.get_historical_features(entities, [PII_REF])
        with pytest.raises(FeatureAccessError, match=f"pricing-model.*{PII_FEATURE}"):
            facade.get_online_features(entities.drop("event_timestamp"), [PII_REF, SEATS_REF])
        allowed = FeatureStore(lake=store, views=VIEWS, redis_client=server.client(), consumer=WITH_PII)
        assert allowed.get_online_features(entities.drop("event_timestamp"), [PII_REF]).height == 1
