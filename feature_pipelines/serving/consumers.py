"""Feature-server consumers from the environment: each one's API key and access policy.

    FEATURE_PIPELINES_CONSUMERS='{"pricing": {"api_key_env": "PRICING_API_KEY", "exclude_pii": true,
                                              "allowed_views": ["route_delay_stats"]}}'

The configuration names the environment variable holding each key, never the key itself, so the
JSON can live in a deployment manifest while the keys come from a secret store. Errors name the
consumer and the variable, never a key's value. `exclude_pii` defaults to true.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from feature_pipelines.features.access import ConsumerPolicy

CONSUMERS_ENV_VAR = "FEATURE_PIPELINES_CONSUMERS"
_FIELDS = {"api_key_env", "exclude_pii", "allowed_views"}


class ConsumerConfigError(ValueError):
    """FEATURE_PIPELINES_CONSUMERS (or a key variable it names) is malformed or missing."""


@dataclass(frozen=True)
class ConsumerKey:
    """A consumer's policy and the key that authenticates it (kept out of repr, so out of logs)."""

    policy: ConsumerPolicy
    api_key: str = field(repr=False)

    def __post_init__(self) -> None:
        if not self.api_key:
            raise ConsumerConfigError(f"consumer {self.policy.name!r}: its API key is empty")


def _parse_one(name: str, entry: Any, environ: Mapping[str, str]) -> ConsumerKey:
    where = f"{CONSUMERS_ENV_VAR}: consumer {name!r}"
    if not isinstance(entry, dict):
        raise ConsumerConfigError(f"{where} must be an object, got {type(entry).__name__}")
    unknown = sorted(set(entry) - _FIELDS)
    if unknown:
        raise ConsumerConfigError(f"{where} has unknown field(s) {unknown}; known: {sorted(_FIELDS)}")
    key_var = entry.get("api_key_env")
    if not isinstance(key_var, str) or not key_var:
        raise ConsumerConfigError(f"{where} needs \"api_key_env\": the name of the variable holding its key")
    key = environ.get(key_var)
    if key is None or not key.strip():
        raise ConsumerConfigError(f"{where}: its key variable {key_var} is unset or empty")
    exclude_pii = entry.get("exclude_pii", True)
    if not isinstance(exclude_pii, bool):
        raise ConsumerConfigError(f"{where}: \"exclude_pii\" must be true or false, got {exclude_pii!r}")
    views = entry.get("allowed_views")
    if views is not None and (not isinstance(views, list) or not all(isinstance(v, str) for v in views)):
        raise ConsumerConfigError(f"{where}: \"allowed_views\" must be a list of view names, got {views!r}")
    policy = ConsumerPolicy(name=name, exclude_pii=exclude_pii,
                            allowed_views=tuple(views) if views is not None else None)
    return ConsumerKey(policy=policy, api_key=key)


def consumers_from_env(environ: Mapping[str, str] | None = None) -> list[ConsumerKey]:
    """The consumers configured in FEATURE_PIPELINES_CONSUMERS (none when it is unset)."""
    environ = os.environ if environ is None else environ
    raw = environ.get(CONSUMERS_ENV_VAR)
    if raw is None or not raw.strip():
        return []
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ConsumerConfigError(f"{CONSUMERS_ENV_VAR} is not valid JSON: {error}") from error
    if not isinstance(parsed, dict):
        raise ConsumerConfigError(
            f"{CONSUMERS_ENV_VAR} must be a JSON object of consumer name -> settings, got {type(parsed).__name__}"
        )
    consumers = [_parse_one(name, entry, environ) for name, entry in parsed.items()]
    check_distinct_keys(consumers)
    return consumers


def check_distinct_keys(consumers: Sequence[ConsumerKey], admin_key: str | None = None) -> None:
    """Refuse two identities sharing a key: a request could not be told apart, so a PII-excluded
    consumer might be served as one that is not. Names the identities, never the key."""
    owners: list[tuple[str, str]] = [(c.policy.name, c.api_key) for c in consumers]
    if admin_key is not None:
        owners.append(("<FEATURE_PIPELINES_API_KEY>", admin_key))
    for i, (first, key) in enumerate(owners):
        for second, other in owners[i + 1:]:
            if secrets.compare_digest(key.encode(), other.encode()):
                raise ConsumerConfigError(f"consumers {first!r} and {second!r} have the same API key; give each its own")
