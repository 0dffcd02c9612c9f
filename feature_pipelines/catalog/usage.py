"""Who uses a feature: the view that declares it, the services that put it in a vector (directly or through
an on-demand feature computed from it), the training sets built from those services, and the models of the
model registry (`_models/registry`, when the lake has one) trained on them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import polars as pl

from feature_pipelines.catalog.entries import Use, UseKind
from feature_pipelines.features.on_demand import OnDemandFeature
from feature_pipelines.features.services import FeatureService
from feature_pipelines.features.spec import FeatureView
from feature_pipelines.features.transforms import Transform
from feature_pipelines.models.registry import REGISTRY_TABLE as MODEL_REGISTRY_TABLE
from feature_pipelines.names import ON_DEMAND_VIEW
from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.training.spec import TrainingSetSpec

MODEL_REGISTRY_COLUMNS = ("model_name", "model_version", "feature_service")


class ModelRegistryError(ValueError):
    """A model registry table the catalog cannot read without guessing (a missing column)."""


@dataclass(frozen=True)
class ModelRecord:
    """One registered model version and the feature service it was trained on."""

    name: str
    version: str
    feature_service: str

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"


def read_models(store: DeltaStore) -> tuple[ModelRecord, ...] | None:
    """The registered models, or None when the lake has no registry table (no model registered yet)."""
    if not store.exists(MODEL_REGISTRY_TABLE):
        return None
    frame = store.read(MODEL_REGISTRY_TABLE)
    missing = [column for column in MODEL_REGISTRY_COLUMNS if column not in frame.columns]
    if missing:
        raise ModelRegistryError(
            f"table {MODEL_REGISTRY_TABLE!r} lacks column(s) {missing}; it has {frame.columns}"
        )
    rows = frame.select(pl.col(column).cast(pl.String) for column in MODEL_REGISTRY_COLUMNS).unique().sort(
        MODEL_REGISTRY_COLUMNS
    )
    return tuple(ModelRecord(*row) for row in rows.iter_rows())


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
        models: Iterable[ModelRecord] = (),
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
        for model in models:
            service = services.get(model.feature_service)
            if service is None:
                self.unknown_services.append(f"{model.label} uses feature service {model.feature_service!r}, "
                                             "which the catalog does not declare")
                continue
            self._add_reader("model", model.label, service, on_demand)

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
