"""The verdict of a range run's checks, per partition: which partitions are written, which rows drop.

Pure: outcomes and rule actions in, a verdict out. Orchestration writes what it says (the kept
rows, the quarantine, the ledger, Dagster's events); nothing here touches storage.

Per partition and rule (see quality.actions):
- a passed rule keeps everything;
- `warn` reports and keeps everything;
- `drop` removes the failing rows when they are no more than the rule's allowance
  (`max(1, floor(budget x rows))`, or every row for a budget of 1), else the partition fails;
  a `drop` rule whose failure is not row-level (a share, a table-level fact) fails the partition;
- `fail` holds the partition back.
A partition is written when no blocking rule failed; its dropped rows never are.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from feature_pipelines.quality.actions import Action, RuleAction
from feature_pipelines.quality.outcome import CheckOutcome


@dataclass(frozen=True)
class PartitionVerdict:
    """One partition's outcomes after its rules' actions, and the rows each `drop` rule removed."""

    partition: str
    rows: int
    outcomes: tuple[CheckOutcome, ...]
    dropped: Mapping[str, np.ndarray] = field(default_factory=dict)  # check -> row indices of the frame

    @property
    def passed(self) -> bool:
        return not self.failed_checks

    @property
    def failed_checks(self) -> list[str]:
        return [o.check_name for o in self.outcomes if not o.passed and o.blocking]

    @property
    def dropped_rows(self) -> int:
        if not self.dropped:
            return 0
        return int(np.unique(np.concatenate(list(self.dropped.values()))).size)

    def first_failure(self) -> CheckOutcome | None:
        return next((o for o in self.outcomes if not o.passed and o.blocking), None)


@dataclass(frozen=True)
class GateVerdict:
    table: str
    partitions: tuple[PartitionVerdict, ...]
    keep: np.ndarray  # per row of the judged frame: True when it is written

    @property
    def passed_keys(self) -> list[str]:
        return [p.partition for p in self.partitions if p.passed]

    @property
    def failed(self) -> list[PartitionVerdict]:
        return [p for p in self.partitions if not p.passed]

    @property
    def outcomes(self) -> list[CheckOutcome]:
        return [o for p in self.partitions for o in p.outcomes]

    def dropped_by_check(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for verdict in self.partitions:
            for check, rows in verdict.dropped.items():
                counts[check] = counts.get(check, 0) + int(rows.size)
        return counts


def drop_allowance(rule: RuleAction, rows: int) -> int:
    """How many rows a `drop` rule may remove from a partition of `rows` rows: its budget's share,
    but at least one, so that one bad record never holds back a small partition."""
    if rule.drop_budget >= 1:
        return rows
    # Rounded before the floor: 0.29 x 100 is 28.999999999999996 in binary floating point.
    return max(1, math.floor(round(rule.drop_budget * rows, 9)))


def _acted(o: CheckOutcome, rule: RuleAction, rows: int) -> tuple[CheckOutcome, np.ndarray | None]:
    """The outcome under its rule's action, and the rows it drops (None: nothing dropped)."""
    acted = o.under(rule)
    if o.passed or rule.action is Action.WARN:
        return acted, None
    if rule.action is Action.FAIL:
        return replace(acted, message=f"{o.message}; action fail: the partition is held back"), None
    failing = o.failing_rows
    if failing is None:
        message = f"{o.message}; action drop cannot apply (the rule judges the partition as a whole): the partition is held back"
        return replace(acted, message=message), None
    allowed = drop_allowance(rule, rows)
    share = failing.size / rows if rows else 0.0
    within = failing.size <= allowed
    details = {**acted.details, "dropped_rows": int(failing.size) if within else 0, "dropped_share": share,
               "drop_allowance": allowed, "drop_budget": rule.drop_budget}
    if within:
        message = f"{o.message}; action drop: {failing.size} of {rows} rows ({share:.2%}) dropped to quarantine, within the budget of {allowed}"
        return replace(acted, passed=True, message=message, details=details), failing
    message = (f"{o.message}; action drop: {failing.size} of {rows} rows ({share:.2%}) fail, over the budget of {allowed} "
               f"({rule.drop_budget:.2%}): the partition is held back")
    return replace(acted, message=message, details=details), None


def judge(
    table: str,
    row_partition: np.ndarray,
    partition_keys: Sequence[str],
    outcomes_by_partition: Mapping[str, Sequence[CheckOutcome]],
    rules: Mapping[str, RuleAction],
) -> GateVerdict:
    """Apply each rule's action per partition; `row_partition[i]` is the partition index of row i."""
    sizes = np.bincount(row_partition, minlength=len(partition_keys)) if row_partition.size else np.zeros(len(partition_keys), np.int64)
    keep = np.ones(row_partition.size, dtype=bool)
    verdicts = []
    for index, key in enumerate(partition_keys):
        rows = int(sizes[index])
        acted, dropped = [], {}
        for o in outcomes_by_partition.get(key, ()):
            if o.check_name not in rules:
                raise KeyError(f"table {table!r}: check {o.check_name!r} declares no action (known: {sorted(rules)})")
            judged, rows_dropped = _acted(o, rules[o.check_name], rows)
            acted.append(judged)
            if rows_dropped is not None and rows_dropped.size:
                dropped[o.check_name] = rows_dropped
        verdict = PartitionVerdict(key, rows, tuple(acted), dropped)
        if not verdict.passed:
            # Held back whole: its rows are quarantined as one partition, not rule by rule.
            verdict = PartitionVerdict(key, rows, tuple(acted), {})
            keep[row_partition == index] = False
        else:
            for rows_dropped in dropped.values():
                keep[rows_dropped] = False
        verdicts.append(verdict)
    return GateVerdict(table, tuple(verdicts), keep)
