"""Who reads a feature: the feature services (directly or through an on-demand input), the training
sets built on them, and the models trained on those (from the lake's model registry, when there is one)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import polars as pl

from feature_pipelines.features.on_demand import ON_DEMAND_FEATURES, OnDemandFeature
from feature_pipelines.features.services import FEATURE_SERVICES, FeatureService
from feature_pipelines.names import MODEL_REGISTRY_TABLE
from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.training.spec import FLIGHT_DELAY_TRAINING_SET, TrainingSetSpec

TRAINING_SETS: tuple[TrainingSetSpec, ...] = (FLIGHT_DELAY_TRAINING_SET,)
# The registry's columns, by the first name present: the feature service a model was trained on, its name, its version.
REGISTRY_SERVICE_COLUMNS = ("feature_service", "service")
REGISTRY_MODEL_COLUMNS = ("model", "model_name", "name")
REGISTRY_VERSION_COLUMNS = ("model_version", "version")


class ModelRegistryError(LookupError):
    """A model registry table the plan cannot attribute models from."""


@dataclass(frozen=True)
class Consumers:
    """The readers of one feature, by name (the old and the new name of a renamed feature both count)."""

    services: tuple[str, ...]
    pinned_statistics: tuple[str, ...]  # of `services`, those whose fitted statistics are pinned
    training_sets: tuple[str, ...]
    models: tuple[str, ...] = ()

    def describe(self) -> str:
        parts = [f"services {list(self.services)}" if self.services else "no feature service",
                 f"training sets {list(self.training_sets)}" if self.training_sets else "no training set"]
        if self.models:
            parts.append(f"models {list(self.models)}")
        return ", ".join(parts)


def _reads(service: FeatureService, references: set[str], on_demand: Mapping[str, OnDemandFeature]) -> bool:
    direct = set(service.stored_references)
    through = {ref for name in service.on_demand_names if name in on_demand for ref in on_demand[name].inputs}
    return bool((direct | through) & references)


def consumers_of(
    view: str,
    names: Iterable[str | None],
    *,
    services: Mapping[str, FeatureService] = FEATURE_SERVICES,
    on_demand: Mapping[str, OnDemandFeature] = ON_DEMAND_FEATURES,
    training_sets: Sequence[TrainingSetSpec] = TRAINING_SETS,
) -> Consumers:
    """The services and training sets that read feature `view:name` under any of `names`."""
    references = {f"{view}:{name}" for name in names if name is not None}
    readers = [s for s in services.values() if _reads(s, references, on_demand)]
    reader_names = {s.name for s in readers}
    return Consumers(
        services=tuple(s.name for s in readers),
        pinned_statistics=tuple(s.name for s in readers if s.statistics_version is not None),
        training_sets=tuple(t.name for t in training_sets if t.service.name in reader_names),
    )


def _column(frame: pl.LazyFrame, choices: Sequence[str], what: str) -> str:
    present = frame.collect_schema().names()
    found = next((name for name in choices if name in present), None)
    if found is None:
        raise ModelRegistryError(
            f"table {MODEL_REGISTRY_TABLE!r}: no column for the {what} (looked for {list(choices)}; it has {present})"
        )
    return found


def models_by_service(store: DeltaStore) -> dict[str, tuple[str, ...]]:
    """Feature service -> the registered models trained on it ("name vN"); {} when no registry exists."""
    if not store.exists(MODEL_REGISTRY_TABLE):
        return {}
    registry = store.scan(MODEL_REGISTRY_TABLE)
    service = _column(registry, REGISTRY_SERVICE_COLUMNS, "feature service")
    model = _column(registry, REGISTRY_MODEL_COLUMNS, "model name")
    version = _column(registry, REGISTRY_VERSION_COLUMNS, "model version")
    rows = registry.select(service, model, version).unique().sort(service, model, version).collect()
    out: dict[str, list[str]] = {}
    for row in rows.iter_rows():
        out.setdefault(str(row[0]), []).append(f"{row[1]} v{row[2]}")
    return {name: tuple(models) for name, models in out.items()}
