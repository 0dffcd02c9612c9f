"""local, staging and prod differ only by the resources Definitions receive, chosen by
FEATURE_PIPELINES_ENV through `load_settings()`: same assets, checks, pools, jobs and schedules."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from dagster import Definitions

from feature_pipelines.definitions import build_definitions
from feature_pipelines.settings import ENVIRONMENTS, load_settings

LAKES = {"local": None, "staging": "s3://feature-pipelines-staging/lake", "prod": "s3://feature-pipelines-prod/lake"}


@dataclass(frozen=True)
class Shape:
    """Everything about a Definitions except its resources."""

    assets: frozenset[str]
    checks: frozenset[str]
    partitions: frozenset[tuple[str, str]]
    pools: frozenset[tuple[str, str | None]]
    jobs: frozenset[str]
    job_selections: frozenset[tuple[str, frozenset[str]]]
    schedules: frozenset[tuple[str, str, str, str]]


def shape(defs: Definitions) -> Shape:
    graph = defs.resolve_asset_graph()
    keys = graph.get_all_asset_keys()
    jobs = [job for job in defs.resolve_all_job_defs() if not job.name.startswith("__")]
    return Shape(
        assets=frozenset(key.to_user_string() for key in keys),
        checks=frozenset(check.to_user_string() for check in graph.asset_check_keys),
        partitions=frozenset((key.to_user_string(), repr(graph.get(key).partitions_def)) for key in keys),
        pools=frozenset((key.to_user_string(), defs.resolve_assets_def(key).node_def.pool) for key in keys),
        jobs=frozenset(job.name for job in jobs),
        job_selections=frozenset(
            (job.name, frozenset(key.to_user_string() for key in job.asset_layer.executable_asset_keys)) for job in jobs
        ),
        schedules=frozenset(
            (s.name, s.job_name, str(s.cron_schedule), str(s.execution_timezone))
            for s in defs.get_repository_def().schedule_defs
        ),
    )


def definitions_for(environment: str, monkeypatch: pytest.MonkeyPatch) -> Definitions:
    """What definitions.py does at import, with the environment the way a deployment sets it."""
    monkeypatch.setenv("FEATURE_PIPELINES_ENV", environment)
    monkeypatch.delenv("FEATURE_PIPELINES_REPLAY_START", raising=False)
    lake = LAKES[environment]
    if lake is None:
        monkeypatch.delenv("FEATURE_PIPELINES_LAKE_ROOT", raising=False)
        monkeypatch.delenv("FEATURE_PIPELINES_STORAGE_OPTIONS", raising=False)
    else:
        monkeypatch.setenv("FEATURE_PIPELINES_LAKE_ROOT", lake)
        # Staging and prod refuse to start without their storage options (read again at run time).
        monkeypatch.setenv("FEATURE_PIPELINES_STORAGE_OPTIONS", '{"AWS_REGION": "eu-west-1"}')
    settings = load_settings()
    assert settings.environment == environment
    return build_definitions(settings)


@pytest.fixture(scope="module")
def all_definitions() -> dict[str, Definitions]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        return {environment: definitions_for(environment, monkeypatch) for environment in ENVIRONMENTS}


def test_every_environment_has_the_same_assets_checks_jobs_and_schedules(all_definitions: dict[str, Definitions]) -> None:
    local = shape(all_definitions["local"])
    assert local.assets and local.checks and local.jobs and local.schedules  # not trivially equal
    for environment in ("staging", "prod"):
        other = shape(all_definitions[environment])
        for field in Shape.__dataclass_fields__:
            assert getattr(other, field) == getattr(local, field), f"{environment} differs from local in {field}"


def test_environments_differ_in_resources_only_by_their_values(all_definitions: dict[str, Definitions]) -> None:
    resources = {environment: defs.resources for environment, defs in all_definitions.items()}
    assert {frozenset(r) for r in resources.values()} == {frozenset(resources["local"])}  # same keys
    for environment in ENVIRONMENTS:
        redis, lake = resources[environment]["redis"], resources[environment]["lake"]
        assert redis.key_prefix == f"fp:{environment}"  # environments never share Redis keys
        if environment == "local":
            assert lake.storage_options_env_var is None and not lake.root.startswith("s3://")
        else:
            assert lake.root == LAKES[environment]
            # Object-store keys only at run time, from the environment, never in the definitions.
            assert lake.storage_options_env_var == "FEATURE_PIPELINES_STORAGE_OPTIONS"
    assert resources["staging"]["lake"].root != resources["prod"]["lake"].root


def test_an_unknown_environment_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEATURE_PIPELINES_ENV", "production")
    with pytest.raises(ValueError, match=r"FEATURE_PIPELINES_ENV must be one of .*'production'"):
        load_settings()
