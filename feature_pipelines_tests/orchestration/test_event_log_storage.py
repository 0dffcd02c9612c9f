"""The local instance's event log storage records what Dagster's own SQLite storage records, only
cheaper: the same runs over a partition range, one with a failing step, give the same partitions,
statuses, check executions and events on both; the files stay readable by Dagster's class; and a
range's events reach the storage as one batch (real runs on real instances on disk)."""


import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster import AssetExecutionContext
from dagster._core.storage.event_log import SqliteEventLogStorage
from dagster._core.storage.partition_status_cache import get_and_update_asset_status_cache_value

from feature_pipelines.orchestration.event_log_storage import (
    EVENT_BATCH_SIZE,
    EVENT_BATCH_SIZE_VARIABLE,
    BatchedSqliteEventLogStorage,
)

DAYS = dg.DailyPartitionsDefinition(start_date="2013-01-01", end_date="2013-03-01")
RANGE = ("2013-01-01", "2013-01-31")
DEPLOY_YAML = Path(__file__).resolve().parents[2] / "deploy" / "dagster.local.yaml"


@dg.asset(partitions_def=DAYS, backfill_policy=dg.BackfillPolicy.single_run(),
          check_specs=[dg.AssetCheckSpec("rows_present", asset="daily_counts")])
def daily_counts(context: AssetExecutionContext):  # noqa: ANN201 (a generator of Dagster events)
    for key in context.partition_keys:
        context.log.debug(f"day {key}")
    yield dg.MaterializeResult(metadata={"days": len(context.partition_keys)})
    yield dg.AssetCheckResult(check_name="rows_present", passed=True)


@dg.asset(partitions_def=DAYS, backfill_policy=dg.BackfillPolicy.single_run(), deps=[daily_counts])
def downstream_of_counts(context: AssetExecutionContext) -> None:
    if context.partition_key_range.end >= "2013-02-01":
        raise ValueError("February is refused")


DEFS = dg.Definitions(assets=[daily_counts, downstream_of_counts],
                      jobs=[dg.define_asset_job("counts_job")])


@pytest.fixture(autouse=True)
def batched_events(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EVENT_BATCH_SIZE_VARIABLE, str(EVENT_BATCH_SIZE))


def _instance(home: Path, *, batched: bool) -> dg.DagsterInstance:
    home.mkdir(parents=True)
    if batched:
        (home / "dagster.yaml").write_text(DEPLOY_YAML.read_text())
    else:
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return dg.DagsterInstance.from_config(str(home))


@pytest.fixture
def home_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    yield
    monkeypatch.delenv("DAGSTER_HOME", raising=False)


def _run_ranges(instance: dg.DagsterInstance) -> list[dg.ExecuteInProcessResult]:
    job = DEFS.resolve_job_def("counts_job")
    results = []
    for first, last in (RANGE, ("2013-02-01", "2013-02-10")):
        results.append(job.execute_in_process(
            instance=instance, raise_on_error=False,
            tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last},
        ))
    return results


def _recorded(instance: dg.DagsterInstance, results: list[dg.ExecuteInProcessResult]) -> dict:
    """What the UI and the schedulers read back, stripped of run ids and times."""
    counts, downstream = dg.AssetKey("daily_counts"), dg.AssetKey("downstream_of_counts")
    check_key = dg.AssetCheckKey(counts, "rows_present")
    executions = instance.event_log_storage.get_asset_check_execution_history(check_key, limit=1000)
    run_ids = [result.run_id for result in results]
    return {
        "success": [result.success for result in results],
        "materialized": {key.to_user_string(): sorted(instance.get_materialized_partitions(key)) for key in (counts, downstream)},
        # What the UI paints red: partitions a failed run had planned and did not materialize.
        "failed": {key.to_user_string(): sorted(
            get_and_update_asset_status_cache_value(instance, key, DAYS).deserialize_failed_partition_subsets(DAYS).get_partition_keys())
            for key in (counts, downstream)},
        "latest_partition": instance.get_latest_materialization_event(counts).dagster_event.partition,
        # The asset table's row per asset: last materialization (its storage id and partition), last run.
        "asset_rows": {
            record.asset_entry.asset_key.to_user_string(): (
                record.asset_entry.last_materialization_record.storage_id,
                record.asset_entry.last_materialization_record.event_log_entry.dagster_event.partition,
                run_ids.index(record.asset_entry.last_run_id),
            )
            for record in instance.get_asset_records([counts, downstream])
        },
        "check_executions": sorted((e.partition or "", e.status.value) for e in executions),
        "events_by_type": [dict(Counter(e.dagster_event.event_type_value for e in instance.all_logs(r.run_id) if e.dagster_event))
                           for r in results],
        "failed_run_partitions": sorted(instance.get_run_by_id(results[1].run_id).tags.values()),
    }


