"""A week's backfill of a feature view launched as the UI's backfill dialog launches it.

A real `dagster dev` (see conftest): the webserver's `launchPartitionBackfill` mutation with the
dialog's variables, then the daemon does the rest. Done means: the backfill completed, as ONE run
over the whole week (the view declares BackfillPolicy.single_run()), every day of the week is
materialized by that run, each of the view's checks passed for each day in it, and the Delta table
holds the week's snapshots, equal to what the view's computation gives over the landed raw events.
"""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
from polars.testing import assert_frame_equal

from feature_pipelines.compute.snapshots import snapshot_features
from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.names import CREATED_TIMESTAMP, EVENT_TIMESTAMP
from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.orchestration.privacy_checks import ABSENCE_CHECK
from feature_pipelines_tests.ui.conftest import VIEW, WEEK, DagsterDev, WeekBackfill

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"

ASSET_STATE = """
query AssetState($path: [String!]!, $partitions: [String!]) {
  assetNodeOrError(assetKey: {path: $path}) {
    __typename
    ... on AssetNode {
      assetPartitionStatuses { __typename ... on TimePartitionStatuses { ranges { startKey endKey status } } }
      assetMaterializations(partitions: $partitions) { partition runId }
      assetChecksOrError { __typename ... on AssetChecks { checks { name } } }
    }
  }
}
"""

RUN_CHECKS = """
query RunChecks($runId: ID!) {
  logsForRun(runId: $runId) {
    __typename
    ... on EventConnection {
      events { __typename ... on AssetCheckEvaluationEvent { evaluation { checkName partition success
        assetKey { path } description } } }
    }
    ... on PythonError { message }
  }
}
"""


def _run_tags(run: dict) -> dict[str, str]:
    return {tag["key"]: tag["value"] for tag in run["tags"]}


def test_a_week_launched_from_the_backfill_dialog_runs_once_and_passes_its_checks(
    dagster_dev: DagsterDev, week_backfill: WeekBackfill
) -> None:
    assert week_backfill.status == "COMPLETED_SUCCESS", (week_backfill, dagster_dev.log_tail())

    # One run for the whole week: the single-run backfill policy, over the week's range.
    assert len(week_backfill.runs) == 1, week_backfill.runs
    run = week_backfill.runs[0]
    tags = _run_tags(run)
    assert run["status"] == "SUCCESS", run
    assert tags["dagster/backfill"] == week_backfill.backfill_id
    assert (tags[RANGE_START_TAG], tags[RANGE_END_TAG]) == (WEEK[0], WEEK[-1]), tags

    state = dagster_dev.graphql(ASSET_STATE, {"path": [VIEW], "partitions": WEEK})["assetNodeOrError"]
    assert state["__typename"] == "AssetNode", state
    materialized = [r for r in state["assetPartitionStatuses"]["ranges"] if r["status"] == "MATERIALIZED"]
    for day in WEEK:
        assert any(r["startKey"] <= day <= r["endKey"] for r in materialized), (day, materialized)
    by_partition = {m["partition"]: m["runId"] for m in state["assetMaterializations"]}
    assert by_partition == {day: run["runId"] for day in WEEK}, by_partition

    # Every check of the view evaluated for every day, in that run, and passed.
    checks = {c["name"] for c in state["assetChecksOrError"]["checks"]}
    assert "upstream_partitions_ready" in checks, checks
    logs = dagster_dev.graphql(RUN_CHECKS, {"runId": run["runId"]})["logsForRun"]
    assert logs["__typename"] == "EventConnection", logs
    evaluations = [e["evaluation"] for e in logs["events"] if e["__typename"] == "AssetCheckEvaluationEvent"]
    # A clean range records one range-level evaluation per check (per-partition ones only for the
    # partitions that fail: see orchestration.quality_gate), saying how many partitions it judged.
    assert sorted(e["checkName"] for e in evaluations) == sorted(checks), evaluations
    assert [e for e in evaluations if not e["success"]] == []
    gates = [e for e in evaluations if e["checkName"] != ABSENCE_CHECK]  # the privacy proof judges the table, not partitions
    assert {e["description"].split(";")[0] for e in gates} == {f"passed on {len(WEEK)} partition(s)"}, evaluations

    # The week's rows in the Delta table: one snapshot a day (at the end of each day), equal to the
    # view's computation over the raw events the setup landed.
    view = FEATURE_VIEWS[VIEW]
    start, end = (
        datetime.fromisoformat(WEEK[0]).replace(tzinfo=UTC),
        datetime.fromisoformat(WEEK[-1]).replace(tzinfo=UTC) + view.partitioning.interval,
    )
    store = DeltaStore(root=dagster_dev.settings.lake_root)
    written = store.read(VIEW).filter((pl.col(EVENT_TIMESTAMP) > start) & (pl.col(EVENT_TIMESTAMP) <= end))
    assert written[EVENT_TIMESTAMP].n_unique() == len(WEEK)
    expected = snapshot_features(store.read(view.source.asset), view, start=start, end=end)
    order = [EVENT_TIMESTAMP, *view.entity_keys]
    assert_frame_equal(
        written.drop(CREATED_TIMESTAMP).sort(order), expected.sort(order), check_column_order=False, check_dtypes=False
    )
