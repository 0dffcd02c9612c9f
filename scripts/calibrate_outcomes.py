"""Calibrate the outcome monitor's thresholds on the real 2013 data (the numbers in monitoring/outcomes.py).

Every view is computed over all of 2013 with the production computation and written to a
temporary lake; the year's labels are joined to flight_delay_v1 exactly as the training set is
(`get_historical_features`, point-in-time, each view's TTL). Then, as the demo does, a model is
trained on two weeks (the 14 days before each month, with `train_model`: time-ordered holdout)
and every day of the following month is judged against its holdout, as the outcome asset judges
a day: log loss and AUC against the holdout's, ECE, and the worst concept-drift statistic over
the features. A clean year must not fail: fail thresholds sit above the year's maximum, warn
thresholds near its 99th percentile.

    .venv/bin/python scripts/calibrate_outcomes.py
"""

from __future__ import annotations

import math
import tempfile
import time
import warnings
from datetime import UTC, datetime, timedelta

import polars as pl

from feature_pipelines.compute.snapshots import snapshot_features
from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.models.catalog import FLIGHT_DELAY_MODEL
from feature_pipelines.models.metrics import classifier_metrics
from feature_pipelines.models.training import SCORE, score, train_model
from feature_pipelines.monitoring.concept_drift import concept_drift, error_at_reference, error_by_bin
from feature_pipelines.names import CREATED_TIMESTAMP
from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.offline.historical import get_historical_features
from feature_pipelines.sources import nycflights
from feature_pipelines.training.frames import TrainingFrame
from feature_pipelines.training.labels import flight_delay_labels
from feature_pipelines.training.spec import PREDICTION_TIMESTAMP

START = datetime(2013, 1, 1, tzinfo=UTC)
END = datetime(2014, 1, 1, tzinfo=UTC)
TRAIN_DAYS = timedelta(days=14)
SPEC = FLIGHT_DELAY_MODEL
SERVICE = SPEC.service
LABEL = SPEC.training.label


def quantiles(values: list[float]) -> dict[str, float]:
    series = pl.Series(values, dtype=pl.Float64).drop_nans().drop_nulls()
    return {"p50": round(series.median(), 3), "p99": round(series.quantile(0.99), 3), "max": round(series.max(), 3)}


def year_frame(lake: DeltaStore) -> pl.DataFrame:
    events = {"raw_flights": nycflights.flights(), "raw_weather": nycflights.weather()}
    for name, raw in events.items():  # a streaming view is read at each row's instant from its raw table
        lake.write(name, raw, time_slice=None)
    for name, view in FEATURE_VIEWS.items():
        table = snapshot_features(events[view.source.asset], view, start=START - timedelta(days=8), end=END)
        lake.write(name, table.with_columns(pl.lit(END).dt.cast_time_unit("us").alias(CREATED_TIMESTAMP)), time_slice=None)
    labels = flight_delay_labels(events["raw_flights"], lead_time=SPEC.training.lead_time)
    return get_historical_features(lake, FEATURE_VIEWS, labels, feature_service=SERVICE,
                                   timestamp_column=PREDICTION_TIMESTAMP).frame


def main() -> None:
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as root:
        frame = year_frame(DeltaStore(root))
    print(f"year frame: {frame.height} labelled flights in {time.perf_counter() - began:.0f} s")
    figures: dict[str, list[float]] = {"log_loss_excess": [], "auc_drop": [], "ece": [], "concept_max": []}
    month = datetime(2013, 2, 1, tzinfo=UTC)
    while month < END:
        following = datetime(month.year + month.month // 12, month.month % 12 + 1, 1, tzinfo=UTC)
        past = frame.filter(pl.col(PREDICTION_TIMESTAMP).is_between(month - TRAIN_DAYS, month, closed="left"))
        trained = train_model(TrainingFrame(past, SERVICE, table_version=0, statistics=None), SPEC)
        holdout = trained.card.holdout
        reference = error_by_bin(trained.holdout, SERVICE.column_names, label=LABEL, score=SCORE)
        rows = frame.filter(pl.col(PREDICTION_TIMESTAMP).is_between(month, following, closed="left"))
        rows = rows.with_columns(pl.Series(SCORE, score(trained.estimator, rows, SERVICE)))
        for (_,), day in rows.group_by(pl.col(PREDICTION_TIMESTAMP).dt.date(), maintain_order=True):
            metrics = classifier_metrics(day[LABEL].to_numpy(), day[SCORE].to_numpy())
            drifts = concept_drift(reference, error_at_reference(day, reference, label=LABEL, score=SCORE))
            figures["log_loss_excess"].append(metrics.log_loss - holdout.log_loss)
            figures["auc_drop"].append(holdout.auc - metrics.auc)
            figures["ece"].append(metrics.ece)
            figures["concept_max"].append(max((d.statistic for d in drifts if math.isfinite(d.statistic)), default=math.nan))
        month = following
    for name, values in figures.items():
        print(f"{name:16s} {quantiles(values)}  ({len(values)} days)")
    print(f"done in {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
