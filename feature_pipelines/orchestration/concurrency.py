"""Concurrency pools and run-tag limits: how many steps may write Redis or the lake at once.

A large backfill launched as many runs (one per partition or chunk, each in its own container)
would otherwise open as many Redis pipelines and Delta commits as the cluster has pods. Assets
name a pool (`pool=` on their decorator); the instance (`deploy/dagster.*.yaml`) bounds every pool
with `concurrency.pools.default_limit` and bounds runs by tag; `apply_pool_limits` then sets each
pool's own limit in the instance storage (what `dagster instance concurrency set` does), since
dagster.yaml has no per-pool limits.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dagster import DagsterInstance

ONLINE_STORE_POOL = "online_store"
LAKE_WRITES_POOL = "lake_writes"

# Run tags. `dagster/backfill` is set by Dagster on every run a backfill launches; the online-store
# tag is meant for jobs that publish to Redis (see `run_tags_for_assets`).
BACKFILL_TAG = "dagster/backfill"
ONLINE_STORE_RUN_TAG = "feature_pipelines/online_store"


@dataclass(frozen=True)
class PoolLimit:
    """At most `limit` steps of assets in `pool` execute at once, across all runs."""

    pool: str
    limit: int
    protects: str


@dataclass(frozen=True)
class RunTagLimit:
    """At most `limit` runs carrying tag `key` (= `value`, or per distinct value) are in progress."""

    key: str
    limit: int
    value: str | None = None
    per_unique_value: bool = False

    def as_instance_config(self) -> dict[str, Any]:
        """The entry of `concurrency.runs.tag_concurrency_limits` in dagster.yaml."""
        if self.value is not None and self.per_unique_value:
            raise ValueError(f"run tag limit on {self.key!r}: give a value or per_unique_value, not both")
        entry: dict[str, Any] = {"key": self.key, "limit": self.limit}
        if self.value is not None:
            entry["value"] = self.value
        elif self.per_unique_value:
            entry["value"] = {"applyLimitPerUniqueValue": True}
        return entry


POOL_LIMITS: tuple[PoolLimit, ...] = (
    # Publishes pipeline HSETs through a Lua script; two at once keep Redis latency for serving flat.
    PoolLimit(ONLINE_STORE_POOL, 2, "the Redis online store that also serves live requests"),
    # Each lake write is one Delta commit on its own table; four bound memory and object-store load.
    PoolLimit(LAKE_WRITES_POOL, 4, "Delta Lake writes (raw, feature and training tables)"),
)

# The instance's default applies to any pool without its own limit (a fresh instance before
# `apply_pool_limits`, or a pool added to code later): the strictest declared limit, so an
# instance that was never set up is too careful rather than too loose.
DEFAULT_POOL_LIMIT = min(limit.limit for limit in POOL_LIMITS)

RUN_TAG_LIMITS: tuple[RunTagLimit, ...] = (
    RunTagLimit(BACKFILL_TAG, limit=8),  # all backfills together: leaves room for scheduled runs
    RunTagLimit(BACKFILL_TAG, limit=4, per_unique_value=True),  # one backfill cannot take all eight
    RunTagLimit(ONLINE_STORE_RUN_TAG, limit=2, value="true"),  # runs that publish to Redis
)


def pool_limits_by_name() -> dict[str, int]:
    return {limit.pool: limit.limit for limit in POOL_LIMITS}


def run_tags_for_assets(asset_names: Sequence[str], publish_asset_names: Sequence[str]) -> dict[str, str]:
    """Run tags for a job over `asset_names`: the online-store tag when it publishes to Redis."""
    return {ONLINE_STORE_RUN_TAG: "true"} if set(asset_names) & set(publish_asset_names) else {}


def apply_pool_limits(instance: DagsterInstance, limits: Sequence[PoolLimit] = POOL_LIMITS) -> dict[str, int]:
    """Set each pool's slot count in the instance storage; returns the limits as stored.

    Idempotent: re-running sets the same counts. Fails, naming the storage, on an instance that
    cannot enforce pools (in-memory, or SQLite without the concurrency tables).
    """
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        raise RuntimeError(
            f"instance storage {type(storage).__name__} cannot enforce concurrency pools; "
            "use the PostgreSQL instance (deploy/dagster.postgres.yaml) or migrate the SQLite one "
            "(`dagster instance migrate`)"
        )
    for limit in limits:
        storage.set_concurrency_slots(limit.pool, limit.limit)
    return {limit.pool: instance.event_log_storage.get_concurrency_info(limit.pool).slot_count for limit in limits}


def release_slots_of_ended_runs(instance: DagsterInstance) -> list[str]:
    """Free the pool slots still claimed by runs that have ended; returns those runs' ids.

    A run frees its slots as its steps finish. A run killed mid-step (the UI or its daemon
    stopped, a container evicted) is later marked failed, but its claimed slots stay, and every
    later step of that pool waits for them forever. A run in a finished status runs no step, so
    its slots are free by definition: releasing them changes nothing for a live run.
    """
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    holders = {slot.run_id for pool in storage.get_concurrency_keys()
               for slot in storage.get_concurrency_info(pool).claimed_slots}
    ended = [run_id for run_id in sorted(holders)
             if (run := instance.get_run_by_id(run_id)) is None or run.is_finished]
    for run_id in ended:
        storage.free_concurrency_slots_for_run(run_id)
    return ended


def main(argv: Sequence[str]) -> int:
    """`python -m feature_pipelines.orchestration.concurrency apply`: set the pool limits on the
    instance in DAGSTER_HOME (a deploy step, run once per instance and after limits change)."""
    if list(argv) != ["apply"]:
        print("usage: python -m feature_pipelines.orchestration.concurrency apply", file=sys.stderr)
        return 2
    with DagsterInstance.get() as instance:
        for pool, slots in apply_pool_limits(instance).items():
            print(f"pool {pool}: limit {slots}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
