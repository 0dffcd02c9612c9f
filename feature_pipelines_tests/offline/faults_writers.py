"""Writer processes for the fault tests: module-level functions so `multiprocessing` spawn can import them."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import polars as pl

from feature_pipelines.offline.delta_store import CommitRetryPolicy, DeltaStore, TimeSlice

TABLE = "contested_feature"
DAY0 = datetime(2013, 1, 1, tzinfo=timezone.utc)
ROWS_PER_DAY = {"A": 30, "B": 45}
# (A's days, B's days) per round: overlapping, disjoint, identical; repeated so commits collide often.
ROUND_SHAPES = [((0, 4), (3, 7)), ((0, 3), (4, 7)), ((2, 5), (2, 5))]


def day_start(day: int) -> datetime:
    return DAY0 + timedelta(days=day)


def day_slice(first_day: int, last_day: int) -> TimeSlice:
    """Daily partitions [first_day, last_day] as one half-open window."""
    return TimeSlice(column="event_timestamp", start=day_start(first_day), end=day_start(last_day + 1))


def partition_frame(
    writer: str, round_number: int, first_day: int, last_day: int, rows_per_day: int, *, noise_columns: int = 0
) -> pl.DataFrame:
    """`rows_per_day` rows in each day, every row stamped with who wrote it and in which round.

    Noise columns (incompressible floats) make a frame slow to encode, so a writer can be caught
    while its parquet files are being written."""
    days = np.repeat(np.arange(first_day, last_day + 1, dtype=np.int64), rows_per_day)
    index = np.tile(np.arange(rows_per_day, dtype=np.int64), last_day - first_day + 1)
    epoch_us = int(DAY0.timestamp()) * 1_000_000
    frame = pl.DataFrame(
        {
            "event_timestamp": pl.Series(epoch_us + days * 86_400_000_000 + index * 1_000).cast(pl.Datetime("us", "UTC")),
            "entity": pl.Series(index).cast(pl.String).str.pad_start(7, "0"),
            "writer": pl.Series([writer] * len(days), dtype=pl.String),
            "round": pl.Series([round_number] * len(days), dtype=pl.Int64),
            "value": (days * 1000 + index).astype(np.float64),
        }
    )
    rng = np.random.default_rng(round_number)
    return frame.with_columns(pl.Series(f"noise{n}", rng.random(frame.height)) for n in range(noise_columns))


def contend(
    root: str,
    writer: str,
    ranges: list[tuple[int, int]],
    rows_per_day: int,
    storage_options: dict[str, str] | None,
    start_together: Any,
    results: Any,
) -> None:
    """Write one range per round; every round starts at a shared barrier so commits collide."""
    store = DeltaStore(
        root, storage_options, retry=CommitRetryPolicy(max_attempts=12, base_delay_seconds=0.02, max_delay_seconds=0.5)
    )
    for round_number, (first_day, last_day) in enumerate(ranges):
        start_together.wait(timeout=60)
        frame = partition_frame(writer, round_number, first_day, last_day, rows_per_day)
        store.write(
            TABLE,
            frame,
            time_slice=day_slice(first_day, last_day),
            commit_metadata={
                "writer": writer, "round": str(round_number), "first_day": str(first_day), "last_day": str(last_day)
            },
        )
    stats = store.conflict_stats
    results.put({"writer": writer, "conflicts": stats.conflicts, "retries": stats.retries, "exhausted": stats.exhausted})


def write_big_range(root: str, first_day: int, last_day: int, rows_per_day: int, noise_columns: int) -> None:
    """The child that gets SIGKILLed: one large overwrite of many daily partitions."""
    frame = partition_frame("killed", 1, first_day, last_day, rows_per_day, noise_columns=noise_columns)
    DeltaStore(root).write(TABLE, frame, time_slice=day_slice(first_day, last_day))


def run_spawned_together(target: Callable[..., None], arguments: list[tuple[Any, ...]], *, timeout: float) -> list[Any]:
    """Start one spawned process per argument tuple, all sharing a barrier and a result queue (passed
    as their last two arguments); each puts one result. Returns them in arrival order."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(len(arguments)), context.Queue()
    workers = [context.Process(target=target, args=(*args, barrier, results)) for args in arguments]
    for worker in workers:
        worker.start()
    reports = [results.get(timeout=timeout) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0, f"process {worker.name} exited with {worker.exitcode}"
    return reports


def run_contention(root: str, *, cycles: int, storage_options: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Two spawned writer processes, `cycles` times through ROUND_SHAPES; their conflict counts."""
    plans = {writer: [shape[i] for shape in ROUND_SHAPES] * cycles for i, writer in enumerate(ROWS_PER_DAY)}
    return run_spawned_together(
        contend, [(root, w, plans[w], ROWS_PER_DAY[w], storage_options) for w in plans], timeout=120
    )


def state_by_day(frame: pl.DataFrame) -> dict[int, tuple[str, int, int]]:
    """Per day: (writer, round, rows) — failing if a day holds rows of more than one write."""
    per_day = (
        frame.with_columns(day=(pl.col("event_timestamp").dt.day() - 1).cast(pl.Int64))
        .group_by("day")
        .agg(
            writers=pl.struct("writer", "round").n_unique(),
            writer=pl.col("writer").first(),
            round=pl.col("round").first(),
            rows=pl.len(),
            distinct_keys=pl.struct("entity", "event_timestamp").n_unique(),
        )
    )
    mixed = per_day.filter((pl.col("writers") > 1) | (pl.col("distinct_keys") != pl.col("rows")))
    assert mixed.height == 0, f"days holding a mix of writes or duplicate rows: {mixed.to_dicts()}"
    return {row["day"]: (row["writer"], row["round"], row["rows"]) for row in per_day.iter_rows(named=True)}


def check_every_version(store: DeltaStore) -> int:
    """Replay the log: each commit must replace exactly its own days with exactly its own rows.

    Commits without a writer are the empty table creations (both writers may find no table and
    create it); they must change nothing. Returns the number of data commits.
    """
    history = sorted(store.open(TABLE).history(), key=lambda commit: commit["version"])
    expected: dict[int, tuple[str, int, int]] = {}
    data_commits = 0
    for commit in history:
        if "writer" in commit:
            data_commits += 1
            writer, round_number = commit["writer"], int(commit["round"])
            for day in range(int(commit["first_day"]), int(commit["last_day"]) + 1):
                expected[day] = (writer, round_number, ROWS_PER_DAY[writer])
        else:
            assert commit["operationParameters"]["mode"] == "Ignore", commit
        actual = state_by_day(store.read(TABLE, version=commit["version"]))
        assert actual == expected, f"version {commit['version']}: {commit.get('writer')} round {commit.get('round')}"
    return data_commits




def dagster_backfill(
    tmp_path: str, landing_root: str, raw_first_day: str, first_day: str, last_day: str, start_together: Any, results: Any
) -> None:
    """One real Dagster backfill (own ephemeral instance) of raw hours from `raw_first_day` (the
    24h window reads the day before) and of carrier_delay_stats over [first_day, last_day], into
    the lake shared with the other process."""
    from pathlib import Path

    from feature_pipelines.orchestration.runs import materialize_range
    from feature_pipelines.orchestration.schedules import HOURLY_SNAPSHOT_JOB, RAW_HOURLY_JOB
    from feature_pipelines_tests.conftest import make_pipeline, step_failure_text

    pipeline = make_pipeline(Path(tmp_path), Path(landing_root))
    start_together.wait(timeout=120)
    outcome: dict[str, Any] = {"range": (first_day, last_day)}
    for job, first, last, assets in (
        (RAW_HOURLY_JOB, f"{raw_first_day}-00:00", f"{last_day}-23:00", None),
        (HOURLY_SNAPSHOT_JOB, first_day, last_day, ["carrier_delay_stats"]),
    ):
        run = materialize_range(pipeline.defs, job, first, last, instance=pipeline.instance, raise_on_error=False, assets=assets)
        outcome[job] = run.result.success
        if not run.result.success:
            outcome[f"{job} failure"] = step_failure_text(run.result)
    results.put(outcome)
