"""Outcome monitoring: a day's predictions joined to their outcomes once known, judged against the
model's holdout.

An outcome is joined only when it is known: a flight's `arr_delay` at its `arrived_at`, and
only when that instant is at or before the run's clock (`known_by`) and after the prediction's
request (an outcome known before it was predicted would be a replay bug, and is counted apart).
Predictions are joined by their `outcome_key` (flight number and scheduled departure) and the
entity's carrier and origin; a prediction whose flight has not arrived yet is *pending*, one
whose flight was cancelled or diverted is *unlabelled* (no arrival delay, never imputed).

The day's figures: AUC, log loss, calibration (ECE) and their difference from the holdout's, and
the concept-drift test of every feature (`monitoring/concept_drift.py`). Thresholds are
calibrated on 2013 by `scripts/calibrate_outcomes.py` (figures in `OUTCOME_THRESHOLDS`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import polars as pl

from feature_pipelines.features.services import FeatureService, service_schema
from feature_pipelines.models.metrics import ClassifierMetrics, classifier_metrics
from feature_pipelines.models.predictions import decode_vectors
from feature_pipelines.models.registry import RegisteredModel
from feature_pipelines.monitoring.concept_drift import (
    ConceptDrift,
    concept_drift,
    error_at_reference,
    reference_from_record,
)
from feature_pipelines.monitoring.drift import Severity, judge, worst
from feature_pipelines.names import PREDICTIONS_TABLE
from feature_pipelines.offline.delta_store import DeltaStore, TableMissingError
from feature_pipelines.training.labels import LATE_THRESHOLD_MINUTES

LABEL = "label"
SCORE = "score"
FLIGHT_KEY = ["carrier", "flight_number", "origin", "scheduled_departure_at"]
MIN_OUTCOMES = 200  # fewer labelled predictions in a day: figures shown, not judged


@dataclass(frozen=True)
class OutcomeThresholds:
    """Warn and fail levels of a day against the model's holdout (differences day - holdout)."""

    log_loss_excess_warn: float
    log_loss_excess_fail: float
    auc_drop_warn: float
    auc_drop_fail: float
    ece_warn: float
    ece_fail: float
    concept_warn: float
    concept_fail: float


# Calibrated on 2013 by scripts/calibrate_outcomes.py: a model trained on the 14 days before each
# month, every day of that month judged against its holdout (334 days; p50 / p99 / max):
#   log loss - holdout's   -0.009 / 0.587 / 0.783      holdout AUC - day's   0.022 / 0.217 / 0.289
#   ECE                     0.097 / 0.376 / 0.438      worst concept drift  14.6 / 171.8 / 206.5
# Warn near the year's 99th percentile, fail above its maximum: a clean 2013 never fails. The
# concept-drift statistic of a real day is far from 1: what makes a flight late changes with the
# weather from day to day, so only a change beyond anything 2013 saw fails.
OUTCOME_THRESHOLDS = OutcomeThresholds(
    log_loss_excess_warn=0.6, log_loss_excess_fail=0.85,
    auc_drop_warn=0.22, auc_drop_fail=0.32,
    ece_warn=0.38, ece_fail=0.48,
    concept_warn=175.0, concept_fail=230.0,
)


@dataclass(frozen=True)
class OutcomeCounts:
    """What became of a day's predictions: joined to a known outcome, or why not."""

    predictions: int
    without_outcome_key: int
    pending: int
    unlabelled: int
    known_before_request: int
    labelled: int


@dataclass(frozen=True)
class OutcomeReport:
    """A day's outcome figures for one model version, against its holdout, with a verdict."""

    model: str
    model_version: int
    counts: OutcomeCounts
    holdout: ClassifierMetrics
    day: ClassifierMetrics | None
    concept: tuple[ConceptDrift, ...]
    severity: Severity
    reasons: tuple[str, ...] = field(default_factory=tuple)

    def message(self) -> str:
        head = (f"model {self.model!r} version {self.model_version}: {self.counts.labelled} of "
                f"{self.counts.predictions} predictions with a known outcome ({self.counts.pending} pending, "
                f"{self.counts.unlabelled} cancelled or diverted)")
        if self.day is None:
            return f"{head}; too few outcomes (< {MIN_OUTCOMES}) to judge"
        figures = (f"AUC {self.day.auc:.3f} (holdout {self.holdout.auc:.3f}), log loss {self.day.log_loss:.3f} "
                   f"(holdout {self.holdout.log_loss:.3f}), ECE {self.day.ece:.3f}")
        verdict = "; ".join(self.reasons) if self.reasons else "within thresholds"
        return f"{head}; {figures}; {verdict}"


