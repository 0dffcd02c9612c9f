"""Monitoring assets: training/serving skew, drift and shadow definitions, one daily partition each.

- `serving_skew`: the day's served values (the feature server's log) against the offline
  point-in-time reconstruction; a blocking check fails naming every feature over its tolerance.
- `serving_drift`: the training set's distribution (the 28 days before the partition) against the
  day's serving, per feature (PSI, KS, JSD) and jointly (a domain classifier's AUC).
- `feature_partition_drift`: each feature table's day against the day before (PSI, KS, JSD).
- `candidate_shadow_comparison`: each candidate definition (features/candidates.py) computed
  beside the current one on the day's raw events.

Each writes its figures to a Delta table under `monitoring/` (monitoring/tables.py), a PNG and a
Markdown report under the reports directory (data/reports in the demo; monitoring/day_reports.py),
and shows the plot in the materialization's metadata, so the Dagster UI shows the problem at a
glance. The checks are in monitoring_checks.py, the job and its schedule in schedules.py.
"""


from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dagster import (
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    MaterializeResult,
    MetadataValue,
    asset,
)

from feature_pipelines.features.references import resolve_references
from feature_pipelines.features.spec import FeatureMonitoring, FeatureView, Partitioning
from feature_pipelines.monitoring import tables
from feature_pipelines.monitoring.day_reports import (
    partition_drift_report,
    serving_drift_report,
    shadow_report,
    skew_report,
)
from feature_pipelines.monitoring.drift import FeatureDrift, drift_report
from feature_pipelines.monitoring.inputs import REFERENCE_WINDOW, partition_rows, shadow_events, training_reference
from feature_pipelines.monitoring.multivariate import classifier_drift, rank_transform
from feature_pipelines.monitoring.report import Report
from feature_pipelines.monitoring.served_log import read_served_log, served_wide
from feature_pipelines.monitoring.shadow import shadow_compare
from feature_pipelines.monitoring.skew import compare_served_to_offline
from feature_pipelines.orchestration.monitoring_checks import (
    FEATURE_DRIFT_CHECK,
    MULTIVARIATE_CHECK,
    SKEW_CHECK,
    drift_check_result,
    multivariate_check_result,
    partition_drift_check,
    shadow_check,
    shadow_check_results,
    skew_check_result,
)
from feature_pipelines.orchestration.partitions import partitions_for
from feature_pipelines.orchestration.schedules import MONITORING_JOB
from feature_pipelines.resources import LakeResource
from feature_pipelines.settings import Settings
from feature_pipelines.training.spec import TrainingSetSpec

MONITORING_GROUP = "monitoring"
SKEW_ASSET = "serving_skew"
SERVING_DRIFT_ASSET = "serving_drift"
PARTITION_DRIFT_ASSET = "feature_partition_drift"
SHADOW_ASSET = "candidate_shadow_comparison"


def _day(context: AssetExecutionContext) -> tuple[datetime, datetime]:
    window = context.partition_time_window
    return window.start.astimezone(UTC), window.end.astimezone(UTC)


def _materialized(report: Report, directory: Path, partition: str, **metadata: Any) -> MaterializeResult:
    """Write the report beside its PNGs and show it (image inlined) in the materialization's metadata."""
    path = report.write(directory, partition)
    shown = {"report": MetadataValue.md(report.markdown()), "report_path": MetadataValue.path(str(path))}
    return MaterializeResult(metadata={**shown, **metadata})


def _monitoring_asset(
    name: str, settings: Settings, *, description: str, deps: Sequence[str], checks: Sequence[AssetCheckSpec],
    kinds: set[str], writes_lake: bool = True,
) -> Callable[[Callable[..., Any]], AssetsDefinition]:
    """The @asset every monitor shares: the monitoring group, one daily partition (today's open),
    the lake-writes pool when it writes a monitoring table."""
    return asset(
        name=name,
        description=description,
        group_name=MONITORING_GROUP,
        partitions_def=partitions_for(Partitioning.DAILY, settings, in_progress=True),
        deps=[AssetKey(dep) for dep in deps],
        check_specs=list(checks),
        kinds=kinds,
        **({"pool": "lake_writes"} if writes_lake else {}),
    )


