"""Monitoring assets: training/serving skew, drift and shadow definitions, one daily partition each.

- `serving_skew`: the day's served values (the feature server's log) against the offline
  point-in-time reconstruction; a blocking check fails naming every feature over its tolerance.
- `serving_drift`: the training set's distribution (the 28 days before the partition) against the
  day's serving, per feature (PSI, KS, JSD) and jointly (a domain classifier's AUC).
- `feature_partition_drift`: each feature table's day against the day before (PSI, KS, JSD).
- `candidate_shadow_comparison`: each candidate definition (features/candidates.py) computed
  beside the current one on the day's raw events.

Each writes its figures to a Delta table under `monitoring/`, a PNG and a Markdown report under
the reports directory (data/reports in the demo), and shows the plot in the materialization's
metadata, so the Dagster UI shows the problem at a glance.
"""


from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AssetSelection,
    DefaultScheduleStatus,
    MaterializeResult,
    MetadataValue,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    asset,
    define_asset_job,
    schedule,
)

from feature_pipelines.features.references import resolve_references
from feature_pipelines.features.spec import FeatureMonitoring, FeatureView, Partitioning
from feature_pipelines.monitoring.drift import FeatureDrift, Severity, drift_report, worst
from feature_pipelines.monitoring.multivariate import classifier_drift, rank_transform
from feature_pipelines.monitoring.plots import markdown_image, plot_feature_histograms, plot_psi_bars, plot_skew_bars
from feature_pipelines.monitoring.served_log import read_served_log, served_wide
from feature_pipelines.monitoring.shadow import shadow_compare
from feature_pipelines.monitoring.skew import SkewReport, compare_served_to_offline
from feature_pipelines.names import EVENT_TIMESTAMP, PARTITION_DRIFT_TABLE, SERVING_DRIFT_TABLE, SKEW_TABLE
from feature_pipelines.offline.delta_store import DeltaStore, TableMissingError, TimeSlice
from feature_pipelines.orchestration.partitions import partitions_for
from feature_pipelines.resources import LakeResource
from feature_pipelines.settings import Settings
from feature_pipelines.timeutil import floor_to, require_utc
from feature_pipelines.training.spec import PREDICTION_TIMESTAMP, TrainingSetSpec

MONITORING_GROUP = "monitoring"
MONITORING_JOB = "monitoring_job"
SKEW_ASSET = "serving_skew"
SKEW_CHECK = "served_values_match_offline"
SERVING_DRIFT_ASSET = "serving_drift"
FEATURE_DRIFT_CHECK = "features_within_drift_thresholds"
MULTIVARIATE_CHECK = "joint_distribution_within_threshold"
PARTITION_DRIFT_ASSET = "feature_partition_drift"
SHADOW_ASSET = "candidate_shadow_comparison"
REFERENCE_WINDOW = timedelta(days=28)
DAY_COLUMN = "day"


def partition_drift_check(view_name: str) -> str:
    return f"{view_name}_partition_drift"


def shadow_check(view_name: str) -> str:
    return f"{view_name}_candidate_matches_current"


def _day(context: AssetExecutionContext) -> tuple[datetime, datetime]:
    window = context.partition_time_window
    return window.start.astimezone(timezone.utc), window.end.astimezone(timezone.utc)


def _report_dir(settings: Settings, asset_name: str) -> Path:
    path = settings.reports_dir / asset_name
    path.mkdir(parents=True, exist_ok=True)
    return path


def _write_figures(store: DeltaStore, table: str, rows: list[dict[str, Any]], schema: Mapping[str, pl.DataType], start: datetime, end: datetime) -> int:
    """Replace the partition's rows of a monitoring table (one commit); returns the version."""
    frame = pl.DataFrame(rows, schema={DAY_COLUMN: pl.Datetime("us", "UTC"), **schema}, orient="row") if rows else pl.DataFrame(
        schema={DAY_COLUMN: pl.Datetime("us", "UTC"), **schema}
    )
    return store.write(table, frame, time_slice=TimeSlice(DAY_COLUMN, start, end))


