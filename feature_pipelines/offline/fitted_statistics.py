"""Fitted statistics of feature services: fitted on a training-set frame, kept in Delta as numbered
versions, read back exactly.

One table, `STATISTICS_TABLE`, holds every fit of every service: one row per fitted statistic
(a step with none, a fixed-bound clip, has one row with a null statistic), keyed by the service's
name, its version (the definition's fingerprint) and `statistics_version`, numbered 1, 2, ... per
service version in the order of the fits. A fit is appended in one commit and never rewritten, so
a version means the same numbers for ever. Values are stored as JSON text: Python writes a float
as its shortest round-tripping repr, so a float read back has the bits that were fitted.

Fitting lives here and nowhere else: the online and serving paths import `load_fitted_statistics`
and `apply_service_transforms`, never `fit_statistics`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime

import polars as pl

from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.features.on_demand import ON_DEMAND_FEATURES, OnDemandFeature
from feature_pipelines.features.services import FeatureService, raw_service_schema
from feature_pipelines.features.spec import FeatureView
from feature_pipelines.features.transforms import (
    ClipBounds,
    ClipQuantiles,
    FittedStatistics,
    FittedStatisticsError,
    FittedStep,
    Impute,
    ImputeStrategy,
    ScalarValue,
    Standardize,
    Transform,
    transformed_column,
)
from feature_pipelines.offline.delta_store import DeltaStore, TableMissingError
from feature_pipelines.timeutil import require_utc

STATISTICS_TABLE = "_statistics/fitted_transforms"

_SCHEMA = {
    "service": pl.String(),
    "service_version": pl.String(),
    "statistics_version": pl.Int64(),
    "step": pl.Int64(),
    "feature": pl.String(),
    "kind": pl.String(),
    "declaration": pl.String(),
    "statistic": pl.String(),
    "value": pl.String(),
    "fitted_at": pl.Datetime("us", "UTC"),
    "training_set": pl.String(),
    "training_set_version": pl.Int64(),
    "training_rows": pl.Int64(),
}


class StatisticsNotFoundError(LookupError):
    """A statistics version that was never fitted for this service version; the message names the
    service, its version, the version asked for and the versions that exist."""

    def __str__(self) -> str:
        return str(self.args[0])


class StatisticsVersionConflictError(RuntimeError):
    """Two fits numbered themselves alike; neither version may be applied."""


class StatisticsNotPinnedError(StatisticsNotFoundError):
    """No version was asked for and the service pins none."""


# -- fitting (pure) ------------------------------------------------------------------------------


def _fit_step(service: FeatureService, transform: Transform, values: pl.Series) -> dict[str, ScalarValue]:
    where = f"feature service {service.name!r} (version {service.version}): {transform.kind} on {transform.feature!r}"
    if isinstance(transform, ClipBounds):
        return {}
    present = values.drop_nulls()
    if present.len() == 0:
        raise FittedStatisticsError(f"{where}: no non-null training value to fit on ({values.len()} rows)")
    if present.dtype == pl.Float64 and present.is_nan().any():
        raise FittedStatisticsError(f"{where}: the training values hold NaN; a fit would be NaN")
    if isinstance(transform, Impute) and transform.strategy is ImputeStrategy.MODE:
        return {"fill": present.mode().sort().item(0)}
    numbers = present.cast(pl.Float64)
    if isinstance(transform, Impute):
        fitted = numbers.median() if transform.strategy is ImputeStrategy.MEDIAN else numbers.mean()
        return {"fill": float(fitted)}  # type: ignore[arg-type]
    if isinstance(transform, Standardize):
        mean, std = float(numbers.mean()), float(numbers.std(ddof=0))  # type: ignore[arg-type]
        if not std > 0.0 or not math.isfinite(std):
            raise FittedStatisticsError(f"{where}: the training values are constant (std {std}); z-scores are undefined")
        return {"mean": mean, "std": std}
    if isinstance(transform, ClipQuantiles):
        return {"lower": float(numbers.quantile(transform.lower, "linear")),  # type: ignore[arg-type]
                "upper": float(numbers.quantile(transform.upper, "linear"))}  # type: ignore[arg-type]
    raise FittedStatisticsError(f"{where}: unknown transformation {transform!r}")


def fit_statistics(
    frame: pl.DataFrame,
    service: FeatureService,
    *,
    views: Mapping[str, FeatureView] = FEATURE_VIEWS,
    on_demand: Mapping[str, OnDemandFeature] = ON_DEMAND_FEATURES,
) -> tuple[FittedStep, ...]:
    """Fit every transformation of `service` on `frame`, a training frame of its raw vector.

    A feature's steps are fitted in order, each on the output of the ones before it (applied
    with `transformed_column`, the same expression as serving): a standardisation after an
    imputation sees the imputed values, so applying the steps reproduces the training scale.

    Raises:
        FittedStatisticsError: a missing column, a dtype other than declared, a column without
            a non-null value, NaN values, or a constant column to standardise.
    """
    expected = raw_service_schema(service, views, on_demand)
    for name in dict.fromkeys(t.feature for t in service.transforms):
        if name not in frame.columns:
            raise FittedStatisticsError(f"feature service {service.name!r}: the training frame lacks {name!r}")
        if frame.schema[name] != expected[name]:
            raise FittedStatisticsError(
                f"feature service {service.name!r}: training column {name!r} is {frame.schema[name]}, "
                f"the service declares {expected[name]}"
            )
    fitted: dict[str, list[FittedStep]] = {}
    out: list[FittedStep] = []
    for transform in service.transforms:
        before = fitted.setdefault(transform.feature, [])
        values = frame.select(transformed_column(transform.feature, expected[transform.feature], before)).to_series()
        step = FittedStep(transform, _fit_step(service, transform, values))
        before.append(step)
        out.append(step)
    return tuple(out)


# -- the table -----------------------------------------------------------------------------------


def _declaration_text(transform: Transform) -> str:
    return json.dumps(transform.declaration(), sort_keys=True)


def _rows(statistics: FittedStatistics) -> pl.DataFrame:
    records = []
    for index, step in enumerate(statistics.steps):
        items: Sequence[tuple[str | None, ScalarValue | None]] = list(step.values.items()) or [(None, None)]
        for name, value in items:
            records.append({
                "service": statistics.service, "service_version": statistics.service_version,
                "statistics_version": statistics.version, "step": index, "feature": step.transform.feature,
                "kind": step.transform.kind, "declaration": _declaration_text(step.transform), "statistic": name,
                "value": None if name is None else json.dumps(value), "fitted_at": statistics.fitted_at,
                "training_set": statistics.training_set, "training_set_version": statistics.training_set_version,
                "training_rows": statistics.training_rows,
            })
    return pl.DataFrame(records, schema=_SCHEMA)


def _scan(store: DeltaStore) -> pl.LazyFrame | None:
    try:
        return store.scan(STATISTICS_TABLE)
    except TableMissingError:
        return None


def fitted_versions(store: DeltaStore, service_name: str) -> dict[str, list[int]]:
    """The fitted statistics versions of a service: service version -> its versions, ascending."""
    lazy = _scan(store)
    if lazy is None:
        return {}
    pairs = (
        lazy.filter(pl.col("service") == service_name)
        .select("service_version", "statistics_version")
        .unique()
        .sort("service_version", "statistics_version")
        .collect()
    )
    out: dict[str, list[int]] = {}
    for service_version, version in pairs.iter_rows():
        out.setdefault(service_version, []).append(version)
    return out


def write_fitted_statistics(
    store: DeltaStore,
    service: FeatureService,
    steps: Sequence[FittedStep],
    *,
    training_set: str,
    training_set_version: int,
    training_rows: int,
    fitted_at: datetime,
) -> FittedStatistics:
    """Append `steps` as the next statistics version of this service version (one commit) and
    return them as written.

    Two fits of one service version committing at once could both number themselves N (the
    append does not conflict); each checks after its commit that version N holds its rows alone,
    and raises `StatisticsVersionConflictError` otherwise. `load_fitted_statistics` refuses such
    a version too, so it is never applied; the next fit takes N + 1."""
    versions = fitted_versions(store, service.name).get(service.version, [])
    statistics = FittedStatistics(
        service=service.name, service_version=service.version, version=(max(versions) if versions else 0) + 1,
        steps=tuple(steps), fitted_at=require_utc(fitted_at, "fitted_at"), training_set=training_set,
        training_set_version=training_set_version, training_rows=training_rows,
    )
    _check_steps_match(service, statistics.steps, statistics.version)
    store.append(STATISTICS_TABLE, _rows(statistics), commit_metadata={
        "service": service.name, "service_version": service.version, "statistics_version": str(statistics.version)})
    fits = (
        store.scan(STATISTICS_TABLE)
        .filter(pl.col("service") == service.name, pl.col("service_version") == service.version,
                pl.col("statistics_version") == statistics.version)
        .select("fitted_at", "training_set_version").unique().collect()
    )
    if fits.height != 1:
        raise StatisticsVersionConflictError(
            f"feature service {service.name!r} version {service.version}: another fit committed statistics version "
            f"{statistics.version} at the same time; that version is refused on read, fit again"
        )
    return statistics


def _check_steps_match(service: FeatureService, steps: Sequence[FittedStep], version: int) -> None:
    declared = [_declaration_text(t) for t in service.transforms]
    found = [_declaration_text(step.transform) for step in steps]
    if declared != found:
        raise FittedStatisticsError(
            f"statistics version {version} of feature service {service.name!r} (version {service.version}) hold "
            f"transformations {found}; the service declares {declared}"
        )


def _not_found(store: DeltaStore, service: FeatureService, version: int) -> StatisticsNotFoundError:
    existing = fitted_versions(store, service.name)
    here = existing.get(service.version, [])
    others = {v: found for v, found in existing.items() if v != service.version}
    return StatisticsNotFoundError(
        f"feature service {service.name!r} version {service.version}: no statistics version {version} in "
        f"{STATISTICS_TABLE!r}; fitted for this service version: {here or 'none'}; for other versions of the "
        f"service (other definitions): {others or 'none'}. Materialize the service's statistics asset, or pin a "
        "version that exists."
    )


def load_fitted_statistics(store: DeltaStore, service: FeatureService, version: int | None = None) -> FittedStatistics:
    """The fitted statistics `service` applies: `version`, or the version the service pins.

    Never a fallback: no pin and no `version`, a version never fitted for this service version
    (a fit of an older definition does not count), or a table that does not exist yet raises.

    Raises:
        StatisticsNotPinnedError: no `version` given and the service pins none.
        StatisticsNotFoundError: the version does not exist for this service version.
        FittedStatisticsError: the stored rows do not match the service's transformations.
    """
    chosen = version if version is not None else service.statistics_version
    if chosen is None:
        raise StatisticsNotPinnedError(
            f"feature service {service.name!r} version {service.version} pins no statistics version and none was "
            f"passed; fitted versions: {fitted_versions(store, service.name) or 'none'}"
        )
    lazy = _scan(store)
    if lazy is None:
        raise StatisticsNotFoundError(
            f"feature service {service.name!r} version {service.version}: no statistics version {chosen}; the "
            f"table {STATISTICS_TABLE!r} does not exist yet (no service has been fitted)"
        )
    rows = (
        lazy.filter(pl.col("service") == service.name, pl.col("service_version") == service.version,
                    pl.col("statistics_version") == chosen)
        .sort("step", "statistic")
        .collect()
    )
    if rows.height == 0:
        raise _not_found(store, service, chosen)
    return _from_rows(service, chosen, rows)


def _from_rows(service: FeatureService, version: int, rows: pl.DataFrame) -> FittedStatistics:
    fits = rows.select("fitted_at", "training_set", "training_set_version", "training_rows").unique()
    if fits.height != 1:
        raise FittedStatisticsError(
            f"feature service {service.name!r} version {service.version}: statistics version {version} was written "
            f"by {fits.height} fits at once ({fits['fitted_at'].to_list()}); refit to get a version of its own"
        )
    if rows.get_column("step").n_unique() != len(service.transforms):
        raise FittedStatisticsError(
            f"statistics version {version} of {service.name!r} hold {rows.get_column('step').n_unique()} steps, "
            f"the service declares {len(service.transforms)}"
        )
    steps = []
    for index, transform in enumerate(service.transforms):
        part = rows.filter(pl.col("step") == index)
        if part.height == 0 or part.get_column("declaration").item(0) != _declaration_text(transform):
            raise FittedStatisticsError(
                f"statistics version {version} of {service.name!r}: step {index} is not {transform.declaration()}"
            )
        if part.get_column("statistic").is_duplicated().any():
            raise FittedStatisticsError(
                f"statistics version {version} of {service.name!r}: step {index} was written more than once "
                "(two fits numbered themselves alike); fit again"
            )
        values = {name: json.loads(text) for name, text in part.select("statistic", "value").iter_rows() if name is not None}
        steps.append(FittedStep(transform, values))
    fit = fits.row(0, named=True)
    return FittedStatistics(
        service=service.name, service_version=service.version, version=version, steps=tuple(steps),
        fitted_at=fit["fitted_at"], training_set=fit["training_set"], training_set_version=fit["training_set_version"],
        training_rows=fit["training_rows"],
    )