def test_the_batched_storage_records_what_dagsters_own_records(tmp_path: Path, home_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    recorded = {}
    for batched in (False, True):
        home = tmp_path / ("batched" if batched else "dagster")
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        with _instance(home, batched=batched) as instance:
            expected_class = BatchedSqliteEventLogStorage if batched else SqliteEventLogStorage
            assert type(instance.event_log_storage) is expected_class
            recorded[batched] = _recorded(instance, _run_ranges(instance))
    assert recorded[True] == recorded[False]
    assert recorded[True]["success"] == [True, False]  # February's downstream step failed
    assert recorded[True]["materialized"]["daily_counts"] == DAYS.get_partition_keys()[:41]
    assert recorded[True]["materialized"]["downstream_of_counts"] == DAYS.get_partition_keys()[:31]
    # One planned row per partition of each run, and each run's evaluation (not partitioned here).
    assert len(recorded[True]["check_executions"]) == 41 + 2
    # February's run planned both assets last; only daily_counts materialized in it.
    assert {key: row[1:] for key, row in recorded[True]["asset_rows"].items()} == {
        "daily_counts": ("2013-02-10", 1), "downstream_of_counts": ("2013-01-31", 1)}
    assert recorded[True]["failed"] == {"daily_counts": [], "downstream_of_counts": DAYS.get_partition_keys()[31:41]}

    # The batched storage wrote Dagster's files: Dagster's own class reads them back the same.
    home = tmp_path / "batched"
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.event_log_storage) is SqliteEventLogStorage
        runs = [run.run_id for run in instance.get_runs()][::-1]
        reread = {
            "materialized": {key: sorted(instance.get_materialized_partitions(dg.AssetKey(key)))
                             for key in ("daily_counts", "downstream_of_counts")},
            "events_by_type": [dict(Counter(e.dagster_event.event_type_value for e in instance.all_logs(run) if e.dagster_event))
                               for run in runs],
        }
    assert reread["materialized"] == recorded[True]["materialized"]
    assert reread["events_by_type"] == recorded[True]["events_by_type"]


def test_a_ranges_events_reach_the_storage_as_batches(tmp_path: Path, home_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "batched"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    batches: list[int] = []
    original = BatchedSqliteEventLogStorage.store_event_batch

    def counted(self: BatchedSqliteEventLogStorage, events: list) -> None:
        batches.append(len(events))
        original(self, events)

    monkeypatch.setattr(BatchedSqliteEventLogStorage, "store_event_batch", counted)
    with _instance(home, batched=True) as instance:
        result = DEFS.resolve_job_def("counts_job").execute_in_process(
            instance=instance, tags={"dagster/asset_partition_range_start": RANGE[0], "dagster/asset_partition_range_end": RANGE[1]})
        assert result.success
    # At creation, 31 planned events per asset and the check's planned event; then each step's
    # 31 materializations: four writes in all, where Dagster's storage makes one per event.
    assert sorted(batches) == [31, 31, 63]


def test_the_storage_defaults_to_dagsters_place_for_event_logs(tmp_path: Path, home_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    storage = BatchedSqliteEventLogStorage()
    try:
        assert storage._base_dir == os.path.join(str(tmp_path), "history", "runs")
        assert (tmp_path / "history" / "runs" / "index.db").exists()
    finally:
        storage.dispose()
    monkeypatch.delenv("DAGSTER_HOME")
    with pytest.raises(ValueError, match="DAGSTER_HOME is not set"):
        BatchedSqliteEventLogStorage()
