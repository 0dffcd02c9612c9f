"""A synthetic day fanned out over entity buckets as Dagster steps writes exactly the one-process result.

The reference is `snapshot_features` over the whole source in this process; the job runs once
with the multiprocess executor (steps in their own processes, 2 at a time) and with 1, 3 and 8
buckets in one process, and the written partition must equal it row for row and bit for bit.
"""

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
import yaml
from dagster import DagsterEventType, DagsterInstance, build_reconstructable_job, execute_job, validate_run_config

from feature_pipelines.compute.snapshots import snapshot_features
from feature_pipelines.definitions import build_definitions
from feature_pipelines.names import EVENT_TIMESTAMP, STAGING_ROOT
from feature_pipelines.offline.delta_store import DeltaStore, TimeSlice
from feature_pipelines.orchestration import scale_out
from feature_pipelines.orchestration.concurrency import LAKE_WRITES_POOL
from feature_pipelines.orchestration.scale_out import (
    SCALE_EXECUTOR_VAR,
    SCALE_GROUP,
    SCALE_JOB,
    SCALE_OUT_VAR,
    ScaleOutExecutorError,
    scale_out_executor,
    scale_out_job,
    scale_run_config,
)
from feature_pipelines.settings import load_settings
from feature_pipelines.sources.synthetic import SYNTHETIC_TABLE, SyntheticEvents, synthetic_view, write_events
from feature_pipelines_tests.compute.test_engine_equivalence import assert_bit_identical

pytestmark = pytest.mark.dagster

VIEW = synthetic_view()
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
# Documented executor config keys (dagster-k8s `_K8S_EXECUTOR_CONFIG_SCHEMA` with its job config,
# dagster-docker `DOCKER_CONFIG_SCHEMA` + retries and limits), checked here as the packages are not installed.
CLUSTER_EXECUTOR_KEYS = {
    "k8s": {
        "job_namespace", "retries", "max_concurrent", "tag_concurrency_limits", "step_k8s_config", "per_step_k8s_config",
        "job_image", "image_pull_policy", "image_pull_secrets", "service_account_name", "env_config_maps", "env_secrets",
        "env_vars", "volume_mounts", "volumes", "labels", "resources", "scheduler_name", "security_context",
        "load_incluster_config", "kubeconfig_file",
    },
    "docker": {"image", "network", "networks", "registry", "env_vars", "container_kwargs", "retries", "max_concurrent",
               "tag_concurrency_limits"},
}  # fmt: skip
DAY = "2013-01-03"  # the third day: its 7-day windows read both days before it
START = datetime(2013, 1, 3, tzinfo=UTC)
END = START + timedelta(days=1)


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = str(tmp_path_factory.mktemp("scale_out") / "lake")
    write_events(DeltaStore(root), SyntheticEvents(events=50_000, entities=2_000, days=3, seed=7), chunk_rows=10_000)
    return root


@pytest.fixture(scope="module")
def expected(lake: str) -> pl.DataFrame:
    """The whole day in one process, from every event of the source."""
    return snapshot_features(DeltaStore(lake).read(SYNTHETIC_TABLE), VIEW, start=START, end=END)


def written(lake: str) -> pl.DataFrame:
    return DeltaStore(lake).read(VIEW.name, time_slice=TimeSlice(EVENT_TIMESTAMP, START, END, closed="right"))


def staged_runs(lake: str) -> list[str]:
    folder = Path(lake, STAGING_ROOT, VIEW.name, DAY)
    return sorted(os.listdir(folder)) if folder.exists() else []