def read_predictions(store: DeltaStore, start: datetime, end: datetime) -> pl.DataFrame:
    """Predictions requested in [start, end); an empty frame if none were ever logged."""
    try:
        lazy = store.scan(PREDICTIONS_TABLE)
    except TableMissingError:
        return pl.DataFrame()
    return lazy.filter((pl.col("request_time") >= start) & (pl.col("request_time") < end)).collect()


def _keyed(predictions: pl.DataFrame) -> pl.DataFrame:
    entity = pl.col("entity_key").str.json_decode(pl.Struct({"carrier": pl.String, "origin": pl.String}))
    outcome = pl.col("outcome_key").str.json_decode(pl.Struct({"flight_number": pl.Int64, "scheduled_departure_at": pl.String}))
    return predictions.with_columns(entity.alias("_entity"), outcome.alias("_outcome")).with_columns(
        pl.col("_entity").struct.field("carrier"), pl.col("_entity").struct.field("origin"),
        pl.col("_outcome").struct.field("flight_number"),
        pl.col("_outcome").struct.field("scheduled_departure_at").str.to_datetime(time_zone="UTC", time_unit="us"),
    ).drop("_entity", "_outcome")


def labelled_predictions(predictions: pl.DataFrame, flights: pl.DataFrame, *, known_by: datetime) -> tuple[pl.DataFrame, OutcomeCounts]:
    """The predictions whose outcome is known by `known_by`, with `label` (arrived > 15 min late);
    and the counts of the others. `flights`: raw_flights rows (their `arrived_at`, `arr_delay`)."""
    keyed = _keyed(predictions.filter(pl.col("outcome_key").is_not_null()))
    outcomes = flights.select(*FLIGHT_KEY, "arrived_at", "arr_delay", "dep_known_at").filter(pl.col("dep_known_at") <= known_by)
    joined = keyed.join(outcomes, on=FLIGHT_KEY, how="left")
    arrived = pl.col("arr_delay").is_not_null() & pl.col("arrived_at").is_not_null() & (pl.col("arrived_at") <= known_by)
    unlabelled = pl.col("dep_known_at").is_not_null() & pl.col("arr_delay").is_null()
    early = arrived & (pl.col("arrived_at") <= pl.col("request_time"))
    flags = joined.select(arrived.alias("a"), unlabelled.alias("u"), early.alias("e"))
    labelled = joined.filter(arrived & ~early).with_columns((pl.col("arr_delay") > LATE_THRESHOLD_MINUTES).alias(LABEL))
    counts = OutcomeCounts(
        predictions=predictions.height, without_outcome_key=predictions.height - keyed.height,
        pending=int((~flags["a"] & ~flags["u"]).sum()), unlabelled=int(flags["u"].sum()),
        known_before_request=int(flags["e"].sum()), labelled=labelled.height,
    )
    return labelled, counts


