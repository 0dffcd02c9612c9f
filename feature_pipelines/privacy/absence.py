"""The proof of absence: no forgotten entity in any version of a table that time travel can still read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.privacy.entity import ForgetTarget
from feature_pipelines.privacy.lake_erasure import entity_rows_in_versions, retained_versions


@dataclass(frozen=True)
class Finding:
    target: ForgetTarget
    version: int
    rows: int


@dataclass(frozen=True)
class AbsenceProof:
    """What was checked in one table: every retained version, for every forgotten entity it can hold."""

    table: str
    entities_checked: int
    versions_checked: tuple[int, ...]
    versions_lost: int  # versions in the log no longer readable (their files were vacuumed)
    findings: tuple[Finding, ...]

    @property
    def passed(self) -> bool:
        return not self.findings

    def message(self) -> str:
        if not self.entities_checked:
            return f"table {self.table!r}: no forgotten entity it could hold"
        if self.passed:
            return (f"table {self.table!r}: none of {self.entities_checked} forgotten entities in any of "
                    f"{len(self.versions_checked)} retained versions ({self.versions_lost} older versions vacuumed)")
        shown = "; ".join(f"{f.target.describe()}: {f.rows} row(s) in version {f.version}" for f in self.findings[:5])
        return f"table {self.table!r}: forgotten entities are still readable: {shown}"


def prove_absence(store: DeltaStore, table: str, targets: Sequence[ForgetTarget]) -> AbsenceProof:
    """Read every retained version of `table` (time travel) for each forgotten entity it can hold."""
    if not store.exists(table):
        return AbsenceProof(table, 0, (), 0, ())
    columns = list(store.scan(table).collect_schema())
    applicable = [target for target in targets if target.applies_to(columns)]
    if not applicable:
        return AbsenceProof(table, 0, (), 0, ())
    versions = retained_versions(store, table)
    findings = [
        Finding(target, version, rows)
        for target in applicable
        for version, rows in entity_rows_in_versions(store, table, target, versions.retained).items()
        if rows
    ]
    return AbsenceProof(table, len(applicable), versions.retained, len(versions.lost), tuple(findings))
