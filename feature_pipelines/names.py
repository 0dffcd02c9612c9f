"""The names the whole platform shares: column names, internal lake tables, the online key prefix.

Each name is defined here once; a module that needs one imports it from here. This module imports
nothing, so the definition layer (`features/`, `compute/`) can use it without loading anything.
"""

from __future__ import annotations

# Columns every feature table carries.
EVENT_TIMESTAMP = "event_timestamp"  # the instant a feature row describes (windows end here)
CREATED_TIMESTAMP = "created_timestamp"  # when the feature asset wrote the row

# The pseudo-view of features computed in the request from stored ones.
ON_DEMAND_VIEW = "on_demand"

# Internal lake tables (the assets' own tables are named after their assets).
QUALITY_LEDGER_TABLE = "_quality/check_results"
FEATURE_LOG_TABLE = "_serving/feature_log"
PREDICTIONS_TABLE = "_serving/predictions"  # one row per scored entity row (models/predictions.py)
MODEL_REGISTRY_TABLE = "_models/registry"  # one row per registered model version (models/registry.py)
QUARANTINE_ROOT = "_quarantine"
LANDING_FILES_TABLE = f"{QUARANTINE_ROOT}/landing_files"
SKEW_TABLE = "monitoring/serving_skew"
SERVING_DRIFT_TABLE = "monitoring/serving_drift"
PARTITION_DRIFT_TABLE = "monitoring/feature_partition_drift"
MONITORING_TABLES = (SKEW_TABLE, SERVING_DRIFT_TABLE, PARTITION_DRIFT_TABLE)
STAGING_ROOT = "_staging/scale_out"  # scale-out bucket results: one table per (run, partition, bucket), removed after
INTERNAL_TABLES = (QUALITY_LEDGER_TABLE, FEATURE_LOG_TABLE, *MONITORING_TABLES)


def online_key_prefix(environment: str) -> str:
    """The Redis key prefix of an environment's online store: every writer and reader uses it, so a
    server of one environment never reads another's keys."""
    return f"fp:{environment}"
