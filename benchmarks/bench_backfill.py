"""Full-2013 backfill of every raw table and feature view: Dagster run vs the same compute without Dagster.

Each case runs in its own subprocess (fresh lake, fresh DAGSTER_HOME) so peak memory is its own.
Run: python -m benchmarks.bench_backfill [--out PATH] [--days N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

from benchmarks.harness import Stopwatch, peak_rss_mib, write_report

START = datetime(2013, 1, 1, tzinfo=timezone.utc)


def _dagster_case(days: int) -> dict:
    from dagster import DagsterInstance

    from feature_pipelines.definitions import build_definitions
    from feature_pipelines.orchestration.runs import materialize_window
    from feature_pipelines.settings import load_settings

    settings = load_settings()
    defs = build_definitions(settings)
    instance = DagsterInstance.get()
    writes = _time_event_writes(instance)
    # The clock a day past the range, as on the morning after: the last day's labels need its next day's hours.
    with Stopwatch() as watch:
        runs = materialize_window(defs, settings, START, START + timedelta(days=days), instance=instance,
                                  raise_on_error=False, now=START + timedelta(days=days + 1))
    wall = watch.seconds
    per_run = []
    for run in runs:
        steps = instance.get_run_step_stats(run.result.run_id)
        stats = instance.get_run_stats(run.result.run_id)
        events = instance.all_logs(run.result.run_id)
        started = next((e.timestamp for e in events if e.dagster_event and e.dagster_event.is_job_event), events[0].timestamp)
        inner: dict[str, dict[str, float]] = {}
        for event in run.result.get_asset_materialization_events():
            metadata = event.materialization.metadata
            if "compute_seconds" in metadata and event.asset_key.to_user_string() not in inner:
                inner[event.asset_key.to_user_string()] = {
                    "compute_seconds": metadata["compute_seconds"].value,
                    "quality_check_seconds": metadata["quality_check_seconds"].value,
                }
        per_run.append(
            {
                "job": run.job_name,
                "partitions": f"{run.first_partition}..{run.last_partition}",
                "run_seconds": (stats.end_time or 0) - (stats.start_time or stats.launch_time or 0),
                # From the run's first event to its start: the planned events Dagster records at creation.
                "creation_seconds": round(started - events[0].timestamp, 3),
                "events": dict(Counter(e.dagster_event.event_type_value for e in events if e.dagster_event)),
                "step_seconds": {s.step_key: round(s.end_time - s.start_time, 3) for s in steps},
                "materializations": stats.materializations,
                "inside_steps": inner,
                "success": run.result.success,
                "failed_checks": sorted(
                    {f"{c.asset_key.to_user_string()}:{c.check_name}" for c in run.result.get_asset_check_evaluations() if not c.passed}
                ),
            }
        )
    computed = sum(v for r in per_run for inner in r["inside_steps"].values() for v in inner.values())
    split = {
        "run_creation_seconds": round(sum(r["creation_seconds"] for r in per_run), 2),
        "event_write_seconds": round(sum(seconds for _, seconds in writes.values()), 2),
        "event_writes_by_type": {kind: {"count": n, "seconds": round(seconds, 2)} for kind, (n, seconds) in writes.items()},
        "computation_seconds": round(computed, 2),  # the raw and feature steps' own compute and check time
    }
    return {"wall_seconds": wall, "runs": per_run, "split": split, "success": all(r.result.success for r in runs),
            **_gate_figures(settings)}


def _time_event_writes(instance: object) -> dict[str, list]:
    """Time every event the instance stores, by type: Dagster's own bookkeeping cost. Wraps this
    instance's event log storage object only (a measurement; nothing else changes). A batch's time
    is shared out over its events."""
    import time

    storage = instance.event_log_storage  # type: ignore[attr-defined]
    store_event, store_event_batch = storage.store_event, storage.store_event_batch
    writes: dict[str, list] = {}
    in_batch = [False]  # a batch the storage stores event by event is timed once, as the batch

    def count(events: list, seconds: float) -> None:
        for event in events:
            kind = event.dagster_event.event_type_value if event.dagster_event else "log"
            entry = writes.setdefault(kind, [0, 0.0])
            entry[0] += 1
            entry[1] += seconds / len(events)

    def timed(event: object) -> None:
        if in_batch[0]:
            store_event(event)
            return
        began = time.perf_counter()
        store_event(event)
        count([event], time.perf_counter() - began)

    def timed_batch(events: list) -> None:
        began = time.perf_counter()
        in_batch[0] = True
        try:
            store_event_batch(events)
        finally:
            in_batch[0] = False
        count(events, time.perf_counter() - began)

    storage.store_event = timed
    storage.store_event_batch = timed_batch
    return writes


def _gate_figures(settings) -> dict:  # noqa: ANN001 (Settings, imported lazily in the child)
    """What the gates did over the range: the training set's days, and the quarantine per table and rule."""
    import polars as pl

    from feature_pipelines.orchestration.resources_by_env import lake_for
    from feature_pipelines.quality.quarantine import Quarantine
    from feature_pipelines.training.spec import FLIGHT_DELAY_TRAINING_SET

    store = lake_for(settings).store()
    training = store.read(FLIGHT_DELAY_TRAINING_SET.name) if store.exists(FLIGHT_DELAY_TRAINING_SET.name) else None
    days = training["scheduled_departure_at"].dt.date().n_unique() if training is not None else 0
    tables = ["raw_flights", "raw_weather", "origin_weather", "carrier_delay_stats", "route_delay_stats",
              "aircraft_utilisation", "flight_delay_labels", FLIGHT_DELAY_TRAINING_SET.name]
    summary = Quarantine(store).summary(tables)
    per_rule = (summary.group_by("table", "quarantine_rule", "quarantine_action")
                .agg(pl.col("rows").sum(), pl.len().alias("partitions")).sort("table", "quarantine_rule"))
    return {
        "training_set_rows": training.height if training is not None else 0,
        "training_set_days": days,
        "quarantine": per_rule.to_dicts(),
        "quarantined_examples": summary.select("table", "quarantine_partition", "quarantine_rule", "reason").head(10).to_dicts(),
    }


