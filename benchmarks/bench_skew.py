"""How long a day's skew job takes: 100,000 logged requests x 10 features, against a raw baseline.

Data: the training set's ten features (four views: route, carrier, origin, aircraft), each view a
Delta table of hourly snapshots over two days with random values, and a request log of one day:
100,000 requests, each one entity row (a flight: origin, dest, carrier, tailnum) served all ten
features, i.e. 1,000,000 log rows. 2% of the served values are corrupted so the comparison does
real work on both branches.

Measured in one run:
- raw baseline: for each view, polars `join_asof` of the logged entity rows onto the table (by
  entity, backward on time), unpivot, and an equality test per value -- the least a skew check
  must do;
- `compare_served_to_offline`: the project's comparison (point-in-time join with TTL through the
  training path, the served snapshot's exact lookup, lag/stale/null classification, summaries);
- the `serving_skew` asset in a real in-process Dagster run of the day's partition (reads the
  log from Delta, compares, writes the figures, draws the plot, writes the report).

    .venv/bin/python -m benchmarks.bench_skew [--requests 100000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl
from dagster import DagsterInstance, materialize

from benchmarks.harness import Stopwatch, report_parser, write_report
from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.features.references import resolve_references
from feature_pipelines.monitoring.skew import compare_served_to_offline
from feature_pipelines.names import EVENT_TIMESTAMP, FEATURE_LOG_TABLE
from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.orchestration.monitoring_assets import SKEW_CHECK, build_skew_asset
from feature_pipelines.resources import LakeResource
from feature_pipelines.serving.app import key_columns_of
from feature_pipelines.serving.request_log import log_schema
from feature_pipelines.settings import ReplayClock, Settings
from feature_pipelines.training.spec import FLIGHT_DELAY_TRAINING_SET

DAY = datetime(2013, 3, 1, tzinfo=timezone.utc)
OUT = Path(__file__).resolve().parent / "results" / "skew.json"
ENTITIES = {"route_delay_stats": 200, "carrier_delay_stats": 16, "origin_weather": 3, "aircraft_utilisation": 3000}


def entity_frame(view: str, n: int) -> pl.DataFrame:
    if view == "route_delay_stats":
        return pl.DataFrame({"origin": [["EWR", "JFK", "LGA"][i % 3] for i in range(n)], "dest": [f"D{i:03d}" for i in range(n)]})
    if view == "carrier_delay_stats":
        return pl.DataFrame({"carrier": [f"C{i:02d}" for i in range(n)]})
    if view == "origin_weather":
        return pl.DataFrame({"origin": ["EWR", "JFK", "LGA"][:n]})
    return pl.DataFrame({"tailnum": [f"N{i:05d}" for i in range(n)]})


def build_tables(store: DeltaStore, rng: np.random.Generator) -> None:
    stamps = pl.datetime_range(DAY - timedelta(days=1), DAY + timedelta(days=1), "1h", time_zone="UTC", eager=True).dt.cast_time_unit("us")
    for name, n in ENTITIES.items():
        view = FEATURE_VIEWS[name]
        grid = entity_frame(name, n).join(pl.DataFrame({EVENT_TIMESTAMP: stamps}), how="cross")
        columns = []
        for feature in view.features:
            values = rng.normal(10, 5, grid.height)
            series = pl.Series(feature.name, values)
            columns.append(series.round().cast(pl.Int64) if feature.dtype == "int64" else series)
        table = grid.with_columns(columns).with_columns(pl.col(EVENT_TIMESTAMP).alias("created_timestamp"))
        store.write(name, table, time_slice=None)


def build_log(store: DeltaStore, requests: int, rng: np.random.Generator) -> pl.DataFrame:
    """Entity rows at random instants of DAY with their correct point-in-time values, 2% corrupted."""
    keys = key_columns_of(list(FEATURE_VIEWS.values()))
    n_routes, n_aircraft = ENTITIES["route_delay_stats"], ENTITIES["aircraft_utilisation"]
    routes = entity_frame("route_delay_stats", n_routes)
    route_index = rng.integers(0, n_routes, requests)
    rows = pl.DataFrame(
        {
            "request_id": [f"r{i}" for i in range(requests)],
            "entity_index": [0] * requests,
            "request_time": pl.Series([DAY + timedelta(microseconds=int(x)) for x in rng.integers(0, 86_400_000_000, requests)]),
            "origin": routes["origin"].gather(route_index),
            "dest": routes["dest"].gather(route_index),
            "carrier": [f"C{i:02d}" for i in rng.integers(0, ENTITIES["carrier_delay_stats"], requests)],
            "tailnum": [f"N{i:05d}" for i in rng.integers(0, n_aircraft, requests)],
        }
    ).with_columns(pl.col("request_time").dt.cast_time_unit("us"))
    frames = []
    for request in resolve_references(list(FLIGHT_DELAY_TRAINING_SET.features), FEATURE_VIEWS):
        view = request.view
        table = store.read(view.name).select(*view.entity_keys, EVENT_TIMESTAMP, *request.features).sort(EVENT_TIMESTAMP)
        joined = rows.sort("request_time").join_asof(table, left_on="request_time", right_on=EVENT_TIMESTAMP, by=list(view.entity_keys), strategy="backward")
        for name in request.features:
            corrupt = rng.random(joined.height) < 0.02
            values = joined[name].cast(pl.Float64).to_numpy().copy()
            values[corrupt] += 1.0
            frames.append(
                joined.select("request_id", "entity_index", "request_time", *[k for k in keys], EVENT_TIMESTAMP).with_columns(
                    pl.lit(view.name).alias("view"), pl.lit(name).alias("feature"), pl.Series("value_float", values),
                )
            )
    long = pl.concat(frames)
    served = long.select(
        "request_id", "request_time", "entity_index", "view",
        pl.lit("{}").alias("entity_key"), *keys,
        "feature",
        pl.col("value_float").cast(pl.String).alias("value_json"),
        "value_float",
        pl.lit("PRESENT").alias("status"),
        pl.col(EVENT_TIMESTAMP).alias("event_timestamp"),
    )
    # Null out the join keys of other views, as the server's log does.
    views_keys = {v.name: set(v.entity_keys) for v in FEATURE_VIEWS.values()}
    served = served.with_columns(
        pl.when(pl.col("view").is_in([v for v, ks in views_keys.items() if key in ks])).then(pl.col(key)).otherwise(None).alias(key)
        for key in keys
    )
    schema = log_schema(keys)
    served = served.select(list(schema)).cast(schema)
    store.append(FEATURE_LOG_TABLE, served)
    return served


def raw_baseline(store: DeltaStore, log: pl.DataFrame) -> float:
    """As-of join per view, unpivot and compare: the floor under any skew check."""
    mismatches = 0
    with Stopwatch() as watch:
        for request in resolve_references(list(FLIGHT_DELAY_TRAINING_SET.features), FEATURE_VIEWS):
            view = request.view
            keys = list(view.entity_keys)
            table = store.read(view.name).select(*keys, EVENT_TIMESTAMP, *request.features).sort(EVENT_TIMESTAMP)
            served = log.filter(pl.col("view") == view.name)
            entities = served.select("request_id", *keys, "request_time").unique("request_id").sort("request_time")
            joined = entities.join_asof(table, left_on="request_time", right_on=EVENT_TIMESTAMP, by=keys, strategy="backward")
            expected = joined.select("request_id", *[pl.col(f).cast(pl.Float64) for f in request.features]).unpivot(
                index="request_id", variable_name="feature", value_name="expected"
            )
            compared = served.join(expected, on=["request_id", "feature"])
            mismatches += compared.filter(pl.col("value_float").ne_missing(pl.col("expected"))).height
    elapsed = watch.seconds
    print(f"raw baseline: {elapsed:.2f} s ({mismatches} mismatches)")
    return elapsed


def main(argv: list[str] | None = None) -> None:
    parser = report_parser(__doc__, OUT, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=100_000)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "lake"
        store = DeltaStore(str(root))
        build_tables(store, rng)
        log = build_log(store, args.requests, rng)
        print(f"log: {log.height:,} rows ({args.requests:,} requests x {len(FLIGHT_DELAY_TRAINING_SET.features)} features)")
        baseline = raw_baseline(store, log)

        with Stopwatch() as watch:
            report = compare_served_to_offline(store, FEATURE_VIEWS, log)
        comparison = watch.seconds
        mismatches = sum(f.mismatches for f in report.features)
        print(f"compare_served_to_offline: {comparison:.2f} s ({mismatches} mismatches, {sum(f.lagged for f in report.features)} lagged)")

        settings = Settings("local", str(root), str(Path(tmp) / "landing"), ReplayClock(timedelta(0)), reports_root=str(Path(tmp) / "reports"))
        asset = build_skew_asset(FEATURE_VIEWS, settings)
        with Stopwatch() as watch:
            result = materialize([asset], partition_key=DAY.strftime("%Y-%m-%d"), resources={"lake": LakeResource(root=str(root))},
                                 instance=DagsterInstance.ephemeral(), raise_on_error=False)
        job = watch.seconds
        check = next(c for c in result.get_asset_check_evaluations() if c.check_name == SKEW_CHECK)
        print(f"serving_skew asset run: {job:.2f} s (check passed={check.passed}: {len(check.metadata['failing_features'].value)} features over tolerance)")
    figures = {
        "requests": args.requests,
        "features": len(FLIGHT_DELAY_TRAINING_SET.features),
        "log_rows": log.height,
        "raw_baseline_s": round(baseline, 3),
        "compare_served_to_offline_s": round(comparison, 3),
        "asset_run_s": round(job, 3),
        "ratio_compare_to_baseline": round(comparison / baseline, 2),
        "ratio_asset_run_to_baseline": round(job / baseline, 2),
        "mismatches_found": mismatches,
    }
    print(json.dumps(figures, indent=2))
    write_report(args.out, figures)


if __name__ == "__main__":
    main()