def test_bucket_steps_in_separate_processes_write_the_one_process_result(
    lake: str, expected: pl.DataFrame, tmp_path: Path
) -> None:
    job = build_reconstructable_job(scale_out.__name__, scale_out_job.__name__, reconstructable_kwargs={"lake_root": lake})
    with DagsterInstance.local_temp(tempdir=str(tmp_path)) as instance:
        result = execute_job(
            job, instance=instance, run_config=scale_run_config(max_concurrent=2, buckets=3),
            tags={"dagster/partition": DAY}, raise_on_error=True,
        )  # fmt: skip
        assert result.success
        bucket_steps = {
            event.step_key: event.pid
            for event in result.all_events
            if event.event_type is DagsterEventType.STEP_START and "compute_bucket" in (event.step_key or "")
        }
    assert len(bucket_steps) == 3  # one step per bucket ...
    assert os.getpid() not in bucket_steps.values()  # ... each out of this process
    assert len(set(bucket_steps.values())) == 3
    assert_bit_identical(written(lake), expected)
    assert staged_runs(lake) == []  # a local lake's staging tables go when the partition is written


@pytest.mark.parametrize("buckets", [1, 3, 8])
def test_any_bucket_count_in_one_process_writes_the_same_partition(lake: str, expected: pl.DataFrame, buckets: int) -> None:
    result = scale_out_job(lake_root=lake).execute_in_process(run_config=scale_run_config(buckets=buckets), partition_key=DAY)
    steps = {event.step_key for event in result.all_events if event.event_type is DagsterEventType.STEP_SUCCESS}
    assert sum("compute_bucket" in key for key in steps) == buckets
    assert_bit_identical(written(lake), expected)


def test_buckets_are_sized_from_the_partitions_history(lake: str, expected: pl.DataFrame) -> None:
    """Unforced, a day reading ~50k events with 12k events a bucket is cut into 5 buckets."""
    result = scale_out_job(lake_root=lake).execute_in_process(
        run_config=scale_run_config(max_events_per_bucket=12_000), partition_key=DAY
    )
    steps = {event.step_key for event in result.all_events if event.event_type is DagsterEventType.STEP_SUCCESS}
    assert sum("compute_bucket" in key for key in steps) == 5
    assert_bit_identical(written(lake), expected)


def test_the_scale_group_is_only_wired_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo has no synthetic table: its Definitions stay as they were unless the setting is on."""
    settings = load_settings()
    monkeypatch.delenv(SCALE_OUT_VAR, raising=False)
    plain = build_definitions(settings)
    assert SCALE_GROUP not in {plain.resolve_assets_def(key).group_names_by_key[key]
                               for key in plain.resolve_asset_graph().get_all_asset_keys()}
    monkeypatch.setenv(SCALE_OUT_VAR, "1")
    wired = build_definitions(settings)
    job = wired.resolve_job_def(SCALE_JOB)
    assert job.executor_def.name == "multiprocess"
    assert {key.to_user_string() for key in job.asset_layer.executable_asset_keys} == {VIEW.name}
    write_step = wired.resolve_assets_def(VIEW.name).node_def.node_named(f"{VIEW.name}__write_partition")
    assert write_step.definition.pool == LAKE_WRITES_POOL  # the one step writing the shared table


def test_the_cluster_executors_are_named_by_setting_and_never_needed_here() -> None:
    assert scale_out_executor({}).name == "multiprocess"
    with pytest.raises(ScaleOutExecutorError, match="needs the package dagster-k8s"):
        scale_out_executor({SCALE_EXECUTOR_VAR: "k8s"})  # not installed here: a clear error, not an ImportError
    with pytest.raises(ScaleOutExecutorError, match="choose one of"):
        scale_out_executor({SCALE_EXECUTOR_VAR: "kubernetes"})


@pytest.mark.parametrize("executor", ["k8s", "docker"])
def test_the_deploy_run_configs_configure_the_same_job(executor: str, tmp_path: Path) -> None:
    """deploy/scale_out.<executor>.run.yaml: only the executor's documented keys, and op config
    this job accepts (checked against the job itself; the executor part needs its package)."""
    config = yaml.safe_load((DEPLOY / f"scale_out.{executor}.run.yaml").read_text())
    execution = config["execution"]["config"]
    assert set(execution) <= CLUSTER_EXECUTOR_KEYS[executor]
    assert execution["max_concurrent"] >= 2
    validate_run_config(scale_out_job(lake_root=str(tmp_path)), {"ops": config["ops"]})