def _raw_case(days: int) -> dict:
    """The same reads, computations and Delta writes, called directly: the compute floor."""
    import polars as pl

    from feature_pipelines.compute.snapshots import snapshot_features
    from feature_pipelines.features.catalog import FEATURE_VIEWS
    from feature_pipelines.names import CREATED_TIMESTAMP
    from feature_pipelines.offline.delta_store import DeltaStore
    from feature_pipelines.orchestration.raw_assets import RAW_VALIDATORS
    from feature_pipelines.settings import load_settings
    from feature_pipelines.sources.landing import LandingZone, land_nycflights
    from feature_pipelines.timeutil import PartitionWindow
    from feature_pipelines.sources.raw_tables import RAW_TABLES

    settings = load_settings()
    zone = LandingZone(settings.landing_root)
    land_nycflights(zone)
    store = DeltaStore(settings.lake_root)
    end = START + timedelta(days=days)
    with Stopwatch() as watch:
        for table in RAW_TABLES:
            frame = zone.scan(table.landing_table)
            if table.time_column:
                frame = frame.filter(pl.col(table.time_column) >= START, pl.col(table.time_column) < end)
            store.write(table.name, frame.collect(), time_slice=None)
        for view in FEATURE_VIEWS.values():
            events = store.read(view.source.asset)
            features = snapshot_features(events, view, start=START, end=end)
            created = pl.lit(datetime.now(timezone.utc)).dt.cast_time_unit("us").alias(CREATED_TIMESTAMP)
            store.write(view.name, features.with_columns(created), time_slice=None)
    # The raw gates' own work, without Dagster: the same validation functions over the same hours
    # (the Dagster run also writes quarantine and ledger rows, builds labels and a training set).
    hours = [PartitionWindow(f"{hour:%Y-%m-%d-%H:%M}", hour, hour + timedelta(hours=1))
             for hour in (START + timedelta(hours=h) for h in range(days * 24))]
    with Stopwatch() as gates:
        for name, validate in RAW_VALIDATORS.items():
            validate(store.read(name), partitions=hours)
    return {"wall_seconds": watch.seconds, "raw_gates_seconds": gates.seconds}


