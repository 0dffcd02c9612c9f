"""Erasing an entity's rows from Delta tables: DELETE, then VACUUM, and which versions stay readable.

Why both: a Delta DELETE writes new files without the rows and marks the old ones removed, but the
old files stay on storage so that time travel to earlier versions keeps working. Until VACUUM
removes them, `DeltaStore.read(table, version=<before>)` still returns the deleted rows.

The Delta operations themselves (`DeltaStore.delete_where`, `vacuum`, `history`) are the store's,
behind its error guard (the table named, secrets redacted); this module decides what to delete
and which versions stay readable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from feature_pipelines.offline.delta_store import DEFAULT_VACUUM_RETENTION_HOURS, DeltaStore
from feature_pipelines.privacy.entity import ForgetTarget

DEFAULT_RETENTION_HOURS = DEFAULT_VACUUM_RETENTION_HOURS
# What `forget` vacuums at: the deleted rows' files go at once (and time travel to the versions before).
DEFAULT_FORGET_RETENTION_HOURS = 0


@dataclass(frozen=True)
class TableErasure:
    """What a DELETE did to one table: rows removed and the versions on either side."""

    table: str
    rows_deleted: int
    version_before: int
    version_after: int  # equal to version_before when no row matched (no commit is made)
    files_vacuumed: int = 0


def table_schema(store: DeltaStore, table: str) -> pl.Schema:
    return store.scan(table).collect_schema()


def delete_entity_rows(store: DeltaStore, table: str, target: ForgetTarget) -> TableErasure:
    """Delete the entity's rows in one commit (none when no row matches: the table is left as it is).

    A commit conflict with a concurrent writer is raised, not retried: the forget is idempotent
    (a re-run deletes what is left), and its ledger entry, written first, already keeps new runs
    from writing the entity again.
    """
    before = store.version(table)
    schema = table_schema(store, table)
    present = store.scan(table, version=before).filter(target.polars_filter(schema)).select(pl.len()).collect().item()
    if present == 0:
        return TableErasure(table, 0, before, before)
    deleted = store.delete_where(table, target.sql_predicate(schema))
    return TableErasure(table, deleted, before, store.version(table))


def vacuum(store: DeltaStore, table: str, *, retention_hours: int) -> list[str]:
    """Remove every file no version newer than `retention_hours` references; returns their paths.

    `full=True`: files removed by any earlier commit go, not only those since the last checkpoint
    (older overwrites of a partition hold the entity's rows as well). Below Delta's default
    retention the guard is disabled explicitly: time travel to the versions whose files go is lost,
    and a writer committing to the table meanwhile could lose its uncommitted files, so the forget
    runs while no backfill writes these tables.
    """
    return store.vacuum(table, retention_hours=retention_hours)


@dataclass(frozen=True)
class RetainedVersions:
    """The versions of a table time travel can still read: every data file they reference is on storage."""

    table: str
    retained: tuple[int, ...]
    lost: tuple[int, ...]  # versions in the log whose files were vacuumed


def _readable(store: DeltaStore, table: str, version: int) -> bool:
    """Whether every file of `version` is still there: counting its rows opens each file (its footer)."""
    try:
        store.scan(table, version=version).select(pl.len()).collect()
    except FileNotFoundError:
        return False
    return True


def retained_versions(store: DeltaStore, table: str) -> RetainedVersions:
    """Every version in the table's log, split into those time travel can read and those VACUUM took."""
    latest = store.version(table)
    history = store.history(table)
    versions = sorted({int(entry["version"]) for entry in history} | {latest})
    retained: list[int] = []
    lost: list[int] = []
    for version in versions:
        (retained if _readable(store, table, version) else lost).append(version)
    if latest not in retained:
        raise RuntimeError(f"table {table!r}: its latest version {latest} references files that are gone")
    return RetainedVersions(table, tuple(retained), tuple(lost))


def entity_rows_in_versions(store: DeltaStore, table: str, target: ForgetTarget, versions: Sequence[int]) -> dict[int, int]:
    """Rows of the entity in each of `versions` (time travel; each version read with the filter pushed down)."""
    counts: dict[int, int] = {}
    for version in versions:
        lazy = store.scan(table, version=version)
        schema = lazy.collect_schema()
        if not target.applies_to(list(schema)):
            counts[version] = 0
            continue
        counts[version] = int(lazy.filter(target.polars_filter(schema)).select(pl.len()).collect().item())
    return counts
