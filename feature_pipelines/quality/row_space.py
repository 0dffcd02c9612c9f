"""Per-partition findings from a validated frame's rows: which partition each row is in, and examples.

A range run validates one frame for many partitions; every rule, GX's or polars', reports the
rows it failed, and this splits them into one `Finding` per partition with a few example rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from feature_pipelines.json_values import json_value
from feature_pipelines.quality.outcome import Finding

MAX_EXAMPLES = 5


@dataclass(frozen=True)
class RowSpace:
    """The validated frame and which partition each of its rows belongs to."""

    frame: pl.DataFrame
    row_partition: np.ndarray
    n_partitions: int
    identity: tuple[str, ...]

    def examples(self, indices: np.ndarray, columns: Sequence[str]) -> tuple[dict[str, object], ...]:
        """Up to MAX_EXAMPLES of the rows at `indices`: their identity columns and `columns`, JSON-able."""
        wanted = [c for c in dict.fromkeys([*self.identity, *columns]) if c in self.frame.columns]
        rows = self.frame.select(wanted)[indices[:MAX_EXAMPLES].tolist()].to_dicts()
        return tuple({key: json_value(value) for key, value in row.items()} for row in rows)

    def mask_findings(self, rule: str, columns: tuple[str, ...], mask: np.ndarray, verb: str) -> list[Finding]:
        """Per partition, a row-level finding from a boolean mask of failing rows (a rule GX has
        no expectation for), with the failing rows as its row indices."""
        failing = np.flatnonzero(mask)
        owner = self.row_partition[failing]
        # Split the failing rows by partition once (a year has 8,760 partitions).
        order = np.argsort(owner, kind="stable")
        bounds = np.searchsorted(owner[order], np.arange(self.n_partitions + 1))
        totals = np.bincount(self.row_partition, minlength=self.n_partitions)
        found = []
        for part in range(self.n_partitions):
            rows = failing[order[bounds[part]:bounds[part + 1]]]
            examples = self.examples(rows, columns) if rows.size else ()
            detail = f"{rows.size} of {totals[part]} rows {verb}" if rows.size else ""
            found.append(Finding(rule, columns, rows.size == 0, detail, {"unexpected_count": int(rows.size)}, examples, rows))
        return found