def _severity(level: Severity) -> AssetCheckSeverity:
    return AssetCheckSeverity.ERROR if level is Severity.FAIL else AssetCheckSeverity.WARN


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _publish_report(directory: Path, partition: str, title: str, body: str, image: Path | None) -> tuple[str, Path]:
    """The Markdown shown in the UI (image inlined) and the report file written beside the PNG."""
    inline = markdown_image(image, alt=title) if image is not None else ""
    text = f"## {title}\n\n{inline}\n\n{body}\n"
    report = directory / f"{partition}.md"
    report.write_text(f"## {title}\n\n![{title}]({image.name})\n\n{body}\n" if image is not None else text)
    return text, report


# -- skew ---------------------------------------------------------------------------------------

_SKEW_SCHEMA: dict[str, pl.DataType] = {
    "view": pl.String(),
    "feature": pl.String(),
    "compared": pl.Int64(),
    "mismatches": pl.Int64(),
    "null_mismatches": pl.Int64(),
    "stale_mismatches": pl.Int64(),
    "lagged": pl.Int64(),
    "mismatch_rate": pl.Float64(),
    "max_abs_diff": pl.Float64(),
    "mean_abs_diff": pl.Float64(),
    "tolerance": pl.Float64(),
    "passed": pl.Boolean(),
}


def skew_check_result(report: SkewReport, day: str) -> AssetCheckResult:
    """Fails naming every feature whose mismatch rate passed its tolerance, with examples."""
    if not report.features:
        description = f"{day}: no served values of stored features were logged; nothing to compare"
    elif report.passed:
        description = f"{day}: all {len(report.features)} served features match the offline store within tolerance"
    else:
        description = f"{day}: training/serving skew in {len(report.failing)} feature(s): " + "; ".join(
            f.summary() for f in report.failing
        )
    return AssetCheckResult(
        check_name=SKEW_CHECK,
        passed=report.passed,
        severity=AssetCheckSeverity.ERROR,
        description=description,
        metadata={
            "failing_features": MetadataValue.json([f.reference for f in report.failing]),
            "log_rows": report.log_rows,
            "examples": MetadataValue.json({f.reference: list(f.examples) for f in report.failing}),
        },
    )


def build_skew_asset(views: Mapping[str, FeatureView], settings: Settings) -> AssetsDefinition:
    @asset(
        name=SKEW_ASSET,
        description="Training/serving skew of the day: every value the feature server logged, against what "
        "the offline store gives for the same entity at the same instant (point-in-time, same TTL). "
        "Per feature: mismatch rate, null-mismatch rate, publish lag within the freshness SLA, max/mean "
        "absolute difference. Figures in Delta `monitoring/serving_skew`, plot and report under reports/.",
        group_name=MONITORING_GROUP,
        partitions_def=partitions_for(Partitioning.DAILY, settings, in_progress=True),
        deps=[AssetKey(name) for name in views],
        check_specs=[
            AssetCheckSpec(
                SKEW_CHECK,
                asset=SKEW_ASSET,
                blocking=True,
                description="No feature's share of served values that differ from the offline point-in-time "
                "value exceeds its declared skew_tolerance.",
            )
        ],
        kinds={"polars", "delta"},
        pool="lake_writes",
    )
    def _serving_skew(context: AssetExecutionContext, lake: LakeResource) -> Iterator[Any]:
        start, end = _day(context)
        store = lake.store()
        report = compare_served_to_offline(store, views, read_served_log(store, start, end))
        rows = [
            {DAY_COLUMN: start, "view": f.view, "feature": f.feature, "compared": f.compared, "mismatches": f.mismatches,
             "null_mismatches": f.null_mismatches, "stale_mismatches": f.stale_mismatches, "lagged": f.lagged,
             "mismatch_rate": f.mismatch_rate, "max_abs_diff": f.max_abs_diff, "mean_abs_diff": f.mean_abs_diff,
             "tolerance": f.tolerance, "passed": f.passed}
            for f in report.features
        ]
        version = _write_figures(store, SKEW_TABLE, rows, _SKEW_SCHEMA, start, end)
        directory = _report_dir(settings, SKEW_ASSET)
        image = None
        if report.features:
            image = plot_skew_bars(
                [(f.reference, f.mismatch_rate, f.tolerance) for f in report.features],
                directory / f"{context.partition_key}.png",
                title=f"Served vs offline mismatch rate, {context.partition_key}",
            )
        body = _markdown_table(
            ["feature", "compared", "mismatch rate", "null mismatches", "stale", "lagged (within SLA)", "max abs diff", "passed"],
            [(f.reference, f.compared, f.mismatch_rate, f.null_mismatches, f.stale_mismatches, f.lagged, f.max_abs_diff, f.passed)
             for f in report.features],
        ) if report.features else "No served values were logged for stored features on this day."
        markdown, path = _publish_report(directory, context.partition_key, f"Serving skew {context.partition_key}", body, image)
        yield MaterializeResult(
            metadata={
                "report": MetadataValue.md(markdown),
                "report_path": MetadataValue.path(str(path)),
                "log_rows": report.log_rows,
                "features_compared": len(report.features),
                "features_failing": len(report.failing),
                "offline_versions": MetadataValue.json(report.offline_versions),
                "delta_version": version,
            }
        )
        yield skew_check_result(report, context.partition_key)

    return _serving_skew


