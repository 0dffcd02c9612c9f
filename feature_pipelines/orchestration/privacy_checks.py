"""The blocking absence check: no forgotten entity in any retained version of a table or its quarantine.

One check per raw, feature, label and training-set table (`entity_forgotten`). It reads the deletion
ledger and, for every forgotten entity the table can hold, reads every version time travel can
still reach. Blocking: a run that wrote a forgotten entity back (or a VACUUM that has not yet
removed the files of the versions before a deletion) stops its downstream assets.
"""

import time
from collections.abc import Sequence

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    MetadataValue,
    asset_check,
)

from feature_pipelines.privacy.absence import AbsenceProof, prove_absence
from feature_pipelines.privacy.deletion_ledger import DeletionLedger
from feature_pipelines.quality.quarantine import rows_table
from feature_pipelines.resources import LakeResource

ABSENCE_CHECK = "entity_forgotten"


def build_absence_check(table: str) -> AssetChecksDefinition:
    """The absence check of one table asset (and of its quarantined rows)."""

    @asset_check(
        asset=table,
        name=ABSENCE_CHECK,
        blocking=True,
        description=f"No entity of the deletion ledger (_privacy/deletions) in any retained version of {table!r} "
        "or of its quarantine: every version time travel can still read is read.",
    )
    def _absent(context: AssetCheckExecutionContext, lake: LakeResource) -> AssetCheckResult:
        began = time.perf_counter()
        store = lake.store()
        targets = DeletionLedger(store).forgotten()
        proofs: list[AbsenceProof] = [prove_absence(store, name, targets) for name in (table, rows_table(table))]
        failed = [proof for proof in proofs if not proof.passed]
        return AssetCheckResult(
            passed=not failed,
            severity=AssetCheckSeverity.ERROR,
            description=" ".join(proof.message() for proof in (failed or proofs[:1])),
            metadata={
                "forgotten_entities": len(targets),
                "versions_checked": sum(len(p.versions_checked) for p in proofs),
                "versions_vacuumed": sum(p.versions_lost for p in proofs),
                "findings": MetadataValue.json([
                    {"table": p.table, "entity": f.target.describe(), "version": f.version, "rows": f.rows}
                    for p in failed for f in p.findings[:20]
                ]),
                "check_seconds": round(time.perf_counter() - began, 4),
            },
        )

    return _absent


def build_absence_checks(tables: Sequence[str]) -> list[AssetChecksDefinition]:
    return [build_absence_check(table) for table in tables]
