"""Search on the project's real catalog: by name, owner, tag, entity, raw column, user and free text; lineage
through on-demand features; deprecated features naming who still uses them."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from feature_pipelines.catalog.build import build_catalog, project_catalog
from feature_pipelines.catalog.entries import Catalog, RawColumn, State
from feature_pipelines.catalog.search import search
from feature_pipelines.catalog.text import details, listing
from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.features.on_demand import ON_DEMAND_FEATURES
from feature_pipelines.features.services import FEATURE_SERVICES
from feature_pipelines.features.spec import Lifecycle
from feature_pipelines.training.spec import FLIGHT_DELAY_TRAINING_SET

NOW = datetime(2013, 1, 8, 2, tzinfo=UTC)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return project_catalog(None, NOW)


def names(catalog: Catalog, query: str) -> set[str]:
    return {entry.name for entry in search(catalog, query)}


def test_every_declared_feature_is_listed_once(catalog: Catalog) -> None:
    declared = [name for view in FEATURE_VIEWS.values() for name in view.feature_names] + list(ON_DEMAND_FEATURES)
    assert [entry.name for entry in catalog.entries] == declared
    assert names(catalog, "") == set(declared)


def test_owner_matches_part_of_the_address(catalog: Catalog) -> None:
    assert names(catalog, "owner:fleet-ml") == set(FEATURE_VIEWS["aircraft_utilisation"].feature_names)
    assert names(catalog, "owner:FLEET-ML") == names(catalog, "owner:fleet-ml")
    assert names(catalog, "owner:nobody") == set()


def test_column_finds_every_feature_reading_a_raw_column_through_on_demand_features(catalog: Catalog) -> None:
    assert names(catalog, "column:dep_delay") == {
        "route_dep_delay_mean_24h", "route_dep_delay_p90_24h", "route_dep_delay_mean_7d", "route_dep_delay_p90_7d",
        "carrier_dep_delay_mean_24h", "carrier_dep_delay_p90_24h", "carrier_dep_delay_mean_7d",
        "carrier_dep_delay_p90_7d", "aircraft_dep_delay_mean_24h",
        "route_dep_delay_ratio_24h_7d", "carrier_dep_delay_ratio_24h_7d",
    }
    assert names(catalog, "column:raw_weather.visib") == {"origin_visib_latest"}
    assert names(catalog, "column:scheduled_departure") == {"scheduled_departure_hour_utc"}
    ratio = catalog.entry("route_dep_delay_ratio_24h_7d")
    assert RawColumn("raw_flights", "dep_delay", "value") in ratio.lineage
    assert RawColumn("raw_flights", "dep_known_at", "time") in ratio.lineage


def test_entity_tag_view_and_free_text(catalog: Catalog) -> None:
    assert names(catalog, "entity:tailnum") == set(FEATURE_VIEWS["aircraft_utilisation"].feature_names)
    # `origin` is an entity and one of the route's join keys.
    assert names(catalog, "entity:origin") == {*FEATURE_VIEWS["origin_weather"].feature_names,
                                               *FEATURE_VIEWS["route_delay_stats"].feature_names,
                                               "route_dep_delay_ratio_24h_7d"}
    assert names(catalog, "tag:domain=weather") == set(FEATURE_VIEWS["origin_weather"].feature_names)
    assert names(catalog, "tag:weather") == names(catalog, "tag:domain=weather")
    assert names(catalog, "visibility") == {"origin_visib_latest"}
    # A "view:feature" reference is free text: the feature, and the on-demand feature defined from it.
    assert names(catalog, "route_delay_stats:route_dep_delay_mean_24h") == {"route_dep_delay_mean_24h",
                                                                          "route_dep_delay_ratio_24h_7d"}


def test_words_are_all_matched(catalog: Catalog) -> None:
    assert names(catalog, "owner:pricing-ml column:cancelled") == {"route_cancel_rate_24h", "route_cancel_rate_7d"}
    assert names(catalog, "view:carrier_delay_stats 7d mean") == {"carrier_dep_delay_mean_7d"}


def test_users_include_services_training_sets_and_reads_through_on_demand_features(catalog: Catalog) -> None:
    v2 = names(catalog, "used_by:flight_delay_v2")
    assert "route_dep_delay_mean_7d" in v2  # an input of route_dep_delay_ratio_24h_7d, which v2 serves
    assert "route_dep_delay_p90_24h" not in v2
    assert names(catalog, "training_set:flight_delay_training_set") == names(catalog, "service:flight_delay_v1")
    uses = {str(use) for use in catalog.entry("route_dep_delay_mean_24h").uses_of("service")}
    assert "flight_delay_v2 (impute strategy=median, standardize)" in uses
    assert "flight_delay_v1 via route_dep_delay_ratio_24h_7d" in uses


def test_without_a_lake_every_state_is_unknown_never_invented(catalog: Catalog) -> None:
    for entry in catalog.entries:
        assert {entry.freshness.state, entry.quality.state, entry.drift.state, entry.skew.state} == {State.UNKNOWN}
    assert not catalog.models_listed
    assert "models         unknown (no model registry read)" in details(catalog.entry("route_flights_count_7d"),
                                                                       models_listed=False)


def test_deprecated_features_name_who_still_uses_them() -> None:
    views = dict(FEATURE_VIEWS)
    views["route_delay_stats"] = replace(views["route_delay_stats"], lifecycle=Lifecycle.DEPRECATED)
    views["aircraft_utilisation"] = replace(views["aircraft_utilisation"], lifecycle=Lifecycle.DEPRECATED)
    catalog = build_catalog(views, ON_DEMAND_FEATURES, FEATURE_SERVICES, [FLIGHT_DELAY_TRAINING_SET],
                            store=None, now=NOW)
    deprecated = names(catalog, "lifecycle:deprecated")
    # The ratio is as mature as its least mature input.
    assert deprecated == {*views["route_delay_stats"].feature_names, *views["aircraft_utilisation"].feature_names,
                          "route_dep_delay_ratio_24h_7d"}
    lines = {line.split()[0]: line for line in listing(search(catalog, "lifecycle:deprecated")).splitlines()[1:]}
    assert lines["route_dep_delay_mean_24h"].endswith(
        "<- deprecated, still used by service flight_delay_v1, service flight_delay_v2, "
        "training set flight_delay_training_set")
    assert lines["aircraft_distance_sum_24h"].endswith("<- deprecated, used by nobody: safe to remove")
    assert "deprecated" not in listing(search(catalog, "owner:ops-data"))
