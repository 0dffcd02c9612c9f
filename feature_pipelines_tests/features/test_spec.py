"""The definition layer rejects bad definitions at load time with a specific message."""

from __future__ import annotations

from datetime import timedelta

import pytest

from feature_pipelines.features.catalog import FEATURE_VIEWS, validate_catalog
from feature_pipelines.features.entities import route
from feature_pipelines.features.flights import FLIGHTS_SOURCE, route_delay_stats
from feature_pipelines.features.spec import (
    Aggregation,
    Feature,
    FeatureDefinitionError,
    FeatureView,
    FreshnessSLA,
    Partitioning,
)
from feature_pipelines.features.windows import parse_window, window_token


def _view(*features: Feature, partitioning: Partitioning = Partitioning.HOURLY) -> FeatureView:
    return FeatureView(
        name="route_checks",
        entity=route,
        source=FLIGHTS_SOURCE,
        partitioning=partitioning,
        features=features,
        ttl=timedelta(days=2),
        owner="tests@example.com",
        description="d",
        freshness=FreshnessSLA(timedelta(hours=2), timedelta(hours=3)),
    )


def test_catalog_loads_and_names_follow_convention() -> None:
    assert set(FEATURE_VIEWS) == {"origin_weather", "route_delay_stats", "carrier_delay_stats", "aircraft_utilisation"}
    assert "route_dep_delay_mean_24h" in route_delay_stats.feature_names
    assert "route_dep_delay_p90_7d" in route_delay_stats.feature_names


@pytest.mark.parametrize(
    "name",
    ["f3", "route_dep_delay_mean", "carrier_dep_delay_mean_24h", "route_dep_delay_mean_7d", "route__mean_24h", "Route_x_24h"],
)
def test_bad_feature_name_is_rejected_naming_view_and_convention(name: str) -> None:
    with pytest.raises(FeatureDefinitionError, match=rf"'route_checks'.*{name!r}.*entity_metric_window"):
        _view(Feature(name, "float64", Aggregation.MEAN, "24h", "dep_delay"))


@pytest.mark.parametrize("window", ["24", "1w", "-3h", "h", "0h", "24 h"])
def test_window_that_does_not_parse_is_rejected(window: str) -> None:
    with pytest.raises(FeatureDefinitionError, match=rf"route_dep_delay_mean_24h.*window {window!r} does not parse"):
        Feature("route_dep_delay_mean_24h", "float64", Aggregation.MEAN, window, "dep_delay")


def test_window_tokens_are_canonical() -> None:
    assert window_token(parse_window("24h")) == "24h"
    assert window_token(parse_window("1d")) == "24h"
    assert window_token(parse_window("7d")) == "7d"
    assert window_token(parse_window("90m")) == "90m"


def test_window_not_multiple_of_partition_interval_is_rejected() -> None:
    with pytest.raises(FeatureDefinitionError, match="not a whole number of daily snapshot steps"):
        _view(Feature("route_dep_delay_mean_36h", "float64", Aggregation.MEAN, "36h", "dep_delay"), partitioning=Partitioning.DAILY)


def test_ttl_shorter_than_interval_and_duplicates_are_rejected() -> None:
    feature = Feature("route_dep_delay_mean_24h", "float64", Aggregation.MEAN, "24h", "dep_delay")
    with pytest.raises(FeatureDefinitionError, match="declared twice"):
        _view(feature, feature)
    with pytest.raises(FeatureDefinitionError, match="declared twice"):
        validate_catalog([route_delay_stats, route_delay_stats])
    with pytest.raises(FeatureDefinitionError, match="unknown_type|dtype 'decimal'"):
        Feature("route_dep_delay_mean_24h", "decimal", Aggregation.MEAN, "24h", "dep_delay")