def build_skew_asset(views: Mapping[str, FeatureView], settings: Settings) -> AssetsDefinition:
    @_monitoring_asset(
        SKEW_ASSET, settings,
        description="Training/serving skew of the day: every value the feature server logged, against what "
        "the offline store gives for the same entity at the same instant (point-in-time, same TTL). "
        "On-demand features are recomputed offline with the server's expression. Per feature: mismatch rate, "
        "null-mismatch rate, publish lag within the freshness SLA, max/mean absolute difference, each mismatch "
        "split by Delta time travel into serving bug / restated later / late data, and the candidate fault "
        "that reproduces the mismatches (root cause). Figures in Delta `monitoring/serving_skew`, plot and "
        "report under reports/.",
        deps=list(views),
        checks=[AssetCheckSpec(SKEW_CHECK, asset=SKEW_ASSET, blocking=True,
                               description="No feature's share of served values that differ from the offline "
                               "point-in-time value exceeds its declared skew_tolerance.")],
        kinds={"polars", "delta"},
    )
    def _serving_skew(context: AssetExecutionContext, lake: LakeResource) -> Iterator[Any]:
        start, end = _day(context)
        store = lake.store()
        report = compare_served_to_offline(store, views, read_served_log(store, start, end))
        version = tables.SKEW.write(store, tables.SKEW.rows(start, report.features), start, end)
        directory = settings.reports_dir / SKEW_ASSET
        yield _materialized(
            skew_report(report, directory, context.partition_key), directory, context.partition_key,
            log_rows=report.log_rows,
            features_compared=len(report.features),
            features_failing=len(report.failing),
            on_demand_compared=report.on_demand_compared,
            three_way=MetadataValue.json(report.three_way_counts()),
            root_causes=MetadataValue.json(report.root_causes()),
            offline_versions=MetadataValue.json(report.offline_versions),
            delta_version=version,
        )
        yield skew_check_result(report, context.partition_key)

    return _serving_skew


def build_serving_drift_asset(
    training: TrainingSetSpec, views: Mapping[str, FeatureView], settings: Settings
) -> AssetsDefinition:
    requests = resolve_references(list(training.features), views)
    thresholds: dict[str, FeatureMonitoring] = {
        name: request.view.feature(name).monitoring for request in requests for name in request.features
    }
    names = list(thresholds)
    joint_features = [name for name in names if thresholds[name].stationary]
    training_views = [request.view for request in requests]

    @_monitoring_asset(
        SERVING_DRIFT_ASSET, settings,
        description=f"Distribution drift between `{training.name}` (its {REFERENCE_WINDOW.days} days before the "
        "partition) and the day's served values of the same features: PSI (reference-quantile bins), KS "
        "(numeric), Jensen-Shannon (categorical), and a domain classifier's cross-validated AUC for "
        "changes in the joint distribution that per-feature tests cannot see.",
        deps=[training.name],
        checks=[
            AssetCheckSpec(FEATURE_DRIFT_CHECK, asset=SERVING_DRIFT_ASSET,
                           description="Per feature PSI/KS/JSD under the feature's declared warn/fail thresholds."),
            AssetCheckSpec(MULTIVARIATE_CHECK, asset=SERVING_DRIFT_ASSET,
                           description="A classifier cannot tell training rows from serving rows by how their features "
                           "move together, each side rank-transformed (AUC under 0.6 warn / 0.7 fail)."),
        ],
        kinds={"polars", "delta", "scikit-learn"},
    )
    def _serving_drift(context: AssetExecutionContext, lake: LakeResource) -> Iterator[Any]:
        start, end = _day(context)
        store = lake.store()
        reference = training_reference(store, training, training_views, names, start)
        current = served_wide(read_served_log(store, start, end), views, training.features).select(names)
        drifts = drift_report(reference, current, thresholds)
        # The joint test sees the stationary features' copula (each side's ranks): marginal shifts
        # are the per-feature tests' job, and weather-driven features would make any two days (or
        # any burst of requests at one instant) separable.
        joint = classifier_drift(rank_transform(reference, joint_features, seed=0),
                                 rank_transform(current, joint_features, seed=1), joint_features, seed=0)
        rows = tables.SERVING_DRIFT.rows(start, drifts, comparison="training_vs_serving")
        version = tables.SERVING_DRIFT.write(store, rows, start, end)
        directory, key = settings.reports_dir / SERVING_DRIFT_ASSET, context.partition_key
        yield _materialized(
            serving_drift_report(training.name, reference, current, drifts, joint, directory, key), directory, key,
            reference_rows=reference.height, serving_rows=current.height,
            classifier_auc=joint.as_metadata()["auc"], delta_version=version,
        )
        yield drift_check_result(FEATURE_DRIFT_CHECK, f"{training.name} vs serving {key}", drifts)
        yield multivariate_check_result(joint)

    return _serving_drift


