"""The quarantine: every row and landed file the gates held back, with why, kept as Delta tables.

- `_quarantine/<table>/rows`: the held-back rows of a table, each with its values as they came
  and `quarantine_partition`, `quarantine_rule`, `quarantine_action` (drop: the rule removed the
  row; fail: its whole partition was held back), `quarantine_reason`, `quarantine_run_id` and
  `quarantined_at`. A run replaces the quarantine of exactly the partitions it judged, so after a
  fix the re-run partition's rows leave the quarantine and land in the table: it always says
  what is held back now, and the Delta history keeps what was held back before.
- `_quarantine/landing_files`: the landed files that break their table's contract, replaced per
  landing table on every run (the copy of each file is in the landing zone's `_quarantine/`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import polars as pl

from feature_pipelines.json_values import json_text
from feature_pipelines.names import LANDING_FILES_TABLE, QUARANTINE_ROOT
from feature_pipelines.offline.delta_store import DeltaStore, KeyRange
from feature_pipelines.quality.gate import GateVerdict
from feature_pipelines.sources.landing import LandingZone
from feature_pipelines.sources.landing_contract import RejectedFile

PARTITION, RULE, ACTION, REASON, RUN_ID, AT = (
    "quarantine_partition", "quarantine_rule", "quarantine_action", "quarantine_reason", "quarantine_run_id", "quarantined_at",
)
QUARANTINE_COLUMNS = (PARTITION, RULE, ACTION, REASON, RUN_ID, AT)
LANDING_FILES_SCHEMA = {
    "table": pl.String, "file": pl.String, "path": pl.String, "copy": pl.String, "problems": pl.String,
    "hours_known": pl.Boolean, "hours": pl.Int64, "first_hour": pl.Datetime("us", "UTC"),
    "last_hour": pl.Datetime("us", "UTC"), RUN_ID: pl.String, AT: pl.Datetime("us", "UTC"),
}


def rows_table(table: str) -> str:
    return f"{QUARANTINE_ROOT}/{table}/rows"


def partitions_table(table: str) -> str:
    """The partitions of `table` held back now, one row each, even when they hold no row (an emptied hour)."""
    return f"{QUARANTINE_ROOT}/{table}/partitions"


def held_back_partitions(verdict: GateVerdict, *, run_id: str, at: datetime) -> pl.DataFrame:
    failed = verdict.failed
    return pl.DataFrame(
        {
            PARTITION: [p.partition for p in failed],
            RULE: [",".join(p.failed_checks) for p in failed],
            ACTION: ["fail"] * len(failed),
            REASON: [(p.first_failure().message if p.first_failure() else "") for p in failed],  # type: ignore[union-attr]
            "rows": [p.rows for p in failed],
            RUN_ID: [run_id] * len(failed),
            AT: [at] * len(failed),
        },
        schema={PARTITION: pl.String, RULE: pl.String, ACTION: pl.String, REASON: pl.String, "rows": pl.Int64,
                RUN_ID: pl.String, AT: pl.Datetime("us", "UTC")},
    )


def _tagged(rows: pl.DataFrame, *, partition: str, rule: str, action: str, reason: str, run_id: str, at: datetime) -> pl.DataFrame:
    return rows.with_columns(
        pl.lit(partition).alias(PARTITION), pl.lit(rule).alias(RULE), pl.lit(action).alias(ACTION),
        pl.lit(reason).alias(REASON), pl.lit(run_id).alias(RUN_ID), pl.lit(at).dt.cast_time_unit("us").alias(AT),
    )


def held_back_rows(frame: pl.DataFrame, row_partition: np.ndarray, verdict: GateVerdict, *, run_id: str, at: datetime) -> pl.DataFrame:
    """The rows a verdict holds back: every row of a failed partition (rule: its failed checks),
    and each row a `drop` rule removed from a written partition (once per rule it broke)."""
    parts = []
    for index, partition in enumerate(verdict.partitions):
        if not partition.passed:
            first = partition.first_failure()
            rows = frame.filter(pl.Series(row_partition == index))
            parts.append(_tagged(rows, partition=partition.partition, rule=",".join(partition.failed_checks), action="fail",
                                 reason=first.message if first else "", run_id=run_id, at=at))
            continue
        by_check = {o.check_name: o for o in partition.outcomes}
        for check, indices in partition.dropped.items():
            parts.append(_tagged(frame[indices.tolist()], partition=partition.partition, rule=check, action="drop",
                                 reason=by_check[check].message, run_id=run_id, at=at))
    if not parts:
        return _tagged(frame.head(0), partition="", rule="", action="", reason="", run_id=run_id, at=at)
    return pl.concat(parts, how="vertical")


@dataclass(frozen=True)
class Quarantine:
    store: DeltaStore

    def replace(self, table: str, held_back: pl.DataFrame, partitions: pl.DataFrame, *, first_partition: str, last_partition: str) -> None:
        """Make the quarantine of partitions [first, last] exactly these rows and held-back partitions."""
        for name, frame in ((rows_table(table), held_back), (partitions_table(table), partitions)):
            if frame.height == 0 and not self.store.exists(name):
                continue
            self.store.write(
                name, frame, time_slice=KeyRange(PARTITION, first_partition, last_partition),
                commit_metadata={"partitions": f"{first_partition}..{last_partition}"},
            )

    def replace_files(self, zone: LandingZone, landing_table: str, rejected: Sequence[RejectedFile], *, run_id: str, at: datetime) -> None:
        """Record the landed files of `landing_table` that break the contract now, with their copies' paths."""
        rows = [
            {
                "table": landing_table, "file": f.file, "path": f.path, "copy": str(zone.quarantine_dir(landing_table) / f.file),
                "problems": json_text(list(f.problems)), "hours_known": f.hours_known, "hours": len(f.hours),
                "first_hour": min(f.hours) if f.hours else None, "last_hour": max(f.hours) if f.hours else None,
                RUN_ID: run_id, AT: at,
            }
            for f in rejected
        ]
        frame = pl.DataFrame(rows, schema=LANDING_FILES_SCHEMA)
        if frame.height == 0 and not self.store.exists(LANDING_FILES_TABLE):
            return
        self.store.write(LANDING_FILES_TABLE, frame, time_slice=KeyRange("table", landing_table, landing_table))

    def rows(self, table: str) -> pl.DataFrame:
        """The held-back rows of `table` (only the quarantine columns when none ever were)."""
        name = rows_table(table)
        if self.store.exists(name):
            return self.store.read(name)
        return pl.DataFrame(schema={**dict.fromkeys((PARTITION, RULE, ACTION, REASON, RUN_ID), pl.String), AT: pl.Datetime("us", "UTC")})

    def files(self) -> pl.DataFrame:
        if not self.store.exists(LANDING_FILES_TABLE):
            return pl.DataFrame(schema=LANDING_FILES_SCHEMA)
        return self.store.read(LANDING_FILES_TABLE)

    def summary(self, tables: Sequence[str]) -> pl.DataFrame:
        """Per table, partition, rule and action: the count of held-back rows and the first reason."""
        parts = []
        for table in tables:
            rows = self.rows(table)
            found = pl.DataFrame(schema={PARTITION: pl.String, RULE: pl.String, ACTION: pl.String, "rows": pl.UInt32, "reason": pl.String})
            if rows.height:
                found = rows.group_by(PARTITION, RULE, ACTION).agg(pl.len().alias("rows"), pl.col(REASON).first().alias("reason"))
            if self.store.exists(partitions_table(table)):
                # A held-back partition without rows (an emptied hour, a refused file) is held back all the same.
                empty = self.store.read(partitions_table(table)).join(found, on=PARTITION, how="anti")
                found = pl.concat([found, empty.select(PARTITION, RULE, ACTION, pl.col("rows").cast(pl.UInt32), pl.col(REASON).alias("reason"))])
            if found.height:
                parts.append(found.with_columns(pl.lit(table).alias("table")))
        if not parts:
            return pl.DataFrame(schema={"table": pl.String, PARTITION: pl.String, RULE: pl.String, ACTION: pl.String,
                                        "rows": pl.UInt32, "reason": pl.String})
        return pl.concat(parts).select("table", PARTITION, RULE, ACTION, "rows", "reason").sort("table", PARTITION, RULE)
