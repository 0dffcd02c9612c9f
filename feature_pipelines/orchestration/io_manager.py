"""Delta IO manager: writes each run's partition range atomically and reads upstream windows that
Dagster's partition mappings chose, so trailing windows never rely on hidden reads.

A plain input refuses a range with a never-materialised or failed partition. An input declared
with PER_PARTITION_READINESS is loaded as it is, and its asset refuses exactly the partitions
that depend on what is missing (orchestration.upstream)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC

import polars as pl
from dagster import (
    AssetKey,
    ConfigurableIOManager,
    DagsterInstance,
    InputContext,
    MetadataValue,
    OutputContext,
    TableColumn,
    TableSchema,
)

from feature_pipelines.offline.delta_store import DeltaStore, TimeSlice
from feature_pipelines.plan.record import commit_metadata_of
from feature_pipelines.quality.ledger import QualityLedger
from feature_pipelines.resources import LakeResource

# AssetIn metadata: the asset refuses its partitions one by one (orchestration.upstream), so the
# IO manager loads whatever of the range is there instead of refusing the whole range.
PER_PARTITION_READINESS = "feature_pipelines/per_partition_readiness"

TIME_COLUMN_KEY = "partition_time_column"
CLOSED_KEY = "partition_time_closed"


def table_name(asset_key_path: list[str]) -> str:
    return "/".join(asset_key_path)


def _definition_value(metadata: dict, key: str, default: str | None = None) -> str | None:
    value = metadata.get(key, default)
    return getattr(value, "value", value)


def table_schema(frame: pl.DataFrame) -> TableSchema:
    return TableSchema(columns=[TableColumn(name, str(dtype)) for name, dtype in frame.schema.items()])


class DeltaPolarsIOManager(ConfigurableIOManager):
    """Stores polars frames as Delta tables under the lake; one table per asset key."""

    lake: LakeResource
    allow_failed_checks: bool = False  # True reads partitions whose latest blocking check failed

    def _store(self) -> DeltaStore:
        return self.lake.store()

    def _slice(self, context: InputContext | OutputContext, metadata: dict) -> TimeSlice | None:
        if not context.has_asset_partitions:
            return None
        column = _definition_value(metadata, TIME_COLUMN_KEY)
        if column is None:
            raise ValueError(f"asset {context.asset_key.to_user_string()} is partitioned but declares no {TIME_COLUMN_KEY}")
        window = context.asset_partitions_time_window
        return TimeSlice(
            column=column,
            start=window.start.astimezone(UTC),
            end=window.end.astimezone(UTC),
            closed=_definition_value(metadata, CLOSED_KEY, "left") or "left",
        )

    def handle_output(self, context: OutputContext, obj: pl.DataFrame) -> None:
        table = table_name(context.asset_key.path)
        time_slice = self._slice(context, context.definition_metadata or {})
        store = self._store()
        version = store.write(
            table,
            obj,
            time_slice=time_slice,
            commit_metadata={
                "dagster_run_id": context.run_id,
                "partition_window": time_slice.describe() if time_slice else "all",
                **commit_metadata_of(context.output_metadata),
            },
        )
        context.add_output_metadata(
            {
                "delta_version": version,
                "delta_table_uri": MetadataValue.path(store.table_uri(table)),
                "dagster/row_count": obj.height,
                "dagster/column_schema": table_schema(obj),
                "partition_window": time_slice.describe() if time_slice else "whole table",
            }
        )

    def load_input(self, context: InputContext) -> pl.DataFrame:
        upstream = context.upstream_output
        if upstream is None:
            raise ValueError(f"input {context.name} has no upstream asset to read")
        table = table_name(context.asset_key.path)
        time_slice = self._slice(context, upstream.definition_metadata or {})
        store = self._store()
        judged_per_partition = bool(_definition_value(context.definition_metadata or {}, PER_PARTITION_READINESS, None))
        if time_slice is not None and not judged_per_partition:
            require_ready(context.instance, store, table, context.asset_partition_keys, time_slice,
                          reader=f"input {context.name!r} of step {context.step_context.step.key!r}",
                          allow_failed_checks=self.allow_failed_checks)
        return store.read(table, time_slice=time_slice)


def require_ready(
    instance: DagsterInstance, store: DeltaStore, table: str, keys: Sequence[str], time_slice: TimeSlice, *,
    reader: str, allow_failed_checks: bool = False,
) -> None:
    """Refuse to read partitions `keys` of `table` unless each is materialised and (unless
    `allow_failed_checks`) its latest blocking checks passed."""
    require_materialized(instance, table, keys, time_slice)
    if not allow_failed_checks:
        QualityLedger(store).require_passed(table, sorted(keys), reader=reader)


def require_materialized(instance: DagsterInstance, table: str, keys: Sequence[str], time_slice: TimeSlice) -> None:
    """A trailing window over upstream partitions that were never materialised would silently
    compute features from partial history; refuse, naming the partitions to backfill first."""
    needed = set(keys)
    materialized = instance.get_materialized_partitions(AssetKey(table.split("/")))
    missing = sorted(needed - materialized)
    if missing:
        raise UpstreamNotMaterializedError(
            f"table {table!r}: {len(missing)} of the {len(needed)} partitions this run reads "
            f"({time_slice.describe()}) were never materialised, first {missing[0]}, last {missing[-1]}; "
            f"backfill {table!r} over that range first"
        )


class UpstreamNotMaterializedError(RuntimeError):
    """An upstream partition in a run's input window has no materialisation."""
