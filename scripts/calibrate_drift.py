"""Calibrate each feature's drift thresholds on the real 2013 data (the numbers in the catalog).

Every view is computed over all of 2013 with the production computation; then for every day d:
- partition drift: the day's snapshots against the day before (what `feature_partition_drift` does);
- reference drift: the day's snapshots against the 28 days before it (what `serving_drift` does
  with the training window, approximated by snapshot rows instead of per-flight rows).
It prints per feature the PSI and KS quantiles of both comparisons over the year. A clean year
must not fail: fail thresholds sit above the year's maximum, warn thresholds near its 99th
percentile; a feature whose day-to-day PSI is large by nature (delays and weather follow the
weather) opts out of partition drift instead of alarming every week.

    .venv/bin/python scripts/calibrate_drift.py
"""

from __future__ import annotations

import json
import warnings
from datetime import datetime, timedelta, timezone

import polars as pl

from feature_pipelines.compute.snapshots import EVENT_TIMESTAMP, snapshot_features
from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.monitoring.drift import drift_report
from feature_pipelines.sources import nycflights

START = datetime(2013, 1, 1, tzinfo=timezone.utc)
END = datetime(2014, 1, 1, tzinfo=timezone.utc)
DAY = timedelta(days=1)
REFERENCE = timedelta(days=28)


def quantiles(values: list[float]) -> dict[str, float]:
    series = pl.Series(values, dtype=pl.Float64).drop_nans().drop_nulls()
    return {"p50": round(series.median(), 3), "p95": round(series.quantile(0.95), 3), "p99": round(series.quantile(0.99), 3), "max": round(series.max(), 3)}


def main() -> None:
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    events = {"raw_flights": nycflights.flights(), "raw_weather": nycflights.weather()}
    results = {}
    for name, view in FEATURE_VIEWS.items():
        table = snapshot_features(events[view.source.asset], view, start=START, end=END)
        thresholds = {f.name: f.monitoring for f in view.features}
        figures: dict[str, dict[str, list[float]]] = {f: {"day_psi": [], "day_ks": [], "ref_psi": [], "ref_ks": []} for f in thresholds}

        def rows(low: datetime, high: datetime) -> pl.DataFrame:
            return table.filter((pl.col(EVENT_TIMESTAMP) > low) & (pl.col(EVENT_TIMESTAMP) <= high)).select(list(thresholds))

        day = START + REFERENCE
        while day < END:
            current = rows(day, day + DAY)
            for prefix, reference in (("day", rows(day - DAY, day)), ("ref", rows(day - REFERENCE, day))):
                for drift in drift_report(reference, current, thresholds):
                    figures[drift.feature][f"{prefix}_psi"].append(drift.psi)
                    figures[drift.feature][f"{prefix}_ks"].append(drift.ks_statistic if drift.ks_statistic is not None else float("nan"))
            day += DAY
        for feature, series in figures.items():
            results[f"{name}:{feature}"] = {key: quantiles(values) for key, values in series.items()}
            print(f"{name}:{feature}", json.dumps(results[f"{name}:{feature}"]), flush=True)


if __name__ == "__main__":
    main()
