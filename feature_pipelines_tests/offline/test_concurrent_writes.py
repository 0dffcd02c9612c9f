"""Two backfills writing the same Delta table at once: conflicts are retried, nothing is lost or doubled.

The writers are real OS processes (multiprocessing, spawn) committing to one real Delta table;
every committed version is then checked against a model of what that commit must have done.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from deltalake import DeltaTable

from feature_pipelines.offline.delta_store import CommitConflictError, CommitRetryPolicy, DeltaStore
from feature_pipelines.orchestration.runs import materialize_range
from feature_pipelines.orchestration.schedules import HOURLY_SNAPSHOT_JOB, RAW_HOURLY_JOB
from feature_pipelines_tests.conftest import make_pipeline
from feature_pipelines_tests.offline.faults_writers import (
    ROUND_SHAPES,
    TABLE,
    check_every_version,
    dagster_backfill,
    day_slice,
    partition_frame,
    run_contention,
    run_spawned_together,
    state_by_day,
)


def test_two_processes_overwriting_overlapping_ranges_lose_and_double_nothing(tmp_path: Path) -> None:
    reports = run_contention(str(tmp_path), cycles=5)

    store = DeltaStore(str(tmp_path))
    assert check_every_version(store) == 2 * len(ROUND_SHAPES) * 5  # every write committed exactly once
    assert sorted(state_by_day(store.read(TABLE))) == list(range(8))  # no partition lost
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
    state = state_by_day(store.read(TABLE))
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


def test_two_dagster_backfills_of_the_same_feature_at_once(tmp_path: Path, small_landing_root: Path) -> None:
    """Two processes, each with its own Dagster instance, backfill overlapping days of the same
    raw tables and feature table into one lake: both runs succeed and no row is doubled or lost."""
    ranges = [("2013-01-01", "2013-01-02", "2013-01-04"), ("2013-01-01", "2013-01-03", "2013-01-05")]
    outcomes = run_spawned_together(
        dagster_backfill, [(str(tmp_path), str(small_landing_root), *days) for days in ranges], timeout=240
    )
    assert all(outcome[job] for outcome in outcomes for job in (RAW_HOURLY_JOB, HOURLY_SNAPSHOT_JOB)), outcomes

    store = DeltaStore(str(tmp_path / "lake"))
    reference = make_pipeline(tmp_path / "reference", small_landing_root)
    assert materialize_range(reference.defs, RAW_HOURLY_JOB, "2013-01-01-00:00", "2013-01-05-23:00", instance=reference.instance).result.success
    assert materialize_range(
        reference.defs, HOURLY_SNAPSHOT_JOB, "2013-01-02", "2013-01-05", instance=reference.instance, assets=["carrier_delay_stats"]
    ).result.success
    for table in ("raw_flights", "raw_weather", "carrier_delay_stats"):
        contested, alone = (
            s.read(table).drop("created_timestamp", strict=False) for s in (store, reference.store)
        )
        assert contested.height == alone.height > 0, table
        assert contested.sort(contested.columns).equals(alone.sort(alone.columns)), table
