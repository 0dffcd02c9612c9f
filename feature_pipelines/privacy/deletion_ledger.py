"""The deletion ledger (`_privacy/deletions`, Delta): every entity forgotten, what was erased, and where.

Two rows per forget: `requested` before anything is erased (from then on raw assets leave the
entity out, so a backfill running meanwhile cannot bring it back) and `completed` after, with the
tables touched (rows deleted, versions before and after, files vacuumed) and the Redis keys
deleted. A forget that fails half way leaves its `requested` row: the entity is kept out, and a
re-run erases what is left.

The ledger keeps the entity's key value itself: it is the list raw loads are filtered by (a
suppression list), the one place the value is meant to remain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import polars as pl

from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.privacy.entity import ForgetTarget
from feature_pipelines.privacy.lake_erasure import TableErasure
from feature_pipelines.timeutil import require_utc

DELETIONS_TABLE = "_privacy/deletions"
REQUESTED, COMPLETED = "requested", "completed"
_TABLES_TYPE = pl.List(pl.Struct({
    "table": pl.String, "rows_deleted": pl.Int64, "version_before": pl.Int64, "version_after": pl.Int64,
    "files_vacuumed": pl.Int64,
}))
SCHEMA: dict[str, pl.DataType] = {
    "deletion_id": pl.String(),
    "entity_key": pl.String(),
    "entity_value": pl.String(),
    "status": pl.String(),
    "requested_at": pl.Datetime("us", "UTC"),
    "recorded_at": pl.Datetime("us", "UTC"),
    "retention_hours": pl.Int64(),
    "tables": _TABLES_TYPE,
    "redis_keys": pl.List(pl.String),
}


@dataclass(frozen=True)
class DeletionLedger:
    store: DeltaStore

    def record(
        self, deletion_id: str, target: ForgetTarget, *, status: str, requested_at: datetime, recorded_at: datetime,
        retention_hours: int, tables: Sequence[TableErasure] = (), redis_keys: Sequence[str] = (),
    ) -> int:
        """Append one row (a `requested` or `completed` step of a forget); returns the ledger's version."""
        if status not in (REQUESTED, COMPLETED):
            raise ValueError(f"deletion ledger: status must be {REQUESTED!r} or {COMPLETED!r}, got {status!r}")
        row = {
            "deletion_id": deletion_id, "entity_key": target.key, "entity_value": target.value, "status": status,
            "requested_at": require_utc(requested_at, "requested_at"), "recorded_at": require_utc(recorded_at, "recorded_at"),
            "retention_hours": retention_hours,
            "tables": [{"table": t.table, "rows_deleted": t.rows_deleted, "version_before": t.version_before,
                        "version_after": t.version_after, "files_vacuumed": t.files_vacuumed} for t in tables],
            "redis_keys": list(redis_keys),
        }
        frame = pl.DataFrame([row], schema=SCHEMA)
        return self.store.append(DELETIONS_TABLE, frame, commit_metadata={"deletion_id": deletion_id, "status": status})

    def entries(self) -> pl.DataFrame:
        if not self.store.exists(DELETIONS_TABLE):
            return pl.DataFrame(schema=SCHEMA)
        return self.store.read(DELETIONS_TABLE)

    def forgotten(self) -> list[ForgetTarget]:
        """Every entity a forget was requested for (completed or not), in request order."""
        entries = self.entries().sort("requested_at")
        pairs = entries.select("entity_key", "entity_value").unique(maintain_order=True).iter_rows()
        return [ForgetTarget(key, value) for key, value in pairs]


def forgotten_filter(targets: Sequence[ForgetTarget], schema: pl.Schema) -> pl.Expr:
    """Rows of any forgotten entity a table of `schema` can hold (False when it holds none)."""
    parts = [target.polars_filter(schema) for target in targets if target.applies_to(list(schema))]
    return pl.any_horizontal(parts) if parts else pl.lit(False)


def drop_forgotten(frame: pl.DataFrame, targets: Sequence[ForgetTarget]) -> tuple[pl.DataFrame, int]:
    """The frame without the forgotten entities' rows, and how many rows that left out."""
    if not targets or frame.height == 0:
        return frame, 0
    forgotten = forgotten_filter(targets, frame.schema)
    kept = frame.filter(~forgotten)
    return kept, frame.height - kept.height
