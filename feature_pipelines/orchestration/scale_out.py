"""One partition's snapshots fanned out over entity buckets as Dagster steps: plan, compute each bucket, write.

`compute/chunked.py` computes a partition bucket by bucket in one process. Here the same buckets
are Dagster steps of one run, so the executor places them: the multiprocess executor on one
machine, `k8s_job_executor` (a pod per step) or `docker_executor` (a container per step) on a
cluster, as run config (deploy/README.md, "Scale-out"). The graph of the daily-partitioned asset:

    plan_buckets --DynamicOut, one per bucket--> compute_bucket --collect--> write_partition

- plan_buckets counts the partition's history in the source table and sizes the buckets (or
  takes a forced count from its config); it sends each bucket its `BucketTask` (tiny: the plan
  and a staging table name), never events.
- compute_bucket scans the source for its bucket's entities only, runs `snapshot_features`
  through `chunked.snapshot_bucket`, and writes its rows to its own staging Delta table: steps in
  other processes or pods exchange table names, not pickled frames.
- write_partition reads the staged buckets, puts them in `snapshot_features`' order
  (`chunked.merge_buckets`) and writes the partition in one atomic time-window overwrite, so the
  table is byte for byte what the one-process computation writes. A local lake's staging tables
  are then removed; on an object store a lifecycle rule on `STAGING_ROOT` expires them.

Buckets hold disjoint entities and a snapshot row depends only on its own entity's events, so
which process computes which bucket, and in which order, cannot change a value.

The asset is for the synthetic scale view (the real nycflights views are 337k events a year and
gain nothing from it); it is only in the Definitions with FEATURE_PIPELINES_SCALE_OUT=1, since
the demo has no synthetic table. `build_scale_out_asset` takes any FeatureView whose source is a
lake table named after `view.source.asset`.
"""

import importlib
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dagster import (
    AssetsDefinition,
    BackfillPolicy,
    Config,
    Definitions,
    DynamicOut,
    DynamicOutput,
    ExecutorDefinition,
    In,
    JobDefinition,
    Nothing,
    OpExecutionContext,
    Out,
    Output,
    TimeWindowPartitionsDefinition,
    define_asset_job,
    graph_asset,
    op,
)
from pydantic import Field

from feature_pipelines.compute.chunked import (
    DEFAULT_MAX_EVENTS_PER_BUCKET,
    PartitionPlan,
    merge_buckets,
    plan_partition,
    snapshot_bucket,
)
from feature_pipelines.compute.snapshots import validate_events
from feature_pipelines.features.spec import FeatureView, Partitioning
from feature_pipelines.names import EVENT_TIMESTAMP, STAGING_ROOT
from feature_pipelines.offline.delta_store import DeltaStore, TimeSlice
from feature_pipelines.orchestration.concurrency import LAKE_WRITES_POOL
from feature_pipelines.orchestration.partitions import partitions_for
from feature_pipelines.orchestration.resources_by_env import lake_for
from feature_pipelines.resources import LakeResource
from feature_pipelines.settings import Settings, load_settings
from feature_pipelines.sources.synthetic import synthetic_view

SCALE_OUT_VAR = "FEATURE_PIPELINES_SCALE_OUT"
SCALE_EXECUTOR_VAR = "FEATURE_PIPELINES_SCALE_OUT_EXECUTOR"
# Where each step runs: a process here, or (packages installed only in the cluster's images, see
# deploy/README.md) a Kubernetes Job or a Docker container per step. Same job, same graph.
STEP_EXECUTORS: dict[str, tuple[str, str]] = {
    "multiprocess": ("dagster", "multiprocess_executor"),
    "k8s": ("dagster_k8s", "k8s_job_executor"),
    "docker": ("dagster_docker", "docker_executor"),
}
SCALE_GROUP = "scale"
SCALE_JOB = "synthetic_scale_job"


class BucketPlanConfig(Config):
    """How a partition is cut: a forced bucket count, or the largest bucket in events."""

    buckets: int | None = Field(default=None, description="Force this many buckets (tests, benchmarks); unset: sized.")
    max_events_per_bucket: int = Field(
        default=DEFAULT_MAX_EVENTS_PER_BUCKET,
        description="Events of history per bucket when sizing: a bucket step's memory follows it.",
    )


@dataclass(frozen=True)
class BucketTask:
    """What one bucket step needs: the partition's plan, its bucket, and where to stage its rows."""

    plan: PartitionPlan
    bucket: int
    staging_table: str


class ScaleOutExecutorError(RuntimeError):
    """The step executor named in FEATURE_PIPELINES_SCALE_OUT_EXECUTOR is unknown or not installed."""


