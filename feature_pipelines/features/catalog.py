"""This project's feature views, in one registry; names must be unique across views."""

from __future__ import annotations

from collections.abc import Sequence

from feature_pipelines.features.flights import aircraft_utilisation, carrier_delay_stats, route_delay_stats
from feature_pipelines.features.spec import FeatureDefinitionError, FeatureView
from feature_pipelines.features.weather import origin_weather


def validate_catalog(views: Sequence[FeatureView]) -> dict[str, FeatureView]:
    """Index views by name; a duplicated view or feature name is an error, not a silent override."""
    by_name: dict[str, FeatureView] = {}
    feature_owner: dict[str, str] = {}
    for view in views:
        if view.name in by_name:
            raise FeatureDefinitionError(f"feature view {view.name!r} is declared twice")
        by_name[view.name] = view
        for name in view.feature_names:
            if name in feature_owner:
                raise FeatureDefinitionError(
                    f"feature {name!r} is declared by both {feature_owner[name]!r} and {view.name!r}"
                )
            feature_owner[name] = view.name
    return by_name


FEATURE_VIEWS: dict[str, FeatureView] = validate_catalog(
    [origin_weather, route_delay_stats, carrier_delay_stats, aircraft_utilisation]
)