def judge_outcomes(
    labelled: pl.DataFrame, counts: OutcomeCounts, model: RegisteredModel, service: FeatureService,
    thresholds: OutcomeThresholds = OUTCOME_THRESHOLDS, *, min_outcomes: int = MIN_OUTCOMES,
) -> OutcomeReport:
    """A day's labelled predictions of one model version against that version's holdout."""
    holdout = model.card.holdout
    rows = labelled.filter((pl.col("model_name") == model.name) & (pl.col("model_version") == model.version))
    if rows.height < min_outcomes:
        return OutcomeReport(model.name, model.version, counts, holdout, None, (), Severity.PASS)
    day = classifier_metrics(rows[LABEL].to_numpy(), rows[SCORE].to_numpy())
    vectors = decode_vectors(rows["features_json"], service_schema(service)).with_columns(rows[LABEL], rows[SCORE])
    reference = reference_from_record(model.reference)
    drifts = tuple(concept_drift(reference, error_at_reference(vectors, reference, label=LABEL, score=SCORE)))
    verdicts = [
        judge("log loss above holdout", day.log_loss - holdout.log_loss, thresholds.log_loss_excess_warn,
              thresholds.log_loss_excess_fail),
        judge("AUC below holdout", holdout.auc - day.auc if math.isfinite(day.auc) else None, thresholds.auc_drop_warn,
              thresholds.auc_drop_fail),
        judge("ECE", day.ece, thresholds.ece_warn, thresholds.ece_fail),
        *(judge(f"concept drift of {d.feature} (worst bin {d.worst_bin})", d.statistic, thresholds.concept_warn,
                thresholds.concept_fail) for d in drifts),
    ]
    return OutcomeReport(model.name, model.version, counts, holdout, day, drifts,
                         worst(*(severity for severity, _ in verdicts)),
                         tuple(reason for _, reason in verdicts if reason is not None))


def model_versions(predictions: pl.DataFrame) -> list[tuple[str, int]]:
    """The (model, version) pairs that scored a day's predictions, most predictions first."""
    if predictions.height == 0:
        return []
    counted = predictions.group_by("model_name", "model_version").len().sort("len", "model_version", descending=True)
    return [(row[0], row[1]) for row in counted.select("model_name", "model_version").iter_rows()]


def report_record(report: OutcomeReport) -> dict[str, object]:
    """The report as JSON-able figures for metadata."""
    return json.loads(json.dumps({
        "model": report.model, "model_version": report.model_version, "counts": report.counts.__dict__,
        "day": report.day.as_record() if report.day is not None else None,
        "holdout": {k: v for k, v in report.holdout.as_record().items() if k != "calibration"},
        "concept": [d.__dict__ for d in report.concept], "severity": report.severity.value, "reasons": list(report.reasons),
    }, default=str))


__all__: Sequence[str] = ["OUTCOME_THRESHOLDS", "OutcomeReport", "judge_outcomes", "labelled_predictions", "read_predictions"]


def plot_outcomes(report: OutcomeReport, path: Path, *, title: str) -> Path:
    """Two panels: the reliability diagram of the day beside the holdout's, and each feature's
    concept-drift statistic against the warn and fail thresholds."""
    from feature_pipelines.monitoring.plots import SEVERITY_COLOURS, _new_figure, _save  # the house's figure helpers

    figure = _new_figure(9.0, 3.4)
    reliability, bars = figure.subplots(1, 2)
    reliability.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle="--")
    for metrics, colour, name in ((report.holdout, "#4878a8", "holdout"), (report.day, "#e07b39", "this day")):
        if metrics is not None:
            reliability.plot([b.mean_score for b in metrics.calibration], [b.positive_rate for b in metrics.calibration],
                             marker="o", color=colour, label=f"{name} (n={metrics.rows}, AUC {metrics.auc:.3f})")
    reliability.set_xlabel("mean score", fontsize=8)
    reliability.set_ylabel("observed late rate", fontsize=8)
    reliability.set_title(title, fontsize=9)
    reliability.legend(fontsize=7, loc="upper left")
    thresholds = OUTCOME_THRESHOLDS
    names = [d.feature for d in report.concept]
    values = [d.statistic if math.isfinite(d.statistic) else 0.0 for d in report.concept]
    colours = [SEVERITY_COLOURS[judge("c", v, thresholds.concept_warn, thresholds.concept_fail)[0]] for v in values]
    bars.barh(range(len(names)), values, color=colours)
    bars.set_yticks(range(len(names)), names, fontsize=7)
    for level in (thresholds.concept_warn, thresholds.concept_fail):
        bars.axvline(level, color="black", linewidth=0.8, linestyle=":")
    bars.set_xlabel("concept drift: mean squared z of error by bin (about 1 = unchanged)", fontsize=8)
    if not names:
        bars.text(0.5, 0.5, "no outcomes known yet", ha="center", va="center", transform=bars.transAxes)
    return _save(figure, path)