def scale_out_executor(environ: Mapping[str, str] = os.environ) -> ExecutorDefinition:
    """The executor of the job's steps: FEATURE_PIPELINES_SCALE_OUT_EXECUTOR (default multiprocess).

    The cluster executors are imported only when named, so dagster-k8s and dagster-docker are
    dependencies of the cluster's images, never of this package."""
    name = environ.get(SCALE_EXECUTOR_VAR, "").strip() or "multiprocess"
    if name not in STEP_EXECUTORS:
        raise ScaleOutExecutorError(f"{SCALE_EXECUTOR_VAR}={name!r}: choose one of {sorted(STEP_EXECUTORS)}")
    module, attribute = STEP_EXECUTORS[name]
    try:
        return getattr(importlib.import_module(module), attribute)
    except ModuleNotFoundError as error:
        raise ScaleOutExecutorError(
            f"{SCALE_EXECUTOR_VAR}={name!r} needs the package {module.replace('_', '-')} in this image "
            f"(deploy/README.md, Scale-out): {error}"
        ) from error


def scale_out_enabled(environ: Mapping[str, str] = os.environ) -> bool:
    """FEATURE_PIPELINES_SCALE_OUT=1 adds the scale group (its source table must exist in the lake)."""
    return environ.get(SCALE_OUT_VAR, "").strip().lower() in ("1", "true", "yes")


def staging_table(view: FeatureView, run_id: str, partition_key: str, bucket: int, buckets: int) -> str:
    return f"{STAGING_ROOT}/{view.name}/{partition_key}/{run_id}/bucket_{bucket:04d}_of_{buckets:04d}"


def _drop_local_staging(store: DeltaStore, view: FeatureView, partition_key: str, run_id: str) -> None:
    """Remove a run's staging tables on a local lake; an object-store lake expires them by a
    lifecycle rule on STAGING_ROOT (deleting prefixes is not something Delta does)."""
    if "://" in store.root:
        return
    shutil.rmtree(Path(store.root, STAGING_ROOT, view.name, partition_key, run_id), ignore_errors=False)


def _daily_partitions(view: FeatureView, settings: Settings) -> TimeWindowPartitionsDefinition:
    """The view's daily partitions; scale-out takes daily snapshots in daily partitions only."""
    if view.partitioning is not Partitioning.DAILY or view.cadence is not Partitioning.DAILY:
        raise ValueError(f"feature view {view.name!r}: scale-out takes daily partitions of daily snapshots")
    return partitions_for(Partitioning.DAILY, settings)


def _window(context: OpExecutionContext) -> tuple[str, datetime, datetime]:
    """The run's partition: its key and UTC bounds (a run holds one, see the backfill policy)."""
    window = context.partition_time_window
    return context.partition_key, window.start.astimezone(UTC), window.end.astimezone(UTC)


def _peak_rss_mib() -> float | None:
    """This process's peak resident memory (VmHWM, Linux): under the multiprocess, k8s or docker
    executor a step is its own process, so this is the step's peak, the figure a pod is sized by."""
    try:
        status = Path("/proc/self/status").read_text()
    except FileNotFoundError:  # no /proc: not Linux
        return None
    line = next((line for line in status.splitlines() if line.startswith("VmHWM:")), None)
    return int(line.split()[1]) / 1024 if line else None


