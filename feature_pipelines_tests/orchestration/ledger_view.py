"""What the quality ledger says about a raw table's hours (raw tables are days judged hour by hour)."""

from __future__ import annotations

import polars as pl

from feature_pipelines.names import QUALITY_LEDGER_TABLE
from feature_pipelines.offline.delta_store import DeltaStore


def judged_hours(store: DeltaStore, table: str, run_id: str | None = None) -> set[str]:
    """The hours of `table` the gates judged (written or held back), by one run or any."""
    ledger = store.read(QUALITY_LEDGER_TABLE).filter(pl.col("table") == table)
    if run_id is not None:
        ledger = ledger.filter(pl.col("run_id") == run_id)
    return set(ledger["partition"].to_list())
