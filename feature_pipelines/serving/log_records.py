"""What a served request leaves in the request log: its feature columns, PII left out.

PII-tagged features, and on-demand features computed from them, are served to callers allowed
them but never logged: the log is for skew monitoring, not a copy of personal data.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import polars as pl

from feature_pipelines.features.on_demand import OnDemandFeature
from feature_pipelines.features.references import split_reference
from feature_pipelines.features.spec import FeatureView
from feature_pipelines.names import ON_DEMAND_VIEW
from feature_pipelines.serving.planning import RequestPlan
from feature_pipelines.serving.request_log import ServedFeature, ServedRequest
from feature_pipelines.serving.responses import ServedStatuses


def is_pii(reference: str, views: Mapping[str, FeatureView]) -> bool:
    """Whether "view:feature" names a PII-tagged feature of `views`."""
    parsed = split_reference(reference)
    if parsed is None or parsed.view not in views:
        return False
    view = views[parsed.view]
    return parsed.feature in view.feature_names and view.feature(parsed.feature).pii


class LogRecorder:
    """Builds each served request's log record for one catalog (which features are PII, which keys
    identify an on-demand value)."""

    def __init__(self, views: Mapping[str, FeatureView], on_demand: Mapping[str, OnDemandFeature]) -> None:
        self.views = views
        self.pii_derived = {
            name for name, feature in on_demand.items() if any(is_pii(reference, views) for reference in feature.inputs)
        }

    def served_request(
        self, plan: RequestPlan, frame: pl.DataFrame, statuses: ServedStatuses, request_id: str, read_at: datetime
    ) -> ServedRequest:
        served: list[ServedFeature] = []
        for request in plan.requests:
            view = statuses.views[request.view.name]
            for feature in request.features:
                if request.view.feature(feature).pii:
                    continue
                served.append(ServedFeature(request.view.name, feature, request.view.entity_keys,
                                            frame.get_column(feature).to_list(), view.statuses, view.stamps))
        for feature in plan.on_demand:
            if feature.name in self.pii_derived:
                continue
            served.append(ServedFeature(ON_DEMAND_VIEW, feature.name, self._on_demand_keys(feature),
                                        frame.get_column(feature.name).to_list(), statuses.on_demand[feature.name],
                                        statuses.no_times))
        entities = {column: frame.get_column(column).to_list()
                    for column in dict.fromkeys([k for f in served for k in f.key_columns])}
        return ServedRequest(request_id, read_at, entities, served, plan.service.name if plan.service is not None else None)

    def _on_demand_keys(self, feature: OnDemandFeature) -> tuple[str, ...]:
        """What identifies an on-demand value: its input views' join keys, then its request columns."""
        keys = [k for v in feature.input_views() for k in self.views[v].entity_keys] + list(feature.request_columns)
        return tuple(dict.fromkeys(keys))
