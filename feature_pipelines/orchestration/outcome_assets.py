"""The outcome asset: a day's predictions joined to their outcomes once known, judged against the model's holdout."""

from collections.abc import Iterator
from datetime import UTC, timedelta
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
    asset,
)

from feature_pipelines.features.services import FEATURE_SERVICES
from feature_pipelines.features.spec import Partitioning
from feature_pipelines.models.registry import model_version
from feature_pipelines.models.training import ModelSpec
from feature_pipelines.monitoring.drift import Severity
from feature_pipelines.monitoring.outcomes import (
    OUTCOME_THRESHOLDS,
    OutcomeReport,
    judge_outcomes,
    labelled_predictions,
    model_versions,
    plot_outcomes,
    read_predictions,
    report_record,
)
from feature_pipelines.monitoring.report import Report
from feature_pipelines.offline.delta_store import TimeSlice
from feature_pipelines.orchestration.clock import run_clock
from feature_pipelines.orchestration.concurrency import LAKE_WRITES_POOL
from feature_pipelines.orchestration.model_assets import MODELS_GROUP
from feature_pipelines.orchestration.partitions import partitions_for
from feature_pipelines.resources import LakeResource
from feature_pipelines.settings import Settings

OUTCOMES_CHECK = "outcomes_within_thresholds"
FLIGHT_REACH = timedelta(days=2)  # a prediction is for a departure within a day; its arrival within a day more


def outcome_asset_name(spec: ModelSpec) -> str:
    return f"{spec.name}_outcomes"


def build_outcome_asset(spec: ModelSpec, settings: Settings) -> Any:
    """`<model>_outcomes`, daily by the predictions' request day."""
    name = outcome_asset_name(spec)
    t = OUTCOME_THRESHOLDS

    @asset(
        name=name,
        description=f"The day's predictions of `{spec.name}` (table `_serving/predictions`, by request time) joined "
        "to their outcomes once known: a flight's arrival delay at its `arrived_at`, never before, and never "
        "one known before the prediction. Per model version: AUC, log loss and calibration beside the holdout's, "
        "and a concept-drift test of P(late | features) per feature (error by feature bin against the holdout's "
        "bins). Pending (not yet arrived) and cancelled or diverted flights are counted, never imputed. "
        "Re-materialize a day later to judge outcomes that arrived since.",
        deps=[AssetDep(spec.name), AssetDep("raw_flights")],
        group_name=MODELS_GROUP,
        partitions_def=partitions_for(Partitioning.DAILY, settings, in_progress=True),
        check_specs=[AssetCheckSpec(
            OUTCOMES_CHECK, asset=name,
            description=f"Against the holdout: log loss at most +{t.log_loss_excess_warn} (warn) / +{t.log_loss_excess_fail} "
            f"(fail), AUC at most -{t.auc_drop_warn} / -{t.auc_drop_fail}, ECE under {t.ece_warn} / {t.ece_fail}, each "
            f"feature's concept-drift statistic under {t.concept_warn} / {t.concept_fail} (calibrated on 2013).")],
        kinds={"polars", "delta"},
        pool=LAKE_WRITES_POOL,
    )
    def _outcomes(context: AssetExecutionContext, lake: LakeResource) -> Iterator[Any]:
        window = context.partition_time_window
        start, end = window.start.astimezone(UTC), window.end.astimezone(UTC)
        now = run_clock(context)
        store = lake.store()
        predictions = read_predictions(store, start, end)
        if predictions.height:
            predictions = predictions.filter(predictions["model_name"] == spec.name)
        flights = store.read("raw_flights", time_slice=TimeSlice("dep_known_at", start - timedelta(days=1),
                                                                   max(start, min(end + FLIGHT_REACH, now))))
        labelled, counts = labelled_predictions(predictions, flights, known_by=now) if predictions.height else (None, None)
        reports: list[OutcomeReport] = []
        for model_name, version in model_versions(predictions):
            registered = model_version(store, model_name, version)
            reports.append(judge_outcomes(labelled, counts, registered, FEATURE_SERVICES[registered.service]))
        directory = settings.reports_dir / name
        partition = context.partition_key
        image = plot_outcomes(reports[0], directory / f"{partition}.png", title=f"{spec.name}, {partition}") if reports else None
        sections: list[Any] = [r.message() for r in reports] or [f"no prediction of {spec.name} was logged on {partition}"]
        report = Report(f"{spec.name} outcomes, {partition}", tuple(sections), image)
        path = report.write(directory, partition)
        yield MaterializeResult(metadata={
            "report": MetadataValue.md(report.markdown()),
            "report_path": MetadataValue.path(str(path)),
            "predictions": predictions.height,
            "labelled": counts.labelled if counts is not None else 0,
            "pending": counts.pending if counts is not None else 0,
            "known_by": now.isoformat(),
            "figures": MetadataValue.json([report_record(r) for r in reports]),
        })
        worst = max(reports, key=lambda r: r.severity.rank, default=None)
        failed = worst is not None and worst.severity is not Severity.PASS
        yield AssetCheckResult(
            check_name=OUTCOMES_CHECK, passed=not failed,
            severity=AssetCheckSeverity.ERROR if worst is not None and worst.severity is Severity.FAIL else AssetCheckSeverity.WARN,
            description=f"{partition}: " + (" | ".join(r.message() for r in reports) or "no predictions to judge"),
        )

    return _outcomes
