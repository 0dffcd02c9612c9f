"""The quality ledger: every check outcome per table partition, kept as a Delta table in the lake.

Readers consult it before consuming a partition (a partition whose latest blocking check failed is
refused), the volume rule reads recent row counts from it, and `feature-pipelines checks` prints
the last run's outcomes from it. It lives with the data, so it survives a new Dagster instance.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import polars as pl

from feature_pipelines.json_values import json_text
from feature_pipelines.names import QUALITY_LEDGER_TABLE
from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.quality.outcome import CheckOutcome
from feature_pipelines.timeutil import utc_now

LEDGER_SCHEMA = {
    "table": pl.String,
    "partition": pl.String,
    "check_name": pl.String,
    "passed": pl.Boolean,
    "blocking": pl.Boolean,
    "message": pl.String,
    "metadata_json": pl.String,
    "row_count": pl.Int64,
    "run_id": pl.String,
    "evaluated_at": pl.Datetime("us", "UTC"),
}


class FailedPartitionError(RuntimeError):
    """A reader asked for partitions whose latest blocking check failed."""


@dataclass(frozen=True)
class QualityLedger:
    store: DeltaStore

    def record(self, outcomes: Iterable[CheckOutcome], *, run_id: str, row_counts: dict[str, int]) -> None:
        """Append outcomes (one row per check and partition) in one commit."""
        now = utc_now()
        rows = [
            {
                "table": o.table,
                "partition": o.partition,
                "check_name": o.check_name,
                "passed": o.passed,
                "blocking": o.blocking,
                "message": o.message,
                "metadata_json": json_text(o.metadata),
                "row_count": row_counts.get(o.partition),
                "run_id": run_id,
                "evaluated_at": now,
            }
            for o in outcomes
        ]
        if rows:
            self.store.append(QUALITY_LEDGER_TABLE, pl.DataFrame(rows, schema=LEDGER_SCHEMA))

    def _latest(self) -> pl.LazyFrame | None:
        if not self.store.exists(QUALITY_LEDGER_TABLE):
            return None
        return (
            self.store.scan(QUALITY_LEDGER_TABLE)
            .sort("evaluated_at")
            .group_by("table", "partition", "check_name")
            .agg(pl.all().last())
        )

    def judged_partitions(self, table: str, partitions: Sequence[str]) -> set[str]:
        """The partitions among `partitions` the gate has judged (written, or deliberately held back):
        the ledger is written after the table, so an entry means the write it judged is done."""
        if not partitions or not self.store.exists(QUALITY_LEDGER_TABLE):
            return set()
        judged = (
            self.store.scan(QUALITY_LEDGER_TABLE)
            .filter(pl.col("table") == table, pl.col("partition").is_in(list(partitions)))
            .select("partition")
            .unique()
            .collect()
        )
        return set(judged["partition"].to_list())

    def failed_partitions(self, table: str, partitions: Sequence[str]) -> pl.DataFrame:
        """The partitions among `partitions` whose latest result of a blocking check failed."""
        latest = self._latest()
        if latest is None:
            return pl.DataFrame(schema={"partition": pl.String, "check_name": pl.String, "message": pl.String})
        return (
            latest.filter(
                pl.col("table") == table,
                pl.col("partition").is_in(list(partitions)),
                pl.col("blocking"),
                ~pl.col("passed"),
            )
            .select("partition", "check_name", "message")
            .sort("partition", "check_name")
            .collect()
        )

    def require_passed(self, table: str, partitions: Sequence[str], *, reader: str) -> None:
        """Refuse to hand partitions with a failed blocking check to `reader`, naming them."""
        failed = self.failed_partitions(table, partitions)
        if failed.height:
            first = failed.row(0, named=True)
            raise FailedPartitionError(
                f"{reader}: table {table!r} has {failed['partition'].n_unique()} partition(s) whose latest "
                f"blocking check failed ({', '.join(sorted(set(failed['partition'].to_list()))[:5])}); first: "
                f"{first['check_name']}: {first['message']}. Fix the input and re-materialise those "
                "partitions, or read with allow_failed_checks=True to take the last good data knowingly."
            )

    def recent_row_counts(self, table: str, before: str, *, limit: int = 14, key_suffix: str = "") -> list[int]:
        """Row counts of the latest passed evaluations of the `limit` partitions before `before`
        (only keys ending with `key_suffix`, e.g. the same hour of day)."""
        latest = self._latest()
        if latest is None:
            return []
        counts = (
            latest.filter(
                pl.col("table") == table,
                pl.col("partition") < before,
                pl.col("partition").str.ends_with(key_suffix),
                pl.col("passed"),
                pl.col("row_count").is_not_null(),
            )
            .group_by("partition")
            .agg(pl.col("row_count").first())
            .sort("partition")
            .tail(limit)
            .collect()
        )
        return counts["row_count"].to_list()

    def last_runs(self) -> pl.DataFrame:
        """For each table, every outcome recorded by the most recent run that checked it."""
        if not self.store.exists(QUALITY_LEDGER_TABLE):
            return pl.DataFrame(schema=LEDGER_SCHEMA)
        frame = self.store.read(QUALITY_LEDGER_TABLE)
        last = frame.sort("evaluated_at").group_by("table").agg(pl.col("run_id").last())
        return frame.join(last, on=["table", "run_id"]).sort("table", "partition", "check_name")