def build_partition_drift_asset(views: Mapping[str, FeatureView], settings: Settings) -> AssetsDefinition:
    monitored = {
        name: {f.name: f.monitoring for f in view.features if f.monitoring.stationary}
        for name, view in views.items()
    }
    monitored = {name: features for name, features in monitored.items() if features}

    @_monitoring_asset(
        PARTITION_DRIFT_ASSET, settings,
        description="Each feature table's day against the day before, per feature (PSI, KS, JSD): an "
        "upstream change shows here before any model sees it. Features whose values legitimately change "
        "day to day (delays, the weather) are declared `stationary=False` and left out.",
        deps=list(monitored),
        checks=[AssetCheckSpec(partition_drift_check(name), asset=PARTITION_DRIFT_ASSET,
                               description=f"`{name}`: the day's values against the day before.")
                for name in monitored],
        kinds={"polars", "delta"},
    )
    def _partition_drift(context: AssetExecutionContext, lake: LakeResource) -> Iterator[Any]:
        start, end = _day(context)
        store = lake.store()
        results: dict[str, list[FeatureDrift]] = {}
        rows: list[dict[str, Any]] = []
        for name, thresholds in monitored.items():
            current = partition_rows(store, views[name], start, end, list(thresholds))
            previous = partition_rows(store, views[name], start - (end - start), start, list(thresholds))
            results[name] = drift_report(previous, current, thresholds)
            rows += tables.PARTITION_DRIFT.rows(start, results[name], comparison=f"{name}:previous_day")
        version = tables.PARTITION_DRIFT.write(store, rows, start, end)
        directory, key = settings.reports_dir / PARTITION_DRIFT_ASSET, context.partition_key
        yield _materialized(partition_drift_report(results, directory, key), directory, key, delta_version=version)
        for name, drifts in results.items():
            yield drift_check_result(partition_drift_check(name), f"{name} {key} vs the day before", drifts)

    return _partition_drift


def build_shadow_asset(
    views: Mapping[str, FeatureView], candidates: Mapping[str, FeatureView], settings: Settings
) -> AssetsDefinition:
    sources = sorted({views[name].source.asset for name in candidates})

    @_monitoring_asset(
        SHADOW_ASSET, settings,
        description="Each candidate definition (features/candidates.py) computed beside the current one on "
        "the day's raw events, through the same computation: how many values would change, by how much, "
        "with examples -- read this before promoting a candidate.",
        deps=[*sources, *candidates],
        checks=[AssetCheckSpec(shadow_check(name), asset=SHADOW_ASSET,
                               description=f"The candidate `{name}` gives the current values (WARN when not).")
                for name in candidates],
        kinds={"polars"},
        writes_lake=False,
    )
    def _shadow(context: AssetExecutionContext, lake: LakeResource) -> Iterator[Any]:
        start, end = _day(context)
        store = lake.store()
        reports = {
            name: shadow_compare(shadow_events(store, views[name], candidate, start, end), views[name], candidate,
                                 start=start, end=end)
            for name, candidate in candidates.items()
        }
        yield _materialized(shadow_report(reports, context.partition_key), settings.reports_dir / SHADOW_ASSET,
                            context.partition_key)
        yield from shadow_check_results(reports)

    return _shadow


def build_monitoring_assets(
    views: Mapping[str, FeatureView],
    training: TrainingSetSpec,
    candidates: Mapping[str, FeatureView],
    settings: Settings,
) -> list[AssetsDefinition]:
    """The monitoring group: skew, serving drift, partition drift, and the shadow comparison if there are candidates."""
    assets = [
        build_skew_asset(views, settings),
        build_serving_drift_asset(training, views, settings),
        build_partition_drift_asset(views, settings),
    ]
    if candidates:
        assets.append(build_shadow_asset(views, candidates, settings))
    return assets


__all__ = [
    "FEATURE_DRIFT_CHECK",
    "MONITORING_GROUP",
    "MONITORING_JOB",
    "MULTIVARIATE_CHECK",
    "PARTITION_DRIFT_ASSET",
    "SERVING_DRIFT_ASSET",
    "SHADOW_ASSET",
    "SKEW_ASSET",
    "SKEW_CHECK",
    "build_monitoring_assets",
    "build_partition_drift_asset",
    "build_serving_drift_asset",
    "build_shadow_asset",
    "build_skew_asset",
    "partition_drift_check",
    "shadow_check",
]
