"""Feature computation at scale: time and peak memory against the number of events, ours vs raw polars.

For each size: synthetic events (1M entities, 30 days by default) are generated into a Delta table
(timed on their own, not part of the figure); then a full daily backfill of
`synthetic_aircraft_stats` (count, exact mean, p90, rate over 24h and 7d) runs partition by
partition through `compute.chunked` (per-partition history scan, entity hash buckets, values from
`compute.snapshots`) and writes each partition to Delta; then the raw baseline computes the same
day-end features with one plain polars lazy `group_by` over the same pruned scan (no exact sums,
no buckets, no writes). Each step runs in a fresh subprocess so peak memories do not mix; the
peak of every partition is measured by resetting the kernel's high-water mark (/proc/self/clear_refs)
before it.

Run: python -m benchmarks.bench_scale [--sizes 1000000,3000000] [--entities N] [--days N]
     [--max-events-per-bucket N] [--out PATH]
50M events (about 25 minutes on 2 cores):
     python -m benchmarks.bench_scale --sizes 1000000,3000000,10000000,25000000,50000000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from benchmarks.harness import Stopwatch, peak_rss_mib, reset_peak_rss, rss_mib, write_report

GIB = 1024**3
TABLE = "synthetic_flights"


def _reset_peak() -> None:
    """Reset the high-water mark before each partition, so its peak is its own; refuse to report
    per-partition peaks that would silently include the ones before."""
    if not reset_peak_rss():
        raise RuntimeError("/proc/self/clear_refs cannot reset the high-water mark here: per-partition peaks need it")


def _spec(args: argparse.Namespace) -> Any:
    from feature_pipelines.sources.synthetic import SyntheticEvents

    return SyntheticEvents(events=args.events, entities=args.entities, days=args.days, seed=args.seed)


def _generate(args: argparse.Namespace) -> dict[str, Any]:
    from feature_pipelines.offline.delta_store import DeltaStore
    from feature_pipelines.sources.synthetic import write_events

    with Stopwatch() as watch:
        version = write_events(DeltaStore(args.lake), _spec(args), table=TABLE, chunk_rows=args.chunk_rows)
    return {"seconds": watch.seconds, "delta_version": version}


def _per_partition(args: argparse.Namespace, compute: Callable[[Any, Any, Any], dict[str, Any]]) -> dict[str, Any]:
    """Run `compute(events, start, end)` for every daily partition, timing and peaking each."""
    from feature_pipelines.compute.chunked import partition_bounds
    from feature_pipelines.offline.delta_store import DeltaStore
    from feature_pipelines.sources.synthetic import synthetic_view

    spec = _spec(args)
    events = DeltaStore(args.lake).scan(TABLE)
    rss_floor = rss_mib()
    partitions = []
    bounds = list(partition_bounds(synthetic_view(), spec.start, spec.end))
    with Stopwatch() as backfill:
        for start, end in bounds[-args.partitions :] if args.partitions else bounds:
            _reset_peak()
            with Stopwatch() as partition:
                record = compute(events, start, end)
            partitions.append(
                {"partition": start.date().isoformat(), "seconds": partition.seconds, "peak_rss_mib": peak_rss_mib(), **record}
            )
    return {"seconds": backfill.seconds, "rss_after_imports_mib": rss_floor, "partitions": partitions}


def _chunked(args: argparse.Namespace) -> dict[str, Any]:
    import polars as pl

    from feature_pipelines.compute.chunked import iter_bucket_snapshots, plan_partition
    from feature_pipelines.names import EVENT_TIMESTAMP
    from feature_pipelines.offline.delta_store import DeltaStore, TimeSlice
    from feature_pipelines.sources.synthetic import synthetic_view

    view = synthetic_view()
    store = DeltaStore(args.lake)
    kernel_load_seconds = _load_kernels(view)

    def compute(events: pl.LazyFrame, start: Any, end: Any) -> dict[str, Any]:
        with Stopwatch() as computing:
            plan = plan_partition(events, view, start=start, end=end, max_events_per_bucket=args.max_events_per_bucket)
            rows = pl.concat(list(iter_bucket_snapshots(events, view, plan)))
            rows = rows.sort(EVENT_TIMESTAMP, *view.entity_keys)
        with Stopwatch() as writing:
            store.write(view.name, rows, time_slice=TimeSlice(EVENT_TIMESTAMP, start, end, closed="right"))
        return {
            "compute_seconds": computing.seconds,
            "write_seconds": writing.seconds,
            "history_events": plan.events,
            "buckets": plan.buckets,
            "rows": rows.height,
        }

    return {**_per_partition(args, compute), "kernel_load_seconds": kernel_load_seconds}


def _load_kernels(view: Any) -> float:
    """The engine's compiled kernels load from numba's on-disk cache on their first call in a process
    (about 0.4 s, like an import; a first compile after an install takes seconds): done once here on
    a tiny day, and reported on its own, so partitions time the computation alone."""
    from datetime import datetime, timezone

    import polars as pl

    from feature_pipelines.compute.snapshots import snapshot_features
    from feature_pipelines.sources.synthetic import SyntheticEvents, iter_event_chunks

    tiny = SyntheticEvents(events=2_000, entities=50, days=8, start=datetime(2013, 1, 1, tzinfo=timezone.utc))
    with Stopwatch() as loading:
        snapshot_features(pl.concat(list(iter_event_chunks(tiny))), view, start=tiny.start + timedelta(days=7),
                          end=tiny.start + timedelta(days=8))
    return loading.seconds


def raw_day_end(events: Any, end: Any) -> Any:
    """The floor: count, mean, p90 and rate over 24h and 7d at the day's end, as one plain polars
    `group_by` over the scan (no exact sums, no buckets, no writes)."""
    import polars as pl

    from feature_pipelines.sources.synthetic import ENTITY_KEY, FLAG, KNOWN_AT, VALUE

    known_at = pl.col(KNOWN_AT)
    aggregates = []
    for label, window in (("24h", timedelta(days=1)), ("7d", timedelta(days=7))):
        inside = known_at >= end - window
        aggregates += [
            inside.sum().alias(f"count_{label}"),
            pl.col(VALUE).filter(inside).mean().alias(f"mean_{label}"),
            pl.col(VALUE).filter(inside).quantile(0.9, interpolation="linear").alias(f"p90_{label}"),
            pl.col(FLAG).filter(inside).mean().alias(f"rate_{label}"),
        ]
    return (
        events.select(ENTITY_KEY, KNOWN_AT, VALUE, FLAG)
        .filter(known_at >= end - timedelta(days=7), known_at < end)
        .group_by(ENTITY_KEY)
        .agg(aggregates)
        .collect()
    )


def _raw(args: argparse.Namespace) -> dict[str, Any]:
    """The same day-end features as one plain polars group_by over the same scan."""

    def compute(events: Any, start: Any, end: Any) -> dict[str, Any]:
        with Stopwatch() as watch:
            rows = raw_day_end(events, end)
        return {"compute_seconds": watch.seconds, "rows": rows.height}

    return _per_partition(args, compute)


CASES: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {"generate": _generate, "chunked": _chunked, "raw": _raw}


def _child(args: argparse.Namespace) -> None:
    result = CASES[args.child](args)
    # Resetting the high-water mark per partition forgets the peaks before, so the run's peak is
    # the largest of the partitions' peaks and whatever came after the last reset.
    peaks = [p["peak_rss_mib"] for p in result.get("partitions", [])]
    result["peak_rss_mib"] = max([peak_rss_mib(), *peaks])
    print(json.dumps(result))


def _run_child(case: str, events: int, lake: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        sys.executable, "-W", "ignore", "-m", "benchmarks.bench_scale", "--child", case, "--events", str(events),
        "--lake", lake, "--entities", str(args.entities), "--days", str(args.days), "--seed", str(args.seed),
        "--max-events-per-bucket", str(args.max_events_per_bucket), "--chunk-rows", str(args.chunk_rows),
        "--partitions", str(args.partitions),
    ]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"bench_scale: case {case!r} at {events} events failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _steady(partitions: list[dict[str, Any]], days_of_history: int) -> list[dict[str, Any]]:
    """Partitions whose whole 7-day history lies inside the data: the per-partition figure."""
    return partitions[days_of_history - 1 :] or partitions


def _measure(events: int, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench_scale_", dir=args.tmp) as tmp:
        lake = f"{tmp}/lake"
        generated = _run_child("generate", events, lake, args)
        lake_bytes = sum(p.stat().st_size for p in Path(lake, TABLE).rglob("*.parquet"))
        chunked = _run_child("chunked", events, lake, args)
        raw = _run_child("raw", events, lake, args)
    steady_from = 7 if not args.partitions or args.partitions >= args.days else 1
    ours = _steady(chunked["partitions"], steady_from)
    base = _steady(raw["partitions"], steady_from)
    compute = sum(p["compute_seconds"] for p in chunked["partitions"])  # same partitions in both cases
    raw_compute = sum(p["compute_seconds"] for p in raw["partitions"])
    full = not args.partitions or args.partitions >= args.days
    return {
        "events": events,
        "partitions_computed": len(chunked["partitions"]),
        "entities": args.entities,
        "days": args.days,
        "lake_mib": lake_bytes / 2**20,
        "generate": generated,
        "chunked": chunked,
        "raw": raw,
        "summary": {
            # A partial run extrapolates from its steady partitions: an upper bound, as the first
            # days (less history) are cheaper.
            "backfill_seconds": chunked["seconds"] if full else args.days * sum(p["seconds"] for p in ours) / len(ours),
            "backfill_extrapolated": not full,
            "backfill_compute_seconds": compute,
            "backfill_peak_rss_mib": chunked["peak_rss_mib"],
            "partition_seconds_max": max(p["seconds"] for p in ours),
            "partition_compute_seconds_mean": sum(p["compute_seconds"] for p in ours) / len(ours),
            "partition_peak_rss_mib_max": max(p["peak_rss_mib"] for p in ours),
            "partition_peak_rss_mib_max_all": max(p["peak_rss_mib"] for p in chunked["partitions"]),
            "history_events_max": max(p["history_events"] for p in ours),
            "buckets_max": max(p["buckets"] for p in ours),
            "raw_compute_seconds": raw_compute,
            "raw_peak_rss_mib": raw["peak_rss_mib"],
            "raw_partition_peak_rss_mib_max": max(p["peak_rss_mib"] for p in base),
            "ratio_time_compute": compute / raw_compute,
            "kernel_load_seconds": chunked["kernel_load_seconds"],  # once per process, before the partitions
            "ratio_peak_memory": chunked["peak_rss_mib"] / raw["peak_rss_mib"],
        },
    }


def _print_table(results: list[dict[str, Any]]) -> None:
    header = (
        f"{'events':>11} {'gen s':>7} {'parts':>5} {'backfill s':>10} {'compute s':>9} {'raw s':>7} {'time x':>6} "
        f"{'peak MiB':>8} {'raw MiB':>8} {'mem x':>6} {'part s max':>10} {'part MiB':>8} {'buckets':>7} {'load s':>6}"
    )
    print(header)  # compute s, raw s: the partitions computed; backfill s with ~: extrapolated to all days
    for r in results:
        s = r["summary"]
        print(
            f"{r['events']:>11,} {r['generate']['seconds']:>7.1f} {r['partitions_computed']:>5} "
            f"{('~' if s['backfill_extrapolated'] else '') + format(s['backfill_seconds'], '.1f'):>10} "
            f"{s['backfill_compute_seconds']:>9.1f} {s['raw_compute_seconds']:>7.1f} {s['ratio_time_compute']:>6.2f} "
            f"{s['backfill_peak_rss_mib']:>8.0f} {s['raw_peak_rss_mib']:>8.0f} {s['ratio_peak_memory']:>6.2f} "
            f"{s['partition_seconds_max']:>10.2f} {s['partition_peak_rss_mib_max']:>8.0f} {s['buckets_max']:>7} "
            f"{s['kernel_load_seconds']:>6.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000000,3000000", help="comma-separated event counts")
    parser.add_argument("--entities", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-events-per-bucket", type=int, default=2_000_000)
    parser.add_argument("--chunk-rows", type=int, default=2_000_000)
    parser.add_argument(
        "--partitions", type=int, default=0,
        help="compute only the last N daily partitions (each with its full 7-day history); 0: the whole backfill",
    )  # fmt: skip
    parser.add_argument("--out", default="benchmarks/results/scale.json")
    parser.add_argument("--tmp", default=None, help="where the temporary lakes go (default: the system tmp)")
    parser.add_argument("--child", choices=sorted(CASES))
    parser.add_argument("--events", type=int)
    parser.add_argument("--lake")
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    results = []
    for events in (int(size) for size in args.sizes.split(",")):
        results.append(_measure(events, args))
        _print_table(results[-1:] if len(results) > 1 else results)
        write_report(Path(args.out), {"sizes": results})  # after every size: a long run keeps its figures
    print()
    _print_table(results)


if __name__ == "__main__":
    os.environ.setdefault("POLARS_MAX_THREADS", "2")
    main()
