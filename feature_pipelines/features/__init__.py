"""Feature definition layer: entities, feature views, features, windows and null policies (no Dagster, no I/O)."""

from feature_pipelines.features.spec import (
    Aggregation,
    Entity,
    Feature,
    FeatureDefinitionError,
    FeatureView,
    FreshnessSLA,
    Lifecycle,
    NullPolicy,
    Partitioning,
    SourceSpec,
)
from feature_pipelines.features.windows import parse_window, window_token

__all__ = [
    "Aggregation",
    "Entity",
    "Feature",
    "FeatureDefinitionError",
    "FeatureView",
    "FreshnessSLA",
    "Lifecycle",
    "NullPolicy",
    "Partitioning",
    "SourceSpec",
    "parse_window",
    "window_token",
]