# -- drift --------------------------------------------------------------------------------------

_DRIFT_SCHEMA: dict[str, pl.DataType] = {
    "comparison": pl.String(),
    "feature": pl.String(),
    "kind": pl.String(),
    "severity": pl.String(),
    "psi": pl.Float64(),
    "ks_statistic": pl.Float64(),
    "ks_pvalue": pl.Float64(),
    "jsd": pl.Float64(),
    "reference_count": pl.Int64(),
    "current_count": pl.Int64(),
    "null_share_reference": pl.Float64(),
    "null_share_current": pl.Float64(),
    "reasons": pl.String(),
}


def _drift_rows(comparison: str, start: datetime, drifts: Sequence[FeatureDrift]) -> list[dict[str, Any]]:
    return [{DAY_COLUMN: start, "comparison": comparison, **{k: d.as_metadata()[k] for k in _DRIFT_SCHEMA if k != "comparison"}} for d in drifts]


def drift_check_result(check_name: str, what: str, drifts: Sequence[FeatureDrift]) -> AssetCheckResult:
    """FAIL severity -> a failed ERROR check, WARN -> a failed WARN check, naming the features."""
    level = worst(*(d.severity for d in drifts)) if drifts else Severity.PASS
    flagged = [d for d in drifts if d.severity is not Severity.PASS]
    description = (
        f"{what}: no feature drifted past its thresholds ({len(drifts)} compared)"
        if not flagged
        else f"{what}: drift in " + "; ".join(f"{d.feature} [{d.severity.value}] {', '.join(d.reasons)}" for d in flagged)
    )
    return AssetCheckResult(
        check_name=check_name,
        passed=level is Severity.PASS,
        severity=_severity(level),
        description=description,
        metadata={
            "drifting_features": MetadataValue.json([d.feature for d in flagged]),
            "figures": MetadataValue.json([d.as_metadata() for d in drifts]),
        },
    )


def _history_start(store: DeltaStore, views: Sequence[FeatureView]) -> datetime | None:
    """The first instant at which every view had a snapshot; None if one has none."""
    starts = []
    for view in views:
        try:
            first = store.scan(view.name).select(pl.col(EVENT_TIMESTAMP).min()).collect().item()
        except TableMissingError:
            return None
        if first is None:
            return None
        starts.append(first)
    return max(starts) if starts else None


def _training_reference(
    store: DeltaStore, training: TrainingSetSpec, views: Sequence[FeatureView], features: Sequence[str], start: datetime
) -> pl.DataFrame:
    """The training rows of the REFERENCE_WINDOW before `start` (what the model learned from lately),
    leaving out rows stamped before every feature table had its first snapshot: their nulls say
    that the history had not begun, not what the features look like."""
    empty = pl.DataFrame(schema={name: pl.Float64 for name in features})
    history = _history_start(store, views)
    if history is None:
        return empty
    try:
        lazy = store.scan(training.name)
    except TableMissingError:
        return empty
    low = max(start - REFERENCE_WINDOW, history)
    return lazy.filter((pl.col(PREDICTION_TIMESTAMP) < start) & (pl.col(PREDICTION_TIMESTAMP) >= low)).select(features).collect()


