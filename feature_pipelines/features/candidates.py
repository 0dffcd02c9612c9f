"""Changed feature definitions waiting for promotion, run in shadow beside the current ones.

A candidate is a whole FeatureView with the current view's name and entity: the shadow monitor
computes both over the same partitions and reports where their values differ. Promotion is a code
change (the candidate replaces the view in `flights.py`/`weather.py`) made after reading that report.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.features.spec import FeatureDefinitionError, FeatureView, NullPolicy


def validate_candidates(candidates: Mapping[str, FeatureView], views: Mapping[str, FeatureView]) -> dict[str, FeatureView]:
    """Each candidate must shadow a view of the catalog under its own name."""
    for name, candidate in candidates.items():
        if name not in views:
            raise FeatureDefinitionError(f"candidate for {name!r}: no such feature view in the catalog")
        if candidate.name != name:
            raise FeatureDefinitionError(f"candidate for {name!r} is named {candidate.name!r}; it must keep the view's name")
    return dict(candidates)


route_delay_stats = FEATURE_VIEWS["route_delay_stats"]

# Proposed by pricing-ml: a route whose 24h window holds a cancelled flight has no meaningful mean
# delay ("propagate"), instead of the mean of the flights that did depart ("skip").
_propagating_24h_mean = replace(
    route_delay_stats,
    features=tuple(
        replace(feature, null_policy=NullPolicy.PROPAGATE, max_null_fraction=0.6)
        if feature.name == "route_dep_delay_mean_24h" else feature
        for feature in route_delay_stats.features
    ),
    description=route_delay_stats.description + " Candidate: 24h mean delay null when any flight was cancelled.",
)

CANDIDATE_VIEWS: dict[str, FeatureView] = validate_candidates({"route_delay_stats": _propagating_24h_mean}, FEATURE_VIEWS)
