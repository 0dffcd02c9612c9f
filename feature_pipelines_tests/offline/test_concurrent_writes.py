"""Two backfills writing the same Delta table at once: conflicts are retried, nothing is lost or doubled.

The writers are real OS processes (multiprocessing, spawn) committing to one real Delta table;
every committed version is then checked against a model of what that commit must have done.
"""

from __future__ import annotations

import multiprocessing
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable

from feature_pipelines.offline.delta_store import CommitConflictError, CommitRetryPolicy, DeltaStore
from feature_pipelines_tests.offline.faults_writers import TABLE, contend, day_slice, partition_frame

ROWS_PER_DAY = {"A": 30, "B": 45}
# (A's days, B's days) per round: overlapping, disjoint, identical; repeated so commits collide often.
ROUND_SHAPES = [((0, 4), (3, 7)), ((0, 3), (4, 7)), ((2, 5), (2, 5))]
CYCLES = 5


def _state_by_day(frame: pl.DataFrame) -> dict[int, tuple[str, int, int]]:
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


def _check_every_version(root: Path) -> int:
    """Replay the log: each commit must replace exactly its own days with exactly its own rows.

    Commits without a writer are the empty table creations (both writers may find no table and
    create it); they must change nothing. Returns the number of data commits.
    """
    uri = str(root / TABLE)
    history = sorted(DeltaTable(uri).history(), key=lambda commit: commit["version"])
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
        actual = _state_by_day(pl.read_delta(uri, version=commit["version"]))
        assert actual == expected, f"version {commit['version']}: {commit.get('writer')} round {commit.get('round')}"
    return data_commits


def test_two_processes_overwriting_overlapping_ranges_lose_and_double_nothing(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    plans = {
        "A": [shape[0] for shape in ROUND_SHAPES] * CYCLES,
        "B": [shape[1] for shape in ROUND_SHAPES] * CYCLES,
    }
    workers = [
        context.Process(target=contend, args=(str(tmp_path), w, plans[w], ROWS_PER_DAY[w], barrier, results))
        for w in plans
    ]
    for worker in workers:
        worker.start()
    reports = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0, f"writer process exited with {worker.exitcode}"

    versions = _check_every_version(tmp_path)
    assert versions == 2 * len(ROUND_SHAPES) * CYCLES  # every write committed exactly once
    final = _state_by_day(DeltaStore(str(tmp_path)).read(TABLE))
    assert sorted(final) == list(range(8))  # no partition lost
    conflicts = sum(r["conflicts"] for r in reports)
    print(f"\ncommit conflicts seen: {reports}")
    assert conflicts > 0, "the writers never collided: the test did not exercise conflict handling"
    assert sum(r["retries"] for r in reports) == conflicts
    assert sum(r["exhausted"] for r in reports) == 0


@dataclass(frozen=True)
class StaleSnapshotStore(DeltaStore):
    """Hands out snapshots read before a concurrent commit, making a real Delta conflict certain."""

    stale: list[DeltaTable] = field(default_factory=list, compare=False, repr=False)

    def _current(self, table: str) -> DeltaTable | None:
        return self.stale.pop(0) if self.stale else super()._current(table)


def _seed(root: Path) -> DeltaStore:
    store = DeltaStore(str(root))
    store.write(TABLE, partition_frame("A", 0, 0, 7, 10), time_slice=day_slice(0, 7))
    return store


def test_conflict_is_retried_against_the_latest_version(tmp_path: Path) -> None:
    store = _seed(tmp_path)
    seeded = store.version(TABLE)
    stale = [store.open(TABLE, seeded), store.open(TABLE, seeded)]
    store.write(TABLE, partition_frame("B", 1, 2, 3, 20), time_slice=day_slice(2, 3))  # the other backfill wins
    retrying = StaleSnapshotStore(str(tmp_path), retry=CommitRetryPolicy(max_attempts=3, base_delay_seconds=0.001), stale=stale)

    version = retrying.write(TABLE, partition_frame("C", 2, 2, 3, 30), time_slice=day_slice(2, 3))

    assert (retrying.conflict_stats.conflicts, retrying.conflict_stats.retries) == (2, 2)
    assert version == seeded + 2 == store.version(TABLE)  # after the other backfill's commit
    state = _state_by_day(store.read(TABLE))
    assert {day: state[day][0] for day in range(8)} == {0: "A", 1: "A", 2: "C", 3: "C", 4: "A", 5: "A", 6: "A", 7: "A"}
    assert state[2][2] == 30


def test_attempts_running_out_raise_naming_table_and_partitions_and_commit_nothing(tmp_path: Path) -> None:
    store = _seed(tmp_path)
    seeded = store.version(TABLE)
    stale = [store.open(TABLE, seeded), store.open(TABLE, seeded)]
    store.write(TABLE, partition_frame("B", 1, 2, 3, 20), time_slice=day_slice(2, 3))
    before = store.read(TABLE).sort("event_timestamp")
    giving_up = StaleSnapshotStore(str(tmp_path), retry=CommitRetryPolicy(max_attempts=2, base_delay_seconds=0.001), stale=stale)

    with pytest.raises(CommitConflictError) as raised:
        giving_up.write(TABLE, partition_frame("C", 2, 2, 3, 30), time_slice=day_slice(2, 3))

    message = str(raised.value)
    assert f"table {TABLE!r}" in message
    assert "event_timestamp in [2013-01-03T00:00:00+00:00, 2013-01-05T00:00:00+00:00)" in message
    assert "after 2 attempts" in message
    assert giving_up.conflict_stats.exhausted == 1
    assert store.version(TABLE) == seeded + 1
    assert store.read(TABLE).sort("event_timestamp").equals(before)
