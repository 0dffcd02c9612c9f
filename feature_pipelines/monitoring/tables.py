"""The monitoring tables in the lake: one row per compared feature and day, a day replaced in one commit.

Each table's columns come from its result's `Figures` (skew.SKEW_FIGURES, drift.DRIFT_FIGURES),
after the day and any labels the monitor adds (which comparison a drift row belongs to).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic

import polars as pl

from feature_pipelines.monitoring.drift import DRIFT_FIGURES, FeatureDrift
from feature_pipelines.monitoring.figures import Figures, R
from feature_pipelines.monitoring.skew import SKEW_FIGURES, FeatureSkew
from feature_pipelines.names import PARTITION_DRIFT_TABLE, SERVING_DRIFT_TABLE, SKEW_TABLE
from feature_pipelines.offline.delta_store import DeltaStore, TimeSlice

DAY_COLUMN = "day"
COMPARISON_COLUMN = "comparison"


@dataclass(frozen=True)
class MonitoringTable(Generic[R]):
    """A lake table of one kind of result: `day`, then `labels` (given per row), then the figures."""

    name: str
    figures: Figures[R]
    labels: Mapping[str, pl.DataType] = field(default_factory=dict)

    def schema(self) -> dict[str, pl.DataType]:
        return {DAY_COLUMN: pl.Datetime("us", "UTC"), **self.labels, **self.figures.schema()}

    def rows(self, day: datetime, items: Iterable[R], **labels: Any) -> list[dict[str, Any]]:
        """The rows of `items` on `day`, each carrying the given labels."""
        if set(labels) != set(self.labels):
            raise ValueError(f"table {self.name!r}: rows need the labels {sorted(self.labels)}, got {sorted(labels)}")
        return [{DAY_COLUMN: day, **labels, **self.figures.row(item)} for item in items]

    def write(self, store: DeltaStore, rows: list[dict[str, Any]], start: datetime, end: datetime) -> int:
        """Replace the day's rows (one commit, so a re-run never doubles them); returns the version."""
        schema = self.schema()
        frame = pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)
        store.add_missing_columns(self.name, frame)  # figures added since an older monitor made the table
        return store.write(self.name, frame, time_slice=TimeSlice(DAY_COLUMN, start, end))


SKEW: MonitoringTable[FeatureSkew] = MonitoringTable(SKEW_TABLE, SKEW_FIGURES)
SERVING_DRIFT: MonitoringTable[FeatureDrift] = MonitoringTable(
    SERVING_DRIFT_TABLE, DRIFT_FIGURES, {COMPARISON_COLUMN: pl.String()}
)
PARTITION_DRIFT: MonitoringTable[FeatureDrift] = MonitoringTable(
    PARTITION_DRIFT_TABLE, DRIFT_FIGURES, {COMPARISON_COLUMN: pl.String()}
)

__all__ = ["COMPARISON_COLUMN", "DAY_COLUMN", "PARTITION_DRIFT", "SERVING_DRIFT", "SKEW", "MonitoringTable"]
