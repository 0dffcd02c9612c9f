"""The asset that fits a feature service's statistics on its training set and writes them as a version."""

from collections.abc import Iterable

from dagster import AssetDep, AssetExecutionContext, AssetKey, AssetsDefinition, MaterializeResult, MetadataValue, asset

from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.features.services import FeatureService, raw_service_schema
from feature_pipelines.features.spec import FeatureDefinitionError
from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.offline.fitted_statistics import (
    STATISTICS_TABLE,
    fit_statistics,
    fitted_versions,
    write_fitted_statistics,
)
from feature_pipelines.orchestration.clock import run_clock
from feature_pipelines.orchestration.concurrency import LAKE_WRITES_POOL
from feature_pipelines.orchestration.training_assets import FEATURE_SERVICE_VERSION_KEY
from feature_pipelines.resources import LakeResource
from feature_pipelines.training.frames import require_built_by_its_service
from feature_pipelines.training.spec import TrainingSetSpec

STATISTICS_GROUP = "training_statistics"


class TrainingSetStaleError(RuntimeError):
    """The training set was last built from another version of its service than the catalog's."""


def statistics_asset_name(service: FeatureService) -> str:
    return f"{service.name}_statistics"


def _check_fits(service: FeatureService, training: TrainingSetSpec) -> None:
    """The training set must hold the service's raw vector, column for column and dtype for dtype."""
    held = raw_service_schema(training.service, FEATURE_VIEWS)
    needed = raw_service_schema(service, FEATURE_VIEWS)
    wrong = sorted(name for name, dtype in needed.items() if held.get(name) != dtype)
    if wrong:
        raise FeatureDefinitionError(
            f"feature service {service.name!r} cannot be fitted on training set {training.name!r} (built from "
            f"{training.service.name!r}): it lacks column(s) {wrong} or holds them with another dtype"
        )


def _require_current(context: AssetExecutionContext, training: TrainingSetSpec) -> None:
    event = context.instance.get_latest_materialization_event(AssetKey(training.name))
    if event is None or event.asset_materialization is None:
        raise TrainingSetStaleError(f"training set {training.name!r} has no recorded materialization; materialize it first")
    recorded = event.asset_materialization.metadata.get(FEATURE_SERVICE_VERSION_KEY)
    built_from = getattr(recorded, "value", recorded)
    if built_from != training.service.version:
        raise TrainingSetStaleError(
            f"training set {training.name!r} was last built from feature service {training.service.name!r} version "
            f"{built_from}, the catalog's is {training.service.version}; rematerialize the training set before fitting"
        )


def build_statistics_asset(service: FeatureService, training: TrainingSetSpec) -> AssetsDefinition:
    """`<service>_statistics`: fits the service's transformations on `training`'s table and appends
    them to the statistics table as the next version (see `offline/fitted_statistics.py`)."""
    if not service.needs_statistics:
        raise FeatureDefinitionError(f"feature service {service.name!r} has no transformation to fit")
    _check_fits(service, training)
    transforms = ", ".join(f"{t.kind}({t.feature})" for t in service.transforms)

    @asset(
        name=statistics_asset_name(service),
        description=f"Fitted statistics of feature service `{service.name}` (version {service.version}): "
        f"{transforms}. Each materialization fits them on the whole `{training.name}` table as it is then and "
        f"appends them to `{STATISTICS_TABLE}` as a new numbered version, never rewriting one. The service "
        f"applies the version it pins (now {service.statistics_version}), offline and in the server alike.",
        deps=[AssetDep(training.name)],
        group_name=STATISTICS_GROUP,
        owners=[service.owner],
        kinds={"polars", "delta"},
        pool=LAKE_WRITES_POOL,
    )
    def _statistics(context: AssetExecutionContext, lake: LakeResource) -> MaterializeResult:
        _require_current(context, training)
        store = lake.store()
        table_version = store.version(training.name)
        columns = list(dict.fromkeys(t.feature for t in service.transforms))
        table = store.read(training.name, version=table_version)
        require_built_by_its_service(table, training, table_version)  # never fit on rows of an older definition
        frame = table.select(columns)
        statistics = write_fitted_statistics(
            store, service, fit_statistics(frame, service), training_set=training.name,
            training_set_version=table_version, training_rows=frame.height, fitted_at=run_clock(context),
        )
        versions = fitted_versions(store, service.name).get(service.version, [])
        return MaterializeResult(metadata={
            "feature_service": service.name,
            "feature_service_version": service.version,
            "statistics_version": statistics.version,
            "pinned_statistics_version": service.statistics_version if service.statistics_version is not None else "none",
            "fitted_versions": MetadataValue.json(versions),
            "training_set": training.name,
            "training_set_version": table_version,
            "training_rows": frame.height,
            "statistics": MetadataValue.json(statistics.as_records()),
            "statistics_table": STATISTICS_TABLE,
        })

    return _statistics


def unfitted_services(store: DeltaStore, services: Iterable[FeatureService]) -> list[FeatureService]:
    """The services whose pinned statistics version does not exist yet for their current version
    (a first backfill, or a changed definition): what the feature server could not serve."""
    missing = []
    for service in services:
        if service.needs_statistics and service.statistics_version not in fitted_versions(store, service.name).get(service.version, []):
            missing.append(service)
    return missing