def _child(case: str, days: int) -> None:
    result = {"dagster": _dagster_case, "raw_compute": _raw_case}[case](days)
    result["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(result))


def _run_case(case: str, days: int) -> dict:
    from feature_pipelines.online.local_server import LocalRedisServer

    with tempfile.TemporaryDirectory() as tmp, LocalRedisServer() as redis_server:
        env = {
            **os.environ,
            "FEATURE_PIPELINES_REDIS_URL": redis_server.url,  # publish assets run in the backfill too
            "DAGSTER_HOME": tmp,
            "FEATURE_PIPELINES_LAKE_ROOT": f"{tmp}/lake",
            "FEATURE_PIPELINES_LANDING_ROOT": f"{tmp}/landing",
        }
        env.pop("FEATURE_PIPELINES_REPLAY_START", None)
        # The demo's instance: its event log storage is part of what is measured.
        shutil.copyfile(Path(__file__).parent.parent / "deploy" / "dagster.local.yaml", Path(tmp, "dagster.yaml"))
        out = subprocess.run(
            [sys.executable, "-W", "ignore", "-m", "benchmarks.bench_backfill", "--child", case, "--days", str(days)],
            env=env, capture_output=True, text=True, check=True,
        )
        return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="benchmarks/results/backfill.json")
    parser.add_argument("--days", type=int, default=int(os.environ.get("BENCH_BACKFILL_DAYS", "365")))
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.days)
        return
    raw = _run_case("raw_compute", args.days)
    dagster = _run_case("dagster", args.days)
    step_total = sum(sum(r["step_seconds"].values()) for r in dagster["runs"])
    report = {
        "days": args.days,
        "raw_compute": raw,
        "dagster": dagster,
        "dagster_step_seconds": step_total,
        "orchestration_overhead_seconds": dagster["wall_seconds"] - step_total,
        "ratio_dagster_to_raw_time": dagster["wall_seconds"] / raw["wall_seconds"],
        "ratio_dagster_to_raw_memory": dagster["peak_rss_mib"] / raw["peak_rss_mib"],
        # Against the same computation plus the raw gates' validation, both without Dagster.
        "ratio_dagster_to_raw_with_gates_time": dagster["wall_seconds"] / (raw["wall_seconds"] + raw["raw_gates_seconds"]),
        # Dagster's own bookkeeping against the computation inside its steps (the bar: at most 1).
        "ratio_bookkeeping_to_computation": (dagster["split"]["run_creation_seconds"] + dagster["split"]["event_write_seconds"])
        / dagster["split"]["computation_seconds"],
    }
    write_report(Path(args.out), report)
    print(f"backfill of {args.days} days: raw compute {raw['wall_seconds']:.1f} s ({raw['peak_rss_mib']:.0f} MiB); "
          f"dagster {dagster['wall_seconds']:.1f} s ({dagster['peak_rss_mib']:.0f} MiB), of which steps "
          f"{step_total:.1f} s and orchestration {report['orchestration_overhead_seconds']:.1f} s; "
          f"ratio {report['ratio_dagster_to_raw_time']:.1f}x time, {report['ratio_dagster_to_raw_memory']:.2f}x memory")
    print(f"  raw gates without Dagster (the same validation functions over the same hours): {raw['raw_gates_seconds']:.1f} s; "
          f"dagster against compute and gates: {report['ratio_dagster_to_raw_with_gates_time']:.1f}x; "
          f"bookkeeping (run creation + event writes) against computation: {report['ratio_bookkeeping_to_computation']:.2f}x")
    split = dagster["split"]
    counts = ", ".join(f"{kind} {entry['count']}" for kind, entry in split["event_writes_by_type"].items() if entry["count"] > 20)
    print(f"  split: run creation {split['run_creation_seconds']:.1f} s, event writes {split['event_write_seconds']:.1f} s "
          f"({counts}), "
          f"computation inside steps {split['computation_seconds']:.1f} s")
    print(f"  training set: {dagster['training_set_rows']} rows over {dagster['training_set_days']} days; "
          f"quarantine per table and rule: {dagster['quarantine']}")
    for run in dagster["runs"]:
        print(f"  {run['job']} {run['partitions']}: run {run['run_seconds']:.1f} s, steps {run['step_seconds']}, "
              f"{run['materializations']} materializations, inside steps {run['inside_steps']}, "
              f"success {run['success']}, failed checks {run['failed_checks']}")


if __name__ == "__main__":
    main()
