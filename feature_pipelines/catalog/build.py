"""One catalog from the declarations (views, on-demand features, services, training sets), the model
registry and the lake's result tables; `project_catalog` is this project's."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from feature_pipelines.catalog.entries import Catalog, CatalogEntry, Freshness, Signal, State, unknown, worst_state
from feature_pipelines.catalog.lineage import on_demand_lineage, stored_lineage
from feature_pipelines.catalog.state import LakeState
from feature_pipelines.catalog.usage import MODEL_REGISTRY_TABLE, UsageIndex, registered_models
from feature_pipelines.features.on_demand import OnDemandFeature
from feature_pipelines.features.references import parse_reference
from feature_pipelines.features.services import FeatureService
from feature_pipelines.features.spec import Feature, FeatureView, Lifecycle
from feature_pipelines.names import ON_DEMAND_VIEW
from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.timeutil import require_utc
from feature_pipelines.training.spec import TrainingSetSpec

NO_LAKE = "no lake read"
# The least mature lifecycle first: an on-demand feature is as mature as its least mature input.
_MATURITY = (Lifecycle.DEPRECATED, Lifecycle.EXPERIMENTAL, Lifecycle.PRODUCTION)


def _definition(feature: Feature) -> str:
    over = f"{feature.aggregation.value} of {feature.source_column}" if feature.source_column else "count of events"
    window = "latest within" if feature.aggregation.value == "latest" else "over"
    return f"{over} {window} {feature.window}, nulls {feature.null_policy.value}"


class _Builder:
    def __init__(self, views: Mapping[str, FeatureView], on_demand: Mapping[str, OnDemandFeature],
                 usage: UsageIndex, lake: LakeState | None) -> None:
        self.views, self.on_demand, self.usage, self.lake = views, on_demand, usage, lake

    def freshness(self, view: FeatureView) -> Freshness:
        if self.lake is None:
            return Freshness(view.freshness, None, None, unknown(NO_LAKE))
        return self.lake.freshness(view)

    def quality(self, view: FeatureView, feature: str) -> Signal:
        return self.lake.quality(view, feature) if self.lake is not None else unknown(NO_LAKE)

    def monitored(self, feature: str) -> tuple[Signal, Signal]:
        """Its drift and its skew."""
        if self.lake is None:
            return unknown(NO_LAKE), unknown(NO_LAKE)
        return self.lake.drift(feature), self.lake.skew(feature)

    def stored(self, view: FeatureView, feature: Feature) -> CatalogEntry:
        quality, (drift, skew) = self.quality(view, feature.name), self.monitored(feature.name)
        return CatalogEntry(
            name=feature.name, view=view.name, kind="stored", dtype=feature.dtype, description=feature.description,
            definition=_definition(feature), owner=view.owner, lifecycle=view.lifecycle, entity=view.entity.name,
            join_keys=view.entity_keys, tags=dict(view.tags), freshness=self.freshness(view),
            lineage=stored_lineage(view, feature), uses=self.usage.uses(f"{view.name}:{feature.name}"),
            quality=quality, drift=drift, skew=skew, pii=feature.pii,
        )

    def computed(self, feature: OnDemandFeature) -> CatalogEntry:
        """An on-demand feature, described by its input views (none for one computed from the request alone)."""
        inputs = [parse_reference(reference) for reference in feature.inputs]
        views = [self.views[name] for name in feature.input_views()]
        drift, skew = self.monitored(feature.name)
        quality = unknown("computed in the request: no table to check")
        if inputs:
            qualities = [self.quality(self.views[i.view], i.feature) for i in inputs]
            quality = Signal(worst_state([q.state for q in qualities]), "inputs: " + "; ".join(
                f"{i.feature} {q.state.value}" for i, q in zip(inputs, qualities, strict=True)))
        freshness = max((self.freshness(view) for view in views), key=lambda f: f.state.rank, default=Freshness(
            None, None, None, Signal(State.UNKNOWN, "computed in the request: no table")))
        owners = sorted({view.owner for view in views})
        entities = sorted({view.entity.name for view in views})
        tags = {k: v for view in views for k, v in view.tags.items()}
        return CatalogEntry(
            name=feature.name, view=ON_DEMAND_VIEW, kind="on_demand", dtype=feature.dtype,
            description=feature.description,
            definition=f"computed at request time from {', '.join(feature.inputs + feature.request_columns)}",
            owner=", ".join(owners) or None,
            lifecycle=min((view.lifecycle for view in views), key=_MATURITY.index, default=None),
            entity=", ".join(entities) or None,
            join_keys=tuple(dict.fromkeys(key for view in views for key in view.entity_keys)), tags=tags,
            freshness=freshness, lineage=on_demand_lineage(feature, self.views),
            uses=self.usage.uses(f"{ON_DEMAND_VIEW}:{feature.name}"), quality=quality, drift=drift, skew=skew,
            pii=any(self.views[i.view].feature(i.feature).pii for i in inputs),
        )


def build_catalog(
    views: Mapping[str, FeatureView],
    on_demand: Mapping[str, OnDemandFeature],
    services: Mapping[str, FeatureService],
    training_sets: Sequence[TrainingSetSpec],
    *,
    store: DeltaStore | None,
    now: datetime,
) -> Catalog:
    """Every feature of `views`, then every on-demand feature, with its users and its states in `store`'s
    lake at `now` (None: no lake, every state unknown). Models come from the lake's registry when it has one."""
    now = require_utc(now, "catalog clock")
    models = registered_models(store) if store is not None else None
    usage = UsageIndex(views, on_demand, services, training_sets, models)
    builder = _Builder(views, on_demand, usage, LakeState(store, now) if store is not None else None)
    entries = [builder.stored(view, feature) for view in views.values() for feature in view.features]
    entries += [builder.computed(feature) for feature in on_demand.values()]
    notes = list(usage.unknown_services)
    if store is None:
        notes.append("no lake was read: freshness, quality, drift and skew are unknown, and models are not listed")
    elif models is None:
        notes.append(f"no model registry in the lake ({MODEL_REGISTRY_TABLE} absent): no model is listed")
    return Catalog(tuple(entries), now, store.describe() if store is not None else None, tuple(notes),
                   models_listed=models is not None)


def project_catalog(store: DeltaStore | None, now: datetime) -> Catalog:
    """This project's catalog: its views, on-demand features, services and training set."""
    from feature_pipelines.features.catalog import FEATURE_VIEWS
    from feature_pipelines.features.on_demand import ON_DEMAND_FEATURES
    from feature_pipelines.features.services import FEATURE_SERVICES
    from feature_pipelines.training.spec import FLIGHT_DELAY_TRAINING_SET

    return build_catalog(FEATURE_VIEWS, ON_DEMAND_FEATURES, FEATURE_SERVICES, [FLIGHT_DELAY_TRAINING_SET],
                         store=store, now=now)
