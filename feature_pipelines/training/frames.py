"""The model's training frame: a training-set table with a feature service's fitted transformations
applied, through the same function the feature server calls."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from feature_pipelines.features.services import (
    FeatureService,
    apply_service_transforms,
    raw_service_schema,
    vector_dtype_problem,
)
from feature_pipelines.features.transforms import FittedStatistics
from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.offline.fitted_statistics import load_fitted_statistics
from feature_pipelines.training.spec import SERVICE_VERSION_COLUMN, TrainingSetSpec


class TrainingFrameError(ValueError):
    """A training-set table that does not hold the raw vector of the service asked for."""


@dataclass(frozen=True)
class TrainingFrame:
    """The frame a model trains on, with what it was made of: the table version read and the
    statistics applied (None for a service without fitted statistics)."""

    frame: pl.DataFrame
    service: FeatureService
    table_version: int
    statistics: FittedStatistics | None


def training_frame(
    store: DeltaStore,
    spec: TrainingSetSpec,
    *,
    service: FeatureService | None = None,
    statistics_version: int | None = None,
    table_version: int | None = None,
) -> TrainingFrame:
    """`spec`'s table (at `table_version`, default latest) with the transformations of `service`
    (default: the set's own) applied with the statistics it pins (or `statistics_version`).

    The table holds raw values; another service may be read from it when the table holds its raw
    vector with the same dtypes (flight_delay_v2 is flight_delay_v1's vector with transformations).

    Raises:
        TrainingFrameError: a vector column missing from the table, or of another dtype.
        StatisticsNotFoundError: the statistics version does not exist for this service version.
    """
    chosen = service or spec.service
    version = table_version if table_version is not None else store.version(spec.name)
    frame = store.read(spec.name, version=version)
    problem = vector_dtype_problem(frame.schema, raw_service_schema(chosen))
    if problem:
        raise TrainingFrameError(
            f"training set {spec.name!r} version {version} does not hold the raw vector of feature service "
            f"{chosen.name!r}: {problem}"
        )
    require_built_by_its_service(frame, spec, version)
    statistics = load_fitted_statistics(store, chosen, statistics_version) if chosen.needs_statistics else None
    vector = apply_service_transforms(frame.drop(SERVICE_VERSION_COLUMN), chosen, statistics)
    return TrainingFrame(vector, chosen, version, statistics)


def require_built_by_its_service(frame: pl.DataFrame, spec: TrainingSetSpec, version: int) -> None:
    """Refuse a table whose rows were built by another version of the set's service (rows of an
    older definition read null in the columns it lacked: using them would train on a hole)."""
    if SERVICE_VERSION_COLUMN not in frame.columns:
        stale = frame
    else:
        stale = frame.filter(pl.col(SERVICE_VERSION_COLUMN).ne_missing(spec.service.version))
    if stale.height == 0:
        return
    days = stale.get_column("scheduled_departure_at").dt.date()
    found = sorted({str(v) for v in stale.get_column(SERVICE_VERSION_COLUMN).unique()}) if SERVICE_VERSION_COLUMN in stale.columns else ["none"]
    raise TrainingFrameError(
        f"training set {spec.name!r} version {version}: {stale.height} row(s) over {days.n_unique()} day(s) "
        f"({days.min()} .. {days.max()}) were built by feature service {spec.service.name!r} version(s) {found}, "
        f"not the current {spec.service.version}; rebuild those days (`feature-pipelines backfill` over them) "
        "before training"
    )