def build_serving_drift_asset(training: TrainingSetSpec, views: Mapping[str, FeatureView], settings: Settings) -> AssetsDefinition:
    requests = resolve_references(list(training.features), views)
    thresholds: dict[str, FeatureMonitoring] = {
        name: request.view.feature(name).monitoring for request in requests for name in request.features
    }
    names = list(thresholds)
    joint_features = [name for name in names if thresholds[name].stationary]
    training_views = [request.view for request in requests]

    @asset(
        name=SERVING_DRIFT_ASSET,
        description=f"Distribution drift between `{training.name}` (its {REFERENCE_WINDOW.days} days before the "
        "partition) and the day's served values of the same features: PSI (reference-quantile bins), KS "
        "(numeric), Jensen-Shannon (categorical), and a domain classifier's cross-validated AUC for "
        "changes in the joint distribution that per-feature tests cannot see.",
        group_name=MONITORING_GROUP,
        partitions_def=partitions_for(Partitioning.DAILY, settings, in_progress=True),
        deps=[AssetKey(training.name)],
        check_specs=[
            AssetCheckSpec(FEATURE_DRIFT_CHECK, asset=SERVING_DRIFT_ASSET,
                           description="Per feature PSI/KS/JSD under the feature's declared warn/fail thresholds."),
            AssetCheckSpec(MULTIVARIATE_CHECK, asset=SERVING_DRIFT_ASSET,
                           description="A classifier cannot tell training rows from serving rows by how their features "
                           "move together, each side rank-transformed (AUC under 0.6 warn / 0.7 fail)."),
        ],
        kinds={"polars", "delta", "scikit-learn"},
        pool="lake_writes",
    )
    def _serving_drift(context: AssetExecutionContext, lake: LakeResource) -> Iterator[Any]:
        start, end = _day(context)
        store = lake.store()
        reference = _training_reference(store, training, training_views, names, start)
        current = served_wide(read_served_log(store, start, end), views, training.features).select(names)
        drifts = drift_report(reference, current, thresholds)
        # The joint test sees the stationary features' copula (each side's ranks): marginal shifts
        # are the per-feature tests' job, and weather-driven features would make any two days (or
        # any burst of requests at one instant) separable.
        joint = classifier_drift(rank_transform(reference, joint_features, seed=0),
                                 rank_transform(current, joint_features, seed=1), joint_features, seed=0)
        version = _write_figures(store, SERVING_DRIFT_TABLE, _drift_rows("training_vs_serving", start, drifts), _DRIFT_SCHEMA, start, end)
        directory = _report_dir(settings, SERVING_DRIFT_ASSET)
        histograms = plot_feature_histograms(
            reference, current, drifts, directory / f"{context.partition_key}-histograms.png",
            title=f"{training.name} (reference) vs serving {context.partition_key}",
        )
        bars = plot_psi_bars(drifts, directory / f"{context.partition_key}-psi.png", title=f"PSI per feature, {context.partition_key}")
        body = (
            markdown_image(bars, alt="PSI per feature") + "\n\n"
            + _markdown_table(
                ["feature", "severity", "psi", "ks", "ks p-value", "null share ref", "null share cur", "reasons"],
                [(d.feature, d.severity.value, d.psi, d.ks_statistic, d.ks_pvalue, d.null_share_reference,
                  d.null_share_current, "; ".join(d.reasons)) for d in drifts],
            )
            + f"\n\nJoint distribution: classifier AUC {joint.auc:.3f} ± {joint.auc_std:.3f} ({joint.severity.value}: {joint.reason})"
        )
        markdown, path = _publish_report(directory, context.partition_key, f"Serving drift {context.partition_key}", body, histograms)
        yield MaterializeResult(
            metadata={
                "report": MetadataValue.md(markdown),
                "report_path": MetadataValue.path(str(path)),
                "reference_rows": reference.height,
                "serving_rows": current.height,
                "classifier_auc": joint.as_metadata()["auc"],
                "delta_version": version,
            }
        )
        yield drift_check_result(FEATURE_DRIFT_CHECK, f"{training.name} vs serving {context.partition_key}", drifts)
        yield AssetCheckResult(
            check_name=MULTIVARIATE_CHECK,
            passed=joint.severity is Severity.PASS,
            severity=_severity(joint.severity),
            description=f"classifier AUC {joint.auc:.3f} ({joint.severity.value}): {joint.reason}",
            metadata={k: v for k, v in joint.as_metadata().items() if v is not None},
        )

    return _serving_drift


