"""What a failed rule does, declared next to the rule: warn, drop the failing rows, or fail the partition.

The same three actions as Databricks Delta Live Tables' `expect`, `expect_or_drop` and
`expect_or_fail`, applied per partition so that one bad row holds back only itself and one bad
partition only itself:

- `warn`: the finding is reported (ledger, check metadata) and every row is kept.
- `drop`: the failing rows go to the quarantine table with the rule, the partition, the run and
  their values, and the partition is written without them. Past the rule's drop budget (a share
  of the partition's rows) the partition fails instead: a rule that drops half a partition is
  describing a broken feed, not a bad reading.
- `fail`: the partition is held back whole (its rows quarantined) and its neighbours are written.

Pure declarations: no Dagster, no Great Expectations, so the catalog can import them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

DEFAULT_DROP_BUDGET = 0.01


class Action(StrEnum):
    WARN = "warn"
    DROP = "drop"
    FAIL = "fail"


@dataclass(frozen=True)
class RuleAction:
    """A rule's action, its drop budget (DROP only) and why it was chosen, from the real data."""

    action: Action
    reason: str
    drop_budget: float = DEFAULT_DROP_BUDGET

    def __post_init__(self) -> None:
        if not self.reason.strip():
            raise ValueError("a rule's action needs its reason: say what the real data does")
        if not 0 < self.drop_budget <= 1:
            raise ValueError(f"drop_budget is a share of a partition's rows in (0, 1], got {self.drop_budget}")

    @property
    def blocking(self) -> bool:
        """Whether a finding can hold a partition back (warn never does)."""
        return self.action is not Action.WARN

    def describe(self) -> str:
        if self.action is Action.DROP:
            return f"drop (budget {self.drop_budget:.2%} of a partition's rows)"
        return self.action.value


def warn(reason: str) -> RuleAction:
    return RuleAction(Action.WARN, reason)


def drop(reason: str, *, budget: float = DEFAULT_DROP_BUDGET) -> RuleAction:
    return RuleAction(Action.DROP, reason, budget)


def fail(reason: str) -> RuleAction:
    return RuleAction(Action.FAIL, reason)
