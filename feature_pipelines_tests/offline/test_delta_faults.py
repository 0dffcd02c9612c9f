"""A writer SIGKILLed while writing a Delta partition range: readers keep the previous version, the re-run writes once.

The child is a real OS process running `DeltaStore.write`; it is killed as soon as its first
parquet file appears in the table directory, i.e. with data files half written and no commit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
from deltalake import DeltaTable

from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines_tests.offline.faults_writers import TABLE, day_slice, partition_frame

FIRST_DAY, LAST_DAY = 0, 19
SEED_ROWS_PER_DAY = 500
BIG_ROWS_PER_DAY = 100_000  # 2M rows, 9 columns: the child needs about 0.6 s to write them
NOISE_COLUMNS = 4


def _data_files(table_dir: Path) -> set[str]:
    """Every file in the table directory outside the log, staged multipart uploads included."""
    return {str(p.relative_to(table_dir)) for p in table_dir.rglob("*") if p.is_file() and "_delta_log" not in p.parts}


def _referenced(store: DeltaStore) -> set[str]:
    table_dir = Path(store.table_uri(TABLE))
    return {str(Path(uri.removeprefix("file://")).relative_to(table_dir)) for uri in store.open(TABLE).file_uris()}


def _kill_when_first_file_appears(root: Path, before: set[str]) -> tuple[subprocess.Popen[bytes], set[str]]:
    code = (
        "from feature_pipelines_tests.offline.faults_writers import write_big_range; "
        f"write_big_range({str(root)!r}, {FIRST_DAY}, {LAST_DAY}, {BIG_ROWS_PER_DAY}, {NOISE_COLUMNS})"
    )
    child = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2])
    table_dir = root / TABLE
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and child.poll() is None:
        new = _data_files(table_dir) - before
        if new:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=30)
            return child, new
        time.sleep(0.002)
    child.kill()
    raise AssertionError(f"the writer wrote no data file before exiting (exit code {child.poll()}): nothing to kill mid-write")


def _rows_per_day(frame: pl.DataFrame) -> dict[int, int]:
    days = frame.group_by((pl.col("event_timestamp").dt.day() - 1).alias("day")).agg(
        rows=pl.len(), keys=pl.struct("entity", "event_timestamp").n_unique()
    )
    assert days.filter(pl.col("rows") != pl.col("keys")).height == 0, "a day holds duplicate rows"
    return dict(zip(days["day"].to_list(), days["rows"].to_list()))


def test_killed_write_leaves_previous_version_and_rerun_writes_each_partition_once(tmp_path: Path) -> None:
    store = DeltaStore(str(tmp_path))
    window = day_slice(FIRST_DAY, LAST_DAY)
    seed = partition_frame("seed", 0, FIRST_DAY, LAST_DAY, SEED_ROWS_PER_DAY, noise_columns=NOISE_COLUMNS)
    previous_version = store.write(TABLE, seed, time_slice=window)
    files_before = _data_files(tmp_path / TABLE)

    child, caught_writing = _kill_when_first_file_appears(tmp_path, files_before)

    assert child.returncode == -signal.SIGKILL
    # The table opens at its previous version with exactly the previous content.
    assert store.version(TABLE) == previous_version
    assert store.read(TABLE).sort("event_timestamp").equals(seed.sort("event_timestamp"))
    # The killed writer left files behind (it was caught mid-write), and none is part of the table.
    orphans = _data_files(tmp_path / TABLE) - files_before
    assert caught_writing <= orphans
    assert not orphans & _referenced(store)

    rerun = partition_frame("rerun", 2, FIRST_DAY, LAST_DAY, BIG_ROWS_PER_DAY, noise_columns=NOISE_COLUMNS)
    assert store.write(TABLE, rerun, time_slice=window) == previous_version + 1

    after = store.read(TABLE)
    assert _rows_per_day(after) == {day: BIG_ROWS_PER_DAY for day in range(FIRST_DAY, LAST_DAY + 1)}
    assert after["writer"].unique().to_list() == ["rerun"]
    assert not orphans & _referenced(store)
    # Time travel still serves the version before the kill.
    assert store.read(TABLE, version=previous_version).sort("event_timestamp").equals(seed.sort("event_timestamp"))
    assert DeltaTable(store.table_uri(TABLE)).version() == previous_version + 1