def _partition_rows(store: DeltaStore, view: FeatureView, start: datetime, end: datetime, features: Sequence[str]) -> pl.DataFrame:
    return store.read(view.name, time_slice=TimeSlice(EVENT_TIMESTAMP, start, end, closed="right")).select(features)


def build_partition_drift_asset(views: Mapping[str, FeatureView], settings: Settings) -> AssetsDefinition:
    monitored = {
        name: {f.name: f.monitoring for f in view.features if f.monitoring.stationary}
        for name, view in views.items()
    }
    monitored = {name: features for name, features in monitored.items() if features}

    @asset(
        name=PARTITION_DRIFT_ASSET,
        description="Each feature table's day against the day before, per feature (PSI, KS, JSD): an "
        "upstream change shows here before any model sees it. Features whose values legitimately change "
        "day to day (delays, the weather) are declared `stationary=False` and left out.",
        group_name=MONITORING_GROUP,
        partitions_def=partitions_for(Partitioning.DAILY, settings, in_progress=True),
        deps=[AssetKey(name) for name in monitored],
        check_specs=[AssetCheckSpec(partition_drift_check(name), asset=PARTITION_DRIFT_ASSET,
                                    description=f"`{name}`: the day's values against the day before.") for name in monitored],
        kinds={"polars", "delta"},
        pool="lake_writes",
    )
    def _partition_drift(context: AssetExecutionContext, lake: LakeResource) -> Iterator[Any]:
        start, end = _day(context)
        store = lake.store()
        results: dict[str, list[FeatureDrift]] = {}
        rows: list[dict[str, Any]] = []
        for name, thresholds in monitored.items():
            view = views[name]
            current = _partition_rows(store, view, start, end, list(thresholds))
            previous = _partition_rows(store, view, start - (end - start), start, list(thresholds))
            results[name] = drift_report(previous, current, thresholds)
            rows += _drift_rows(f"{name}:previous_day", start, results[name])
        version = _write_figures(store, PARTITION_DRIFT_TABLE, rows, _DRIFT_SCHEMA, start, end)
        directory = _report_dir(settings, PARTITION_DRIFT_ASSET)
        everything = [d for drifts in results.values() for d in drifts]
        bars = plot_psi_bars(everything, directory / f"{context.partition_key}.png",
                             title=f"PSI of each feature table's day vs the day before, {context.partition_key}")
        body = _markdown_table(
            ["feature", "severity", "psi", "ks", "rows (previous / day)", "reasons"],
            [(d.feature, d.severity.value, d.psi, d.ks_statistic, f"{d.reference_count} / {d.current_count}", "; ".join(d.reasons))
             for d in everything],
        )
        markdown, path = _publish_report(directory, context.partition_key, f"Partition drift {context.partition_key}", body, bars)
        yield MaterializeResult(metadata={"report": MetadataValue.md(markdown), "report_path": MetadataValue.path(str(path)),
                                          "delta_version": version})
        for name, drifts in results.items():
            yield drift_check_result(partition_drift_check(name), f"{name} {context.partition_key} vs the day before", drifts)

    return _partition_drift


# -- shadow -------------------------------------------------------------------------------------

