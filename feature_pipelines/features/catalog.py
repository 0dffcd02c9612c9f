"""This project's feature views, in one registry; names must be unique across views."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from feature_pipelines.features.drift_thresholds import DRIFT_THRESHOLDS, NOT_STATIONARY_PREFIXES
from feature_pipelines.features.flights import aircraft_utilisation, carrier_delay_stats, route_delay_stats
from feature_pipelines.features.spec import FeatureDefinitionError, FeatureMonitoring, FeatureView
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


def with_monitoring(
    view: FeatureView, thresholds: Mapping[str, FeatureMonitoring], not_stationary: Sequence[str]
) -> FeatureView:
    """The view with each feature's calibrated drift thresholds (features/drift_thresholds.py)."""
    features = []
    for feature in view.features:
        monitoring = thresholds.get(feature.name)
        if monitoring is None and feature.name.startswith(tuple(not_stationary)):
            monitoring = replace(feature.monitoring, stationary=False)
        features.append(replace(feature, monitoring=monitoring) if monitoring is not None else feature)
    return replace(view, features=tuple(features))


def _check_thresholds_name_features(views: Sequence[FeatureView], thresholds: Mapping[str, FeatureMonitoring]) -> None:
    known = {name for view in views for name in view.feature_names}
    unknown = sorted(set(thresholds) - known)
    if unknown:
        raise FeatureDefinitionError(f"drift thresholds for unknown feature(s) {unknown}")


_VIEWS = [origin_weather, route_delay_stats, carrier_delay_stats, aircraft_utilisation]
_check_thresholds_name_features(_VIEWS, DRIFT_THRESHOLDS)
FEATURE_VIEWS: dict[str, FeatureView] = validate_catalog(
    [with_monitoring(view, DRIFT_THRESHOLDS, NOT_STATIONARY_PREFIXES) for view in _VIEWS]
)
