"""A plan: the baseline definitions (recorded with each table, or the lock), the working tree's, the
changes between them, and for each changed feature its readers, breaking verdict and, with a
lake, its effect on values and drift."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from feature_pipelines.features.spec import FeatureView
from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.plan.breaking import breaking_reasons
from feature_pipelines.plan.consumers import TRAINING_SETS, Consumers, consumers_of, models_by_service
from feature_pipelines.plan.diff import ChangeKind, FeatureChange, ViewChange, diff_records
from feature_pipelines.plan.impact import (
    DriftEffect,
    Recomputation,
    ValueImpact,
    drift_effect,
    last_partitions,
    recompute,
    value_impact,
)
from feature_pipelines.plan.lock import Declaration, is_declared
from feature_pipelines.plan.record import DEFINITION_KEY, ViewRecord, records_of
from feature_pipelines.training.spec import TrainingSetSpec


@dataclass(frozen=True)
class Baseline:
    """The definitions a plan compares the working tree with, and where each view's came from."""

    records: dict[str, ViewRecord]
    origins: dict[str, str]


def lock_baseline(lock: Mapping[str, ViewRecord]) -> Baseline:
    return Baseline(dict(lock), {name: "the lock" for name in lock})


def recorded_definition(store: DeltaStore, table: str) -> tuple[ViewRecord, int] | None:
    """The definition recorded by the table's latest commit that carries one, with its version;
    None when no retained commit does (a table written before definitions were recorded)."""
    for commit in store.history(table):
        if DEFINITION_KEY in commit:
            data = json.loads(commit[DEFINITION_KEY])
            return ViewRecord.from_json(data, where=f"table {table!r} commit {commit['version']}"), int(commit["version"])
    return None


def lake_baseline(store: DeltaStore, lock: Mapping[str, ViewRecord], names: Sequence[str]) -> Baseline:
    """Per view, the definition that produced its table; the lock's where the table records none."""
    records, origins = dict(lock), {name: "the lock" for name in lock}
    for name in names:
        if not store.exists(name):
            origins[name] = origins.get(name, "nothing") + " (no table in the lake)"
            continue
        found = recorded_definition(store, name)
        if found is None:
            origins[name] = origins.get(name, "nothing") + " (the table records no definition)"
            continue
        records[name], version = found
        origins[name] = f"table version {version}"
    return Baseline(records, origins)


@dataclass(frozen=True)
class FeaturePlan:
    """One changed feature: what changed, who reads it, whether it breaks them, and its effect."""

    change: FeatureChange
    from_fingerprint: str | None
    consumers: Consumers
    breaking: tuple[str, ...]
    declared: bool
    impact: ValueImpact | None = None
    drift: DriftEffect | None = None
    notes: tuple[str, ...] = ()

    @property
    def undeclared(self) -> bool:
        return bool(self.breaking) and not self.declared


@dataclass(frozen=True)
class Plan:
    baseline: Baseline
    views: tuple[ViewChange, ...]
    features: tuple[FeaturePlan, ...]
    compared: dict[str, tuple[datetime, datetime]] = field(default_factory=dict)

    @property
    def undeclared(self) -> tuple[FeaturePlan, ...]:
        return tuple(f for f in self.features if f.undeclared)

    def feature(self, reference: str) -> FeaturePlan:
        for planned in self.features:
            if planned.change.reference == reference:
                return planned
        raise KeyError(f"the plan has no changed feature {reference!r}; changed: {[f.change.reference for f in self.features]}")


def plan_definitions(baseline: Baseline, views: Mapping[str, FeatureView], declarations: Sequence[Declaration]) -> Plan:
    """The changes from `baseline` to `views` with readers and verdicts: no lake needed."""
    changes = diff_records(baseline.records, records_of(views))
    planned = []
    for view in changes:
        fingerprint = view.before.fingerprint if view.before is not None else None
        for change in view.features:
            consumers = consumers_of(change.view, {change.name, change.old_name})
            reasons = breaking_reasons(change, consumers)
            declared = bool(reasons) and fingerprint is not None and is_declared(declarations, change.reference, fingerprint)
            planned.append(FeaturePlan(change, fingerprint, consumers, reasons, declared))
    return Plan(baseline, tuple(changes), tuple(planned))


def with_lake_effects(
    plan: Plan, store: DeltaStore, views: Mapping[str, FeatureView], *, partitions: int,
    training_sets: Sequence[TrainingSetSpec] = TRAINING_SETS,
) -> Plan:
    """`plan` with each changed feature's value impact over the last `partitions` partitions of its
    table, the training sets' drift figures, and the registered models that read it."""
    models = models_by_service(store)
    recomputed = {
        name: _recomputation(store, views[name], partitions)
        for name in dict.fromkeys(p.change.view for p in plan.features if _comparable(p.change))
    }
    features = []
    for planned in plan.features:
        run = recomputed.get(planned.change.view)
        impact, drift, notes = _effects(store, planned, run, training_sets)
        trained = tuple(m for s in planned.consumers.services for m in models.get(s, ()))
        features.append(replace(planned, impact=impact, drift=drift, notes=planned.notes + notes,
                                consumers=replace(planned.consumers, models=trained)))
    compared = {name: (run.start, run.end) for name, run in recomputed.items() if isinstance(run, Recomputation)}
    return replace(plan, features=tuple(features), compared=compared)


def _comparable(change: FeatureChange) -> bool:
    """Whether stored and recomputed values of the feature can be matched row by row."""
    return change.changes_values and change.before is not None and ChangeKind.ENTITY_KEYS not in change.kinds


def _effects(
    store: DeltaStore, planned: FeaturePlan, run: Recomputation | str | None, training_sets: Sequence[TrainingSetSpec]
) -> tuple[ValueImpact | None, DriftEffect | None, tuple[str, ...]]:
    change = planned.change
    if change.after is None:
        return None, None, ("removed: no values after the change",)
    if change.before is None:
        return None, None, ("new feature: no stored values to compare",)
    if ChangeKind.ENTITY_KEYS in change.kinds:
        return None, None, ("entity keys changed: stored and recomputed rows cannot be matched",)
    if not change.changes_values:
        return None, None, ()
    if not isinstance(run, Recomputation):
        return None, None, (str(run),)
    effects = [e for t in training_sets if t.name in planned.consumers.training_sets
               if (e := drift_effect(store, run, change, t)) is not None]
    notes = () if effects or not planned.consumers.training_sets else (
        "no training-set rows of it before the compared range: drift not measured",)
    return value_impact(run, change), (effects[0] if effects else None), notes


def _recomputation(store: DeltaStore, view: FeatureView, partitions: int) -> Recomputation | str:
    """The view recomputed over its table's last partitions, or why it cannot be."""
    if not store.exists(view.name):
        return f"table {view.name!r} is not in the lake: no stored values to compare"
    bounds = last_partitions(store, view, partitions)
    if bounds is None:
        return f"table {view.name!r} holds no rows: no stored values to compare"
    return recompute(store, view, *bounds)
