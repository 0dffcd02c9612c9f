"""Forget one entity: erase it from every Delta table and Redis, record it in the deletion ledger,
and say which pinned training sets can no longer be rebuilt."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import redis

from feature_pipelines.features.spec import FeatureView
from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.privacy.absence import AbsenceProof, prove_absence
from feature_pipelines.privacy.deletion_ledger import COMPLETED, DELETIONS_TABLE, REQUESTED, DeletionLedger
from feature_pipelines.privacy.entity import ForgetTarget
from feature_pipelines.privacy.lake_erasure import (
    DEFAULT_FORGET_RETENTION_HOURS,
    RetainedVersions,
    TableErasure,
    delete_entity_rows,
    retained_versions,
    table_schema,
    vacuum,
)
from feature_pipelines.privacy.online_erasure import OnlineErasure, erase_online
from feature_pipelines.privacy.pins import PinVerdict, count_pinned_rows, judge_pins, training_set_pins
from feature_pipelines.quality.quarantine import rows_table


@dataclass(frozen=True)
class LakeScope:
    """The tables a forget searches: the platform's lake tables and their quarantines, and per
    training set the tables it is built from (for the pins' verdicts)."""

    tables: tuple[str, ...]
    training_reads: Mapping[str, Sequence[str]]

    @classmethod
    def of(cls, lake_tables: Sequence[str], training_reads: Mapping[str, Sequence[str]]) -> LakeScope:
        quarantined = [rows_table(table) for table in lake_tables if not table.startswith("_")]
        tables = tuple(t for t in dict.fromkeys([*lake_tables, *quarantined]) if t != DELETIONS_TABLE)
        return cls(tables, training_reads)


@dataclass(frozen=True)
class ForgetReport:
    deletion_id: str
    target: ForgetTarget
    retention_hours: int
    tables: tuple[TableErasure, ...]
    versions_lost: Mapping[str, int]
    online: OnlineErasure | None
    pins: tuple[PinVerdict, ...]
    proofs: tuple[AbsenceProof, ...]

    @property
    def proven(self) -> bool:
        """Whether no retained version of any table touched still holds the entity."""
        return all(proof.passed for proof in self.proofs)

    @property
    def rows_deleted(self) -> int:
        return sum(t.rows_deleted for t in self.tables)

    def summary(self) -> str:
        lines = [f"forgot {self.target.describe()} (deletion {self.deletion_id}, recorded in {DELETIONS_TABLE})"]
        width = max([len(t.table) for t in self.tables] + [5])
        lines.append(f"  {'table':<{width}}  rows deleted  versions   files vacuumed  versions no longer readable")
        for t in self.tables:
            versions = f"{t.version_before} -> {t.version_after}"
            lines.append(f"  {t.table:<{width}}  {t.rows_deleted:>12}  {versions:<9}  {t.files_vacuumed:>14}  "
                         f"{self.versions_lost.get(t.table, 0):>27}")
        lines.append(f"  {self.rows_deleted} rows deleted from {sum(1 for t in self.tables if t.rows_deleted)} of "
                     f"{len(self.tables)} tables that can hold {self.target.key}; VACUUM at {self.retention_hours} h retention")
        if self.online is None:
            lines.append("  redis: skipped (--no-redis)")
        else:
            shown = ", ".join(self.online.keys[:4]) + (f", and {len(self.online.keys) - 4} more" if len(self.online.keys) > 4 else "")
            lines.append(f"  redis: {len(self.online.keys)} keys deleted{': ' + shown if shown else ''}; "
                         f"{self.online.stream_entries} stream entries removed")
        versions = sum(len(p.versions_checked) for p in self.proofs)
        if self.proven:
            lines.append(f"  proof: absent from all {versions} retained versions of the {len(self.proofs)} tables")
        for proof in self.proofs:
            if not proof.passed:
                lines.append(f"  NOT PROVEN: {proof.message()}")
        if not self.pins:
            lines.append("  pinned training sets: none")
        for verdict in self.pins:
            lines.append(f"  pinned: {verdict.describe()}")
        return "\n".join(lines)


def forget(
    store: DeltaStore,
    target: ForgetTarget,
    *,
    views: Mapping[str, FeatureView],
    scope: LakeScope,
    now: datetime,
    retention_hours: int = DEFAULT_FORGET_RETENTION_HOURS,
    redis_client: redis.Redis | None,
    online_prefix: str,
    raw_stream_tables: tuple[str, ...] = (),
    progress: Callable[[str], None] = lambda _line: None,
) -> ForgetReport:
    """Erase `target` everywhere, ledger first: from the `requested` row on, raw assets leave it out.

    Order: ledger (requested) -> pinned rows counted (time travel, before their files go) ->
    DELETE per table -> VACUUM per table that can hold the entity -> Redis -> ledger (completed).
    Idempotent: a re-run deletes whatever is left and records another completed row.
    """
    if retention_hours < 0:
        raise ValueError(f"retention_hours must be >= 0, got {retention_hours}")
    deletion_id = uuid.uuid4().hex[:12]
    ledger = DeletionLedger(store)
    ledger.record(deletion_id, target, status=REQUESTED, requested_at=now, recorded_at=now, retention_hours=retention_hours)
    pins = training_set_pins(store)
    pinned_rows = count_pinned_rows(store, pins, target)
    erasures: list[TableErasure] = []
    retained: dict[str, RetainedVersions] = {}
    for table in scope.tables:
        if not store.exists(table) or not target.applies_to(list(table_schema(store, table))):
            continue
        erasure = delete_entity_rows(store, table, target)
        removed = vacuum(store, table, retention_hours=retention_hours)
        erasures.append(replace(erasure, files_vacuumed=len(removed)))
        retained[table] = retained_versions(store, table)
        progress(f"{table}: {erasure.rows_deleted} rows deleted, {len(removed)} files vacuumed")
    online = None
    if redis_client is not None:
        online = erase_online(redis_client, views, target, prefix=online_prefix, raw_tables=raw_stream_tables)
    by_table = {e.table: e for e in erasures}
    verdicts = judge_pins(pins, pinned_rows, target=target, erased=by_table, retained=retained, reads=scope.training_reads)
    ledger.record(deletion_id, target, status=COMPLETED, requested_at=now, recorded_at=datetime.now(now.tzinfo),
                  retention_hours=retention_hours, tables=erasures, redis_keys=online.keys if online else ())
    proofs = tuple(prove_absence(store, e.table, [target]) for e in erasures)
    return ForgetReport(deletion_id, target, retention_hours, tuple(erasures),
                        {t: len(r.lost) for t, r in retained.items()}, online, tuple(verdicts), proofs)
