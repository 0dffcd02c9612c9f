"""Pools protect Redis and the lake: every publish asset is in the online-store pool, every asset
that writes Delta in the lake pool, and every deploy yaml bounds every pool and the backfill runs.
The local and PostgreSQL yamls load as real instances; the Kubernetes and Docker ones (whose
launcher packages are not installed here) pass Dagster's instance schema and their launcher
config is checked against the documented keys."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster import DagsterInstance, DagsterRun, DagsterRunStatus
from dagster._core.instance.config import dagster_instance_config
from dagster._core.utils import make_new_run_id

from feature_pipelines.definitions import defs
from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.orchestration.concurrency import (
    BACKFILL_TAG,
    DEFAULT_POOL_LIMIT,
    LAKE_WRITES_POOL,
    ONLINE_STORE_POOL,
    ONLINE_STORE_RUN_TAG,
    POOL_LIMITS,
    RUN_TAG_LIMITS,
    RunTagLimit,
    apply_pool_limits,
    release_slots_of_ended_runs,
    run_tags_for_assets,
)
from feature_pipelines.orchestration.publish_assets import publish_asset_name
from feature_pipelines.orchestration.runs import materialize_range
from feature_pipelines.orchestration.schedules import DIMENSIONS_JOB
from feature_pipelines_tests.conftest import make_pipeline
from feature_pipelines_tests.deploy.conftest import DEPLOY, PostgresHome

DEPLOY_YAMLS = ("dagster.local.yaml", "dagster.postgres.yaml", "dagster.k8s.yaml", "dagster.docker.yaml")


@pytest.fixture(autouse=True)
def home_is_the_test_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's instance lives in its tmp dir, as DAGSTER_HOME: the local yaml's event log
    storage places its files under $DAGSTER_HOME/history/runs, as Dagster's default does."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))

# Documented config keys (dagster-k8s DagsterK8sJobConfig.config_type_run_launcher, dagster-docker
# DOCKER_CONFIG_SCHEMA), checked here since the packages are not installed in this environment.
K8S_LAUNCHER_KEYS = {
    "job_image", "image_pull_policy", "image_pull_secrets", "service_account_name", "env_config_maps",
    "env_secrets", "env_vars", "volume_mounts", "volumes", "labels", "resources", "scheduler_name",
    "security_context", "instance_config_map", "postgres_password_secret", "dagster_home",
    "load_incluster_config", "kubeconfig_file", "fail_pod_on_run_failure", "run_k8s_config", "job_namespace",
    "only_allow_user_defined_k8s_config_fields", "only_allow_user_defined_env_vars",
}
K8S_RUN_CONFIG_KEYS = {
    "container_config", "pod_template_spec_metadata", "pod_spec_config", "job_config", "job_metadata", "job_spec_config",
}
DOCKER_LAUNCHER_KEYS = {"image", "network", "networks", "registry", "env_vars", "container_kwargs"}
DOCKER_FORBIDDEN_CONTAINER_KWARGS = {"image", "environment", "network"}  # rejected by dagster-docker


def load_yaml(name: str) -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / name).read_text())


def pool_of(asset_name: str) -> str | None:
    return defs.resolve_assets_def(asset_name).node_def.pool


def delta_writing_assets() -> set[str]:
    """Assets that write Delta: declared with the `delta` kind or stored by the Delta IO manager,
    found from the definitions, not from a list."""
    names = set()
    for key in defs.resolve_asset_graph().get_all_asset_keys():
        assets_def = defs.resolve_assets_def(key)
        output = assets_def.node_def.output_def_named(assets_def.get_output_name_for_asset_key(key))
        if "delta" in assets_def.specs_by_key[key].kinds or output.io_manager_key == "delta_io_manager":
            names.add(key.to_user_string())
    return names


def test_every_publish_asset_is_in_the_online_store_pool() -> None:
    for view in FEATURE_VIEWS.values():
        assert pool_of(publish_asset_name(view)) == ONLINE_STORE_POOL, view.name


def test_every_asset_writing_the_lake_is_in_the_lake_pool() -> None:
    writers = delta_writing_assets()
    assert {"raw_flights", "raw_weather", "raw_planes", "flight_delay_labels", "flight_delay_training_set", *FEATURE_VIEWS,
            "serving_skew", "serving_drift", "feature_partition_drift"} <= writers
    for name in sorted(writers):
        assert pool_of(name) == LAKE_WRITES_POOL, f"{name} writes Delta but is in pool {pool_of(name)!r}, not {LAKE_WRITES_POOL!r}"


def test_every_pool_named_in_code_is_declared_with_a_limit() -> None:
    declared = {limit.pool for limit in POOL_LIMITS}
    used = {pool_of(key.to_user_string()) for key in defs.resolve_asset_graph().get_all_asset_keys()} - {None}
    assert used == declared  # no undeclared pool, and no declared pool that nothing uses


@pytest.mark.parametrize("name", DEPLOY_YAMLS)
def test_each_deploy_yaml_bounds_every_pool_and_backfills(name: str) -> None:
    concurrency = load_yaml(name)["concurrency"]
    assert "default_op_concurrency_limit" not in concurrency  # deprecated, and excludes `pools`
    pools = concurrency["pools"]
    assert pools["granularity"] == "op"
    # The default is what any pool gets until its own limit is applied: never looser than declared.
    assert pools["default_limit"] == DEFAULT_POOL_LIMIT
    for limit in POOL_LIMITS:
        assert 0 < pools["default_limit"] <= limit.limit, limit.pool
    entries = concurrency["runs"]["tag_concurrency_limits"]
    keyed = {(entry["key"], repr(entry.get("value"))): entry["limit"] for entry in entries}
    for declared in RUN_TAG_LIMITS:
        wanted = declared.as_instance_config()
        found = keyed.get((wanted["key"], repr(wanted.get("value"))))
        assert found is not None, f"{name}: no run limit for {wanted}"
        assert 0 < found <= declared.limit, f"{name}: run limit {wanted} is {found}, declared {declared.limit}"
    assert concurrency["runs"]["max_concurrent_runs"] > 0


@pytest.mark.parametrize("name", DEPLOY_YAMLS)
def test_each_deploy_yaml_passes_dagsters_instance_schema(name: str, tmp_path: Path) -> None:
    shutil.copyfile(DEPLOY / name, tmp_path / "dagster.yaml")
    config, _ = dagster_instance_config(str(tmp_path))  # raises DagsterInvalidConfigError on any bad key
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"


def test_the_local_yaml_loads_as_a_real_instance_that_enforces_pools(tmp_path: Path) -> None:
    shutil.copyfile(DEPLOY / "dagster.local.yaml", tmp_path / "dagster.yaml")
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        config = instance.get_concurrency_config()
        assert config.pool_config.default_pool_limit == DEFAULT_POOL_LIMIT
        assert apply_pool_limits(instance) == {limit.pool: limit.limit for limit in POOL_LIMITS}


def test_a_real_run_on_the_local_instance_claims_and_returns_its_pool_slots(tmp_path: Path, small_landing_root: Path) -> None:
    """The demo's path: in-process runs on the SQLite instance go through the pools."""
    shutil.copyfile(DEPLOY / "dagster.local.yaml", tmp_path / "dagster.yaml")
    pipeline = make_pipeline(tmp_path, small_landing_root)
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        run = materialize_range(pipeline.defs, DIMENSIONS_JOB, "", "", instance=instance)
        assert run.result.success
        info = instance.event_log_storage.get_concurrency_info(LAKE_WRITES_POOL)
        # The pool was created at its default on first claim and every slot is free again.
        assert (info.slot_count, info.active_slot_count) == (DEFAULT_POOL_LIMIT, 0)
        assert instance.event_log_storage.get_concurrency_info(ONLINE_STORE_POOL).slot_count == 0  # never used

        # A step killed mid-run leaves its slot claimed after its run ended: released before a backfill,
        # while the slot of a run still in progress is kept.
        storage = instance.event_log_storage
        storage.claim_concurrency_slot(LAKE_WRITES_POOL, run.result.run_id, "raw_planes")
        live = instance.add_run(DagsterRun(job_name=DIMENSIONS_JOB, run_id=make_new_run_id(), status=DagsterRunStatus.STARTED))
        storage.claim_concurrency_slot(LAKE_WRITES_POOL, live.run_id, "raw_airports")
        assert release_slots_of_ended_runs(instance) == [run.result.run_id]
        assert [slot.run_id for slot in storage.get_concurrency_info(LAKE_WRITES_POOL).claimed_slots] == [live.run_id]


