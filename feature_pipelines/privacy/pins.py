"""Pinned training-set versions after a forget: which can no longer be rebuilt byte for byte, and why.

A training-set version is pinned when something was fitted on it: the feature services' fitted
statistics (offline/fitted_statistics.py) and the registered models (models/registry.py) each
record `(training_set, training_set_version)`. A forget breaks a pinned version's
rebuild when the version held the entity's rows, when the versions it was built from (its own,
its feature tables' pinned in its materialization metadata) were vacuumed, or when the raw
events its features aggregate lost the entity's rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import polars as pl

from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.offline.fitted_statistics import STATISTICS_TABLE
from feature_pipelines.privacy.entity import ForgetTarget
from feature_pipelines.privacy.lake_erasure import RetainedVersions, TableErasure, entity_rows_in_versions


@dataclass(frozen=True)
class TrainingSetPin:
    """One training-set version something depends on, and what pins it."""

    training_set: str
    version: int
    pinned_by: str


@dataclass(frozen=True)
class PinVerdict:
    pin: TrainingSetPin
    entity_rows: int  # the entity's rows in the pinned version, counted before the deletion
    reasons: tuple[str, ...]

    @property
    def rebuildable(self) -> bool:
        return not self.reasons

    def describe(self) -> str:
        head = f"{self.pin.training_set} version {self.pin.version} (pinned by {self.pin.pinned_by})"
        if self.rebuildable:
            return f"{head}: still rebuildable byte for byte (no row of the entity, nothing it read was erased)"
        return f"{head}: NOT rebuildable byte for byte: " + "; ".join(self.reasons)


# Tables that pin training-set versions (each row names `training_set` and `training_set_version`):
# the fitted statistics of feature services, and the model registry (models/registry.py).
MODEL_REGISTRY_TABLE = "_models/registry"


def _pinned_by(table: str, row: dict[str, object]) -> str:
    if table == STATISTICS_TABLE:
        return f"statistics version {row['statistics_version']} of service {row['service']!r} ({row['service_version']})"
    return f"model {row['model_name']!r} version {row['model_version']}"


def training_set_pins(store: DeltaStore) -> list[TrainingSetPin]:
    """Every pinned training-set version: one pin per statistics fit and per registered model version."""
    pins = []
    for table, columns in ((STATISTICS_TABLE, ("service", "service_version", "statistics_version")),
                           (MODEL_REGISTRY_TABLE, ("model_name", "model_version"))):
        if not store.exists(table):
            continue
        rows = store.read(table).select("training_set", "training_set_version", *columns).unique()
        for row in rows.sort(rows.columns).iter_rows(named=True):
            pins.append(TrainingSetPin(row["training_set"], int(row["training_set_version"]), _pinned_by(table, row)))
    return pins


def count_pinned_rows(store: DeltaStore, pins: Sequence[TrainingSetPin], target: ForgetTarget) -> dict[tuple[str, int], int]:
    """The entity's rows in each pinned version, read by time travel before anything is erased."""
    counts: dict[tuple[str, int], int] = {}
    for table in sorted({pin.training_set for pin in pins}):
        versions = sorted({pin.version for pin in pins if pin.training_set == table})
        for version, rows in entity_rows_in_versions(store, table, target, versions).items():
            counts[(table, version)] = rows
    return counts


def judge_pins(
    pins: Sequence[TrainingSetPin],
    pinned_rows: Mapping[tuple[str, int], int],
    *,
    target: ForgetTarget,
    erased: Mapping[str, TableErasure],
    retained: Mapping[str, RetainedVersions],
    reads: Mapping[str, Sequence[str]],
) -> list[PinVerdict]:
    """Each pin's verdict. `reads`: per training set, the feature tables and raw tables it is built from."""
    verdicts = []
    for pin in pins:
        reasons = []
        rows = pinned_rows.get((pin.training_set, pin.version), 0)
        own = erased.get(pin.training_set)
        if rows:
            deleted_at = f", deleted in version {own.version_after}" if own is not None else ""
            reasons.append(f"it held {rows} row(s) of {target.describe()}{deleted_at}; a rebuild cannot bring them back")
        kept = retained.get(pin.training_set)
        if kept is not None and pin.version in kept.lost:
            reasons.append(f"its data files were vacuumed: version {pin.version} can no longer be read by time travel")
        for table in reads.get(pin.training_set, ()):
            erasure = erased.get(table)
            if erasure is None or erasure.rows_deleted == 0:
                continue
            reasons.append(
                f"{table} lost {erasure.rows_deleted} row(s) in version {erasure.version_after}; the versions it was read "
                f"at (before {erasure.version_after}) " + ("were vacuumed" if erasure.files_vacuumed else "no longer match now")
            )
        verdicts.append(PinVerdict(pin, rows, tuple(reasons)))
    return verdicts


def pins_frame(verdicts: Sequence[PinVerdict]) -> pl.DataFrame:
    return pl.DataFrame(
        [{"training_set": v.pin.training_set, "version": v.pin.version, "pinned_by": v.pin.pinned_by,
          "entity_rows": v.entity_rows, "rebuildable": v.rebuildable, "why": "; ".join(v.reasons)} for v in verdicts],
        schema={"training_set": pl.String, "version": pl.Int64, "pinned_by": pl.String, "entity_rows": pl.Int64,
                "rebuildable": pl.Boolean, "why": pl.String},
    )
