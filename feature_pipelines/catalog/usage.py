"""Who uses a feature: the view that declares it, the services that put it in a vector (directly or through
an on-demand feature computed from it), the training sets built from those services, and the models of the
model registry (`_models/registry`, when the lake has one) trained on them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from feature_pipelines.catalog.entries import Use, UseKind
from feature_pipelines.features.on_demand import OnDemandFeature
from feature_pipelines.features.services import FeatureService
from feature_pipelines.features.spec import FeatureView
from feature_pipelines.features.transforms import Transform
from feature_pipelines.models.registry import REGISTRY_TABLE as MODEL_REGISTRY_TABLE
from feature_pipelines.names import ON_DEMAND_VIEW
from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.plan.consumers import models_by_service
from feature_pipelines.training.spec import TrainingSetSpec


def registered_models(store: DeltaStore) -> dict[str, tuple[str, ...]] | None:
    """Feature service -> its registered models ("name vN"); None when the lake has no registry table (no
    model registered yet), so that "no model" is said only when the registry was read."""
    return models_by_service(store) if store.exists(MODEL_REGISTRY_TABLE) else None


def _transform_text(transform: Transform) -> str:
    declaration = {k: v for k, v in transform.declaration().items() if k not in ("kind", "feature")}
    return " ".join([transform.kind, *(f"{k}={v}" for k, v in declaration.items())])


def _reads(service: FeatureService, on_demand: Mapping[str, OnDemandFeature]) -> list[tuple[str, str | None]]:
    """Every reference the service's vector reads, with the on-demand feature it is read through (None:
    read directly)."""
    reads: list[tuple[str, str | None]] = []
    for reference in service.features:
        reads.append((reference, None))
        view, _, name = reference.partition(":")
        if view == ON_DEMAND_VIEW:
            reads.extend((source, name) for source in on_demand[name].inputs)
    return reads


class UsageIndex:
    """Uses by "view:feature" reference, collected once from the declarations and the model registry."""

    def __init__(
        self,
        views: Mapping[str, FeatureView],
        on_demand: Mapping[str, OnDemandFeature],
        services: Mapping[str, FeatureService],
        training_sets: Sequence[TrainingSetSpec],
        models: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self._uses: dict[str, list[Use]] = {}
        self.unknown_services: list[str] = []
        for view in views.values():
            for name in view.feature_names:
                self._add(f"{view.name}:{name}", Use("view", view.name))
        for name in on_demand:
            self._add(f"{ON_DEMAND_VIEW}:{name}", Use("view", ON_DEMAND_VIEW))
        for service in services.values():
            for reference, via in _reads(service, on_demand):
                column = reference.partition(":")[2]
                steps = ", ".join(_transform_text(t) for t in service.transforms_for(column)) if via is None else ""
                self._add(reference, Use("service", service.name, via, steps))
        for training_set in training_sets:
            self._add_reader("training_set", training_set.name, training_set.service, on_demand)
        for service_name, labels in (models or {}).items():
            service = services.get(service_name)
            for label in labels:
                if service is None:
                    self.unknown_services.append(f"{label} uses feature service {service_name!r}, which the catalog "
                                                 "does not declare")
                else:
                    self._add_reader("model", label, service, on_demand)

    def _add(self, reference: str, use: Use) -> None:
        found = self._uses.setdefault(reference, [])
        if use not in found:
            found.append(use)

    def _add_reader(self, kind: UseKind, name: str, service: FeatureService,
                    on_demand: Mapping[str, OnDemandFeature]) -> None:
        for reference, via in _reads(service, on_demand):
            self._add(reference, Use(kind, name, via, f"service {service.name}"))

    def uses(self, reference: str) -> tuple[Use, ...]:
        return tuple(self._uses.get(reference, ()))
