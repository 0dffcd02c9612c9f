"""Check outcomes: the verdict of one named check on one partition, and the rule findings it folds.

A check aggregates rules (GX expectations or polars rules). Each rule's verdict on one partition is
a `Finding`; `outcome()` folds a check's findings into a `CheckOutcome` whose message names the
table, the partition, the column(s) and the rule that failed, and whose details are JSON-able
(see quality.json_values). How GX results become findings is quality.gx_adapter's job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from feature_pipelines.json_values import json_value
from feature_pipelines.quality.actions import RuleAction


@dataclass(frozen=True)
class CheckOutcome:
    """The result of one named check on one partition of one table.

    `blocking` is False for checks whose severity is WARN: a failure is reported but must not stop
    downstream materialisation. `details` are the check's own JSON-able figures (rules evaluated,
    failures, rows dropped, the action); `metadata` is what the ledger and Dagster show.
    """

    check_name: str
    passed: bool
    table: str
    partition: str
    message: str
    details: Mapping[str, object] = field(default_factory=dict)
    # Rows (indices into the validated frame) that failed, when every failed rule is row-level;
    # None when some failure judges the partition as a whole (a `drop` action cannot apply then).
    failing_rows: np.ndarray | None = field(default=None, compare=False, repr=False)
    blocking: bool = True

    @property
    def severity(self) -> str:
        return "ERROR" if self.blocking else "WARN"

    @property
    def metadata(self) -> dict[str, object]:
        """The details with `blocking` and `severity`: the record the ledger and Dagster's checks show."""
        return {"blocking": self.blocking, "severity": self.severity, **self.details}

    def under(self, rule: RuleAction) -> CheckOutcome:
        """This outcome as its rule's action declares it: the action named, blocking unless it warns."""
        # The constructor, not dataclasses.replace: a year's range run judges 100,000 outcomes.
        return CheckOutcome(self.check_name, self.passed, self.table, self.partition, self.message,
                            {**self.details, "action": rule.action.value}, self.failing_rows, rule.blocking)


@dataclass(frozen=True)
class Finding:
    """One rule's verdict on one partition; `observed` and `examples` are JSON-able."""

    rule: str
    columns: tuple[str, ...]
    passed: bool
    detail: str = ""
    observed: object = None
    examples: tuple[dict[str, object], ...] = field(default_factory=tuple)
    # Indices (into the validated frame) of this partition's failing rows, for row-level rules.
    row_indices: np.ndarray | None = field(default=None, compare=False, repr=False)

    def describe(self) -> str:
        if len(self.columns) == 1:
            where = f"column {self.columns[0]!r} "
        else:
            where = f"columns {list(self.columns)} " if self.columns else ""
        text = f"{where}rule {self.rule} {'passed' if self.passed else 'failed'}"
        text += f": {self.detail}" if self.detail else ""
        return text + (f" (examples: {list(self.examples)})" if self.examples else "")

    def as_metadata(self) -> dict[str, object]:
        return {
            "rule": self.rule,
            "columns": list(self.columns),
            "detail": self.detail,
            "observed": json_value(self.observed),
            "examples": [json_value(example) for example in self.examples],
        }


def outcome(
    check_name: str,
    table: str,
    partition: str,
    findings: Sequence[Finding],
    *,
    blocking: bool = True,
    details: Mapping[str, object] | None = None,
) -> CheckOutcome:
    """Fold one check's findings on one partition into its outcome (it passes when all passed);
    `details` join its counts of rules and its failures."""
    failed = [finding for finding in findings if not finding.passed]
    prefix = f"table {table!r} partition {partition}: "
    if failed:
        message = prefix + "; ".join(finding.describe() for finding in failed)
    else:
        notes = [finding.describe() for finding in findings if finding.detail]
        message = prefix + (f"all {len(findings)} rule(s) passed" if not notes else "; ".join(notes))
    figures: dict[str, object] = {
        "rules_evaluated": len(findings),
        "rules_failed": len(failed),
        "failed_rules": [f"{finding.rule} on {list(finding.columns)}" for finding in failed],
        "failures": [finding.as_metadata() for finding in failed],
    }
    figures.update({key: json_value(value) for key, value in (details or {}).items()})
    return CheckOutcome(check_name, not failed, table, partition, message, figures, failing_row_union(failed), blocking)


def failing_row_union(failed: Sequence[Finding]) -> np.ndarray | None:
    """The union of the failed findings' rows, or None if one of them is not row-level."""
    if any(finding.row_indices is None for finding in failed):
        return None
    if not failed:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.concatenate([finding.row_indices for finding in failed]))  # type: ignore[misc]