def test_the_apply_command_sets_the_declared_limits(tmp_path: Path) -> None:
    shutil.copyfile(DEPLOY / "dagster.local.yaml", tmp_path / "dagster.yaml")
    result = subprocess.run(
        [sys.executable, "-m", "feature_pipelines.orchestration.concurrency", "apply"],
        env={**os.environ, "DAGSTER_HOME": str(tmp_path)}, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        for limit in POOL_LIMITS:
            assert instance.event_log_storage.get_concurrency_info(limit.pool).slot_count == limit.limit
            assert f"pool {limit.pool}: limit {limit.limit}" in result.stdout


def test_the_postgres_yaml_loads_as_a_real_instance_with_the_declared_limits(postgres_home: PostgresHome) -> None:
    with DagsterInstance.get() as instance:
        config = instance.get_concurrency_config()
        assert config.pool_config.default_pool_limit == DEFAULT_POOL_LIMIT
        declared = [limit.as_instance_config() for limit in RUN_TAG_LIMITS]
        assert list(config.run_queue_config.tag_concurrency_limits) == declared


def test_the_kubernetes_yaml_configures_the_k8s_run_launcher() -> None:
    launcher = load_yaml("dagster.k8s.yaml")["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_k8s", "K8sRunLauncher")
    config = launcher["config"]
    assert set(config) <= K8S_LAUNCHER_KEYS, set(config) - K8S_LAUNCHER_KEYS
    assert config["instance_config_map"]  # required by K8sRunLauncher
    assert set(config["run_k8s_config"]) <= K8S_RUN_CONFIG_KEYS
    assert "job_image" not in config  # runs use their code location's image


def test_the_docker_yaml_configures_the_docker_run_launcher() -> None:
    launcher = load_yaml("dagster.docker.yaml")["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_docker", "DockerRunLauncher")
    config = launcher["config"]
    assert set(config) <= DOCKER_LAUNCHER_KEYS, set(config) - DOCKER_LAUNCHER_KEYS
    assert not ("network" in config and "networks" in config)
    assert not set(config.get("container_kwargs", {})) & DOCKER_FORBIDDEN_CONTAINER_KWARGS
    assert all("=" not in name for name in config["env_vars"])  # names only: values never in the file


@pytest.mark.parametrize("name", DEPLOY_YAMLS)
def test_no_deploy_yaml_holds_a_secret(name: str) -> None:
    storage = load_yaml(name).get("storage")
    if storage is None:  # local: SQLite under DAGSTER_HOME
        return
    password = storage["postgres"]["postgres_db"]["password"]
    assert password == {"env": "DAGSTER_PG_PASSWORD"}


def test_run_tags_mark_jobs_that_publish_to_redis() -> None:
    publishers = [publish_asset_name(view) for view in FEATURE_VIEWS.values()]
    assert run_tags_for_assets(["origin_weather", publishers[0]], publishers) == {ONLINE_STORE_RUN_TAG: "true"}
    assert run_tags_for_assets(["raw_flights"], publishers) == {}


def test_a_run_tag_limit_takes_a_value_or_per_value_not_both() -> None:
    assert RunTagLimit(BACKFILL_TAG, 4, per_unique_value=True).as_instance_config() == {
        "key": BACKFILL_TAG, "limit": 4, "value": {"applyLimitPerUniqueValue": True}
    }
    with pytest.raises(ValueError, match="dagster/backfill"):
        RunTagLimit(BACKFILL_TAG, 4, value="x", per_unique_value=True).as_instance_config()
