"""Scale-out: one synthetic day's entity buckets as Dagster steps, 1 process against 2, and the raw polars floor.

Synthetic events (1M entities over 8 days by default, so the last day reads a full 7-day history)
are generated into a Delta table, untimed. Then the last day is computed four ways, each timed
on the wall clock:

1. `synthetic_scale_job` with the multiprocess executor at max_concurrent=1 (every step in its
   own process, one at a time) and 2. at max_concurrent=2 (two bucket steps at once): the
   speed-up is (1) / (2). Each step's process peak memory is read from its output metadata.
3. the same buckets in this process without Dagster (`chunked.snapshot_partition`): what the
   run costs on top of the computation, and the reference the written partition must equal.
4. the raw floor: the same day-end features as one plain polars lazy `group_by` over the same
   pruned scan (no exact sums, no snapshot grid, no writes), as in bench_scale.

Run: python -m benchmarks.bench_scale_out [--events 10000000] [--entities 1000000] [--days 8]
     [--buckets 4] [--out benchmarks/results/scale_out.json]
"""

import os
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

from benchmarks.bench_scale import raw_day_end
from benchmarks.harness import Stopwatch, machine, report_parser, write_report


def _run_job(lake: str, home: str, day: str, *, max_concurrent: int, buckets: int) -> dict[str, Any]:
    """One run of the job; its wall seconds and, per bucket step, duration and process peak."""
    from dagster import DagsterEventType, DagsterInstance, build_reconstructable_job, execute_job

    from feature_pipelines.orchestration import scale_out

    job = build_reconstructable_job(
        scale_out.__name__, scale_out.scale_out_job.__name__, reconstructable_kwargs={"lake_root": lake}
    )
    Path(home).mkdir(parents=True, exist_ok=True)
    with DagsterInstance.local_temp(tempdir=home) as instance, Stopwatch() as watch:
        result = execute_job(
            job, instance=instance, tags={"dagster/partition": day}, raise_on_error=True,
            # The event log stays in the instance; the console gets the figures, not Dagster's DEBUG lines.
            run_config={**scale_out.scale_run_config(max_concurrent=max_concurrent, buckets=buckets),
                        "loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        )  # fmt: skip
        events = list(result.all_events)
    steps: dict[str, dict[str, Any]] = {}
    for event in events:
        key = event.step_key or ""
        if event.event_type is DagsterEventType.STEP_SUCCESS:
            steps.setdefault(key, {})["seconds"] = event.event_specific_data.duration_ms / 1000
        elif event.event_type is DagsterEventType.STEP_OUTPUT and "compute_bucket" in key:
            metadata = event.event_specific_data.metadata
            steps.setdefault(key, {}).update({name: value.value for name, value in metadata.items()})
    return {"max_concurrent": max_concurrent, "wall_seconds": watch.seconds, "steps": steps}


def _raw_day_end(lake: str, end: Any) -> float:
    """The floor (bench_scale's raw baseline) over the same table, timed."""
    from feature_pipelines.offline.delta_store import DeltaStore
    from feature_pipelines.sources.synthetic import SYNTHETIC_TABLE

    scan = DeltaStore(lake).scan(SYNTHETIC_TABLE)
    with Stopwatch() as watch:
        raw_day_end(scan, end)
    return watch.seconds


def _one_process(lake: str, start: Any, end: Any, buckets: int) -> tuple[float, Any]:
    """The same buckets, one after the other in this process, without Dagster or staging."""
    from feature_pipelines.compute.chunked import snapshot_partition
    from feature_pipelines.offline.delta_store import DeltaStore
    from feature_pipelines.sources.synthetic import SYNTHETIC_TABLE, synthetic_view

    with Stopwatch() as watch:
        rows = snapshot_partition(DeltaStore(lake).scan(SYNTHETIC_TABLE), synthetic_view(), start=start, end=end, buckets=buckets)
    return watch.seconds, rows


def _bucket_summary(run: dict[str, Any]) -> dict[str, Any]:
    buckets = [step for key, step in run["steps"].items() if "compute_bucket" in key]
    return {
        "bucket_steps": len(buckets),
        "bucket_step_seconds_max": max(step["seconds"] for step in buckets),
        "bucket_compute_seconds_sum": sum(step["compute_seconds"] for step in buckets),
        "bucket_peak_rss_mib_max": max((step.get("process_peak_rss_mib") or 0.0) for step in buckets),
    }


def main() -> None:
    parser = report_parser(__doc__.splitlines()[0], Path("benchmarks/results/scale_out.json"))
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--entities", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--buckets", type=int, default=4, help="bucket steps of the day (even, for 2 processes)")
    parser.add_argument("--tmp", default=None, help="where the temporary lake goes (default: the system tmp)")
    args = parser.parse_args()

    import polars as pl

    from feature_pipelines.compute.chunked import plan_partition
    from feature_pipelines.names import EVENT_TIMESTAMP
    from feature_pipelines.offline.delta_store import DeltaStore, TimeSlice
    from feature_pipelines.sources.synthetic import SYNTHETIC_TABLE, SyntheticEvents, synthetic_view, write_events

    spec = SyntheticEvents(events=args.events, entities=args.entities, days=args.days, seed=args.seed)
    view = synthetic_view()
    start, end = spec.end - timedelta(days=1), spec.end
    day = start.date().isoformat()
    with tempfile.TemporaryDirectory(prefix="bench_scale_out_", dir=args.tmp) as tmp:
        lake = f"{tmp}/lake"
        store = DeltaStore(lake)
        with Stopwatch() as generating:
            write_events(store, spec, chunk_rows=2_000_000)
        history = plan_partition(store.scan(SYNTHETIC_TABLE), view, start=start, end=end, buckets=args.buckets).events
        runs = [_run_job(lake, f"{tmp}/home{n}", day, max_concurrent=n, buckets=args.buckets) for n in (1, 2)]
        written = store.read(view.name, time_slice=TimeSlice(EVENT_TIMESTAMP, start, end, closed="right"))
        one_process_seconds, reference = _one_process(lake, start, end, args.buckets)
        raw_seconds = _raw_day_end(lake, end)
    if not written.equals(reference):
        raise AssertionError("bench_scale_out: the partition the job wrote differs from the one-process computation")
    one, two = runs
    summary = {
        "history_events": history,
        "rows": written.height,
        "wall_seconds_1_process": one["wall_seconds"],
        "wall_seconds_2_processes": two["wall_seconds"],
        "speedup_2_over_1": one["wall_seconds"] / two["wall_seconds"],
        "one_process_no_dagster_seconds": one_process_seconds,
        "raw_group_by_seconds": raw_seconds,
        "ratio_2_processes_to_raw": two["wall_seconds"] / raw_seconds,
        "ratio_one_process_to_raw": one_process_seconds / raw_seconds,
        **{f"1_process_{k}": v for k, v in _bucket_summary(one).items()},
        **{f"2_processes_{k}": v for k, v in _bucket_summary(two).items()},
    }
    bucket_events = history / args.buckets
    summary["bytes_per_history_event_of_a_bucket_step"] = summary["2_processes_bucket_peak_rss_mib_max"] * 2**20 / bucket_events
    report = {
        "events": args.events, "entities": args.entities, "days": args.days, "buckets": args.buckets, "partition": day,
        "generate_seconds": generating.seconds, "summary": summary, "runs": runs,
        "machine": machine({"POLARS_MAX_THREADS": os.environ.get("POLARS_MAX_THREADS")}),
    }  # fmt: skip
    write_report(args.out, report)
    for name, value in summary.items():
        print(f"{name:>45}: {value:,.3f}" if isinstance(value, float) else f"{name:>45}: {value:,}")
    print(f"written equals one-process: True; polars {pl.__version__}; report: {args.out}")


if __name__ == "__main__":
    os.environ.setdefault("POLARS_MAX_THREADS", "2")
    main()