def build_scale_out_asset(view: FeatureView, settings: Settings) -> AssetsDefinition:
    """The view's daily-partitioned table as a graph asset whose buckets are separate steps."""
    partitions = _daily_partitions(view, settings)
    source = view.source.asset
    prefix = view.name

    @op(name=f"{prefix}__plan_buckets", out=DynamicOut(BucketTask))
    def plan_buckets(
        context: OpExecutionContext, config: BucketPlanConfig, lake: LakeResource
    ) -> Iterator[DynamicOutput[BucketTask]]:
        key, start, end = _window(context)
        events = lake.store().scan(source)
        validate_events(events, view, context=f"table {source!r} (for feature view {view.name!r})")
        plan = plan_partition(
            events, view, start=start, end=end,
            max_events_per_bucket=config.max_events_per_bucket, buckets=config.buckets,
        )  # fmt: skip
        context.log.info(plan.describe())
        for bucket in range(plan.buckets):
            task = BucketTask(plan, bucket, staging_table(view, context.run_id, key, bucket, plan.buckets))
            yield DynamicOutput(task, mapping_key=f"bucket_{bucket:04d}")

    @op(name=f"{prefix}__compute_bucket")
    def compute_bucket(context: OpExecutionContext, task: BucketTask, lake: LakeResource) -> Output[str]:
        began = time.perf_counter()
        store = lake.store()
        rows = snapshot_bucket(
            store.scan(source), view, task.plan, task.bucket, context=f"table {source!r} (for feature view {view.name!r})"
        )
        computed = time.perf_counter()
        store.write(task.staging_table, rows, time_slice=None)
        peak = _peak_rss_mib()
        return Output(
            task.staging_table,
            metadata={
                "bucket": task.bucket,
                "rows": rows.height,
                "compute_seconds": round(computed - began, 4),
                "stage_seconds": round(time.perf_counter() - computed, 4),
                **({"process_peak_rss_mib": round(peak, 1)} if peak is not None else {}),
            },
        )

    @op(name=f"{prefix}__write_partition", ins={"staged": In(list[str])}, out=Out(Nothing), pool=LAKE_WRITES_POOL)
    def write_partition(context: OpExecutionContext, staged: list[str], lake: LakeResource) -> Iterator[Output[None]]:
        store = lake.store()
        key, start, end = _window(context)
        rows = merge_buckets([store.read(table) for table in sorted(staged)], view)
        version = store.write(
            view.name, rows, time_slice=TimeSlice(EVENT_TIMESTAMP, start, end, closed="right"),
            commit_metadata={"run_id": context.run_id, "buckets": str(len(staged))},
        )  # fmt: skip
        _drop_local_staging(store, view, key, context.run_id)
        yield Output(None, metadata={"rows": rows.height, "buckets": len(staged), "delta_version": version})

    @graph_asset(
        name=view.name,
        description=f"{view.description}\n\nComputed by entity buckets, one Dagster step each (orchestration/scale_out.py).",
        group_name=SCALE_GROUP,
        partitions_def=partitions,
        backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=1),
        kinds={"polars", "delta"},
        owners=[view.owner],
    )
    def scale_out_table() -> Any:
        return write_partition(plan_buckets().map(compute_bucket).collect())

    return scale_out_table


def scale_out_definitions(settings: Settings, environ: Mapping[str, str] = os.environ) -> Definitions:
    """The scale group for the main Definitions: empty unless FEATURE_PIPELINES_SCALE_OUT is on.

    No resources here: the main Definitions' `lake` serves it, as it serves every asset."""
    if not scale_out_enabled(environ):
        return Definitions()
    asset = build_scale_out_asset(synthetic_view(), settings)
    return Definitions(assets=[asset], jobs=[scale_out_asset_job(asset)])


def scale_out_asset_job(asset: AssetsDefinition) -> Any:
    """The job: the multiprocess executor locally (`max_concurrent` from run config, default the
    CPU count), or the cluster executor named by FEATURE_PIPELINES_SCALE_OUT_EXECUTOR, configured
    by deploy/scale_out.k8s.run.yaml or deploy/scale_out.docker.run.yaml."""
    return define_asset_job(
        SCALE_JOB, selection=[asset.key], executor_def=scale_out_executor(),
        description="One synthetic day, its entity buckets as parallel steps (FEATURE_PIPELINES_SCALE_OUT=1).",
    )  # fmt: skip


def scale_out_job(lake_root: str | None = None) -> JobDefinition:
    """The job on its own, reconstructable in every step process (`build_reconstructable_job`
    with this module and function): settings from the environment, the lake root if given."""
    settings = load_settings()
    if lake_root is not None:
        settings = replace(settings, lake_root=lake_root)
    asset = build_scale_out_asset(synthetic_view(), settings)
    defs = Definitions(assets=[asset], jobs=[scale_out_asset_job(asset)], resources={"lake": lake_for(settings)})
    return defs.resolve_job_def(SCALE_JOB)


def scale_run_config(
    *, max_concurrent: int | None = None, buckets: int | None = None, max_events_per_bucket: int | None = None
) -> dict[str, Any]:
    """Run config of `synthetic_scale_job` under the multiprocess executor: how many steps at once,
    and how the day is cut (the cluster executors' run config is in deploy/)."""
    plan: dict[str, Any] = {}
    if buckets is not None:
        plan["buckets"] = buckets
    if max_events_per_bucket is not None:
        plan["max_events_per_bucket"] = max_events_per_bucket
    view = synthetic_view().name
    config: dict[str, Any] = {"ops": {view: {"ops": {f"{view}__plan_buckets": {"config": plan}}}}}
    # A forkserver that has imported this module forks each step ready to run: with `spawn` every
    # step process imports Dagster, polars and the project again (seconds per step on 2 cores).
    execution: dict[str, Any] = {"start_method": {"forkserver": {"preload_modules": [__name__]}}}
    if max_concurrent is not None:
        execution["max_concurrent"] = max_concurrent
    config["execution"] = {"config": execution}
    return config