def build_shadow_asset(views: Mapping[str, FeatureView], candidates: Mapping[str, FeatureView], settings: Settings) -> AssetsDefinition:
    sources = sorted({views[name].source.asset for name in candidates})

    @asset(
        name=SHADOW_ASSET,
        description="Each candidate definition (features/candidates.py) computed beside the current one on "
        "the day's raw events, through the same computation: how many values would change, by how much, "
        "with examples -- read this before promoting a candidate.",
        group_name=MONITORING_GROUP,
        partitions_def=partitions_for(Partitioning.DAILY, settings, in_progress=True),
        deps=[AssetKey(s) for s in sources] + [AssetKey(name) for name in candidates],
        check_specs=[AssetCheckSpec(shadow_check(name), asset=SHADOW_ASSET,
                                    description=f"The candidate `{name}` gives the current values (WARN when not).")
                     for name in candidates],
        kinds={"polars"},
    )
    def _shadow(context: AssetExecutionContext, lake: LakeResource) -> Iterator[Any]:
        start, end = _day(context)
        store = lake.store()
        reports = {}
        for name, candidate in candidates.items():
            view = views[name]
            reach = max(view.max_window, candidate.max_window) + view.source.max_lateness
            events = store.read(view.source.asset, time_slice=TimeSlice(view.source.known_at_column, start - reach, end))
            reports[name] = shadow_compare(events, view, candidate, start=start, end=end)
        rows = [(r.view, f.feature, f.compared, f.discrepancies, f.null_discrepancies, f.max_abs_diff)
                for r in reports.values() for f in r.features]
        body = "\n\n".join(r.summary() for r in reports.values()) + "\n\n" + _markdown_table(
            ["view", "feature", "compared", "discrepancies", "null discrepancies", "max abs diff"], rows)
        markdown, path = _publish_report(_report_dir(settings, SHADOW_ASSET), context.partition_key,
                                         f"Candidate definitions {context.partition_key}", body, None)
        yield MaterializeResult(metadata={"report": MetadataValue.md(markdown), "report_path": MetadataValue.path(str(path))})
        for name, report in reports.items():
            yield AssetCheckResult(
                check_name=shadow_check(name),
                passed=report.identical,
                severity=AssetCheckSeverity.WARN,
                description=report.summary(),
                metadata={
                    "features": MetadataValue.json([f.as_metadata() for f in report.features]),
                    "examples": MetadataValue.json({f.feature: list(f.examples) for f in report.features if f.examples}),
                    "only_in_current": report.only_in_current,
                    "only_in_candidate": report.only_in_candidate,
                },
            )

    return _shadow


def build_monitoring_job_and_schedule(settings: Settings) -> tuple[Any, ScheduleDefinition]:
    """One job over the monitoring group; its schedule judges each day at 00:45 UTC the day after
    (the serving log of a day is complete once the day is over; a run of today's open partition
    from the UI judges the day so far)."""
    job = define_asset_job(
        MONITORING_JOB,
        selection=AssetSelection.groups(MONITORING_GROUP),
        partitions_def=partitions_for(Partitioning.DAILY, settings, in_progress=True),
        description="Skew, drift and shadow reports of one day.",
    )
    status = DefaultScheduleStatus.RUNNING if settings.replay.offset else DefaultScheduleStatus.STOPPED

    @schedule(job=job, cron_schedule="45 0 * * *", execution_timezone="UTC", default_status=status,
              name="monitoring_schedule", description="Every day at 00:45 UTC: skew, drift and shadow reports of the day before.")
    def monitoring_schedule(context: ScheduleEvaluationContext) -> Iterator[RunRequest]:
        day = floor_to(require_utc(context.scheduled_execution_time, "tick"), timedelta(days=1)) - timedelta(days=1)  # type: ignore[arg-type]
        key = day.strftime("%Y-%m-%d")
        yield RunRequest(run_key=key, partition_key=key)

    return job, monitoring_schedule


def build_monitoring_assets(
    views: Mapping[str, FeatureView], training: TrainingSetSpec, candidates: Mapping[str, FeatureView], settings: Settings
) -> list[AssetsDefinition]:
    assets = [
        build_skew_asset(views, settings),
        build_serving_drift_asset(training, views, settings),
        build_partition_drift_asset(views, settings),
    ]
    if candidates:
        assets.append(build_shadow_asset(views, candidates, settings))
    return assets
