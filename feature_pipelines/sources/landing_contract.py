"""The landing zone's per-file contract: every landed file is checked on its own against the
table's declared schema before any of its rows are read.

Why per file: a table's folder holds one file per delivery. Scanning them all as one dataset
(`scan_parquet("*.parquet")`) lets a single bad delivery (a dropped column, a changed dtype,
naive datetimes) fail every read with an error that names neither the file nor the hours it
holds, and what polars infers then depends on which file it happens to read first.

The contract, per file:

* Column names and polars dtypes equal the declared schema exactly; the order of columns in the
  file does not matter (rows come back in the declared order).
* A Datetime with an explicit zone other than the declared one (e.g. America/New_York where UTC
  is declared) is the same instant written another way: it is accepted and converted exactly,
  provided the time unit is the declared one.
* A Datetime without a zone (naive) where a zoned one is declared is refused: its zone is
  unknown, and assuming UTC would silently shift every instant by the feed's offset.
* Anything else (missing column, undeclared column, other dtype, unreadable file) rejects the
  file whole: none of its rows are returned, so a delivery is never half-applied. The rejected
  file is copied to the quarantine (it also stays in the landing folder, so the hours it covers
  keep failing until it is fixed or removed) and reported with the UTC hours it covers, so the
  caller can hold back exactly those hours.

Accepted rows carry their provenance (`SOURCE_FILE`, `SOURCE_ROW`), and files are read in
delivery order (file name order, see `LandingZone.files`), so the result never depends on
directory listing order or modification times.

Pure polars and filesystem: no Dagster, no Delta.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl

from feature_pipelines.sources.landing import LandingZone

SOURCE_FILE = "__source_file"  # the landed file's name (not its path: roots differ between machines)
SOURCE_ROW = "__source_row"  # the row's index within its file, UInt32, counted before any window filter
SOURCE_ROW_DTYPE = pl.UInt32

# UTC offsets in use range from -12h to +14h, so a naive wall-clock value v is an instant
# somewhere in [v - 14h, v + 12h].
_MAX_AHEAD_OF_UTC = timedelta(hours=14)
_MAX_BEHIND_UTC = timedelta(hours=12)
_HOUR = timedelta(hours=1)

# What polars raises on a file that is not (valid) parquet: ComputeError for a bad footer, bad
# thrift metadata or bad page headers; OSError (e.g. FileNotFoundError, IsADirectoryError) when
# the file cannot be opened at all, for instance because it was removed while being read.
_UNREADABLE = (pl.exceptions.ComputeError, OSError)

_NAIVE_REFUSED = "a time without an explicit zone is refused, never assumed to be UTC"


def _unreadable(error: Exception) -> str:
    # The first line is the reader's own message; polars may append a (long) query plan below it.
    lines = str(error).strip().splitlines()
    return f"file cannot be read as parquet: {lines[0] if lines else type(error).__name__}"


@dataclass(frozen=True)
class RejectedFile:
    """A landed file that breaks its table's contract, and the UTC hours its rows cover."""

    table: str
    file: str
    path: str
    problems: tuple[str, ...]
    hours: tuple[datetime, ...]  # tz-aware UTC hour starts, sorted and unique
    hours_known: bool  # False: the file cannot be placed in any hour (time column missing, mistyped, unreadable)

    def message(self) -> str:
        text = f"landing file {self.file!r} of table {self.table!r} breaks its contract: " + "; ".join(self.problems)
        if not self.hours_known:
            return text + "; its hours are unknown"
        if not self.hours:
            return text + "; it covers no hour"
        first, last = self.hours[0].isoformat(), self.hours[-1].isoformat()
        return text + f"; it covers {len(self.hours)} hour(s) from {first} to {last} (hour starts, UTC)"


@dataclass(frozen=True)
class LandedTable:
    """The rows of a table's accepted files, and the files that were rejected."""

    table: str
    rows: pl.DataFrame  # declared columns in declared order, then SOURCE_FILE, SOURCE_ROW; (file, row) order
    accepted_files: tuple[str, ...]
    rejected: tuple[RejectedFile, ...]

    def rejected_hours(self) -> dict[datetime, list[RejectedFile]]:
        """Hour start (UTC) -> the rejected files covering it, hours ascending, files in delivery order.
        Files whose hours are unknown appear under no hour: check `hours_known` for those."""
        by_hour: dict[datetime, list[RejectedFile]] = {}
        for rejected in self.rejected:
            for hour in rejected.hours:
                by_hour.setdefault(hour, []).append(rejected)
        return dict(sorted(by_hour.items()))


@dataclass(frozen=True)
class _FileCheck:
    """The outcome of checking one file's schema: its problems, or how to read it."""

    path: Path
    found: Mapping[str, pl.DataType] | None  # None: the schema could not be read
    problems: tuple[str, ...]
    # Declared columns whose zone differs from the declared one: column -> the file's zone.
    converted_zones: Mapping[str, str]


def read_landed(
    zone: LandingZone,
    table: str,
    schema: Mapping[str, pl.DataType],
    *,
    time_column: str | None,
    window: tuple[datetime, datetime] | None = None,
) -> LandedTable:
    """Every row of every file of `table` that keeps the contract of `schema`, and the files that do not.

    `time_column`: the column the table is cut into hours on (None: unpartitioned). It places a
    rejected file's rows in hours and, with `window` = (start, end) in tz-aware datetimes, limits
    the returned rows to start <= time < end (rows with a null time are then in no window).
    Rejected files are reported whatever their hours; which hours to hold back is the caller's call.
    """
    declared = _declared(schema, time_column)
    bounds = _window_bounds(window) if time_column is not None else None
    accepted: list[str] = []
    frames: list[pl.DataFrame] = []
    rejected: list[RejectedFile] = []
    for path in _files(zone, table):
        check = _check(path, declared)
        if check.problems:
            rejected.append(_reject(zone, table, check, time_column))
            continue
        lazy = pl.scan_parquet(path, row_index_name=SOURCE_ROW)
        if bounds is not None and time_column is not None:
            lazy = lazy.filter(_in_window(time_column, declared[time_column], check, bounds))
        lazy = _conform(lazy, list(declared), declared, check, path.name)
        try:
            # One collect per file, so that a file whose footer is fine but whose pages are not
            # is rejected by name instead of failing the whole read.
            frames.append(lazy.collect())
        except _UNREADABLE as error:
            unreadable = _FileCheck(path, None, (_unreadable(error),), {})
            rejected.append(_reject(zone, table, unreadable, time_column))
            continue
        accepted.append(path.name)
    return LandedTable(
        table=table,
        rows=_concat(frames, list(declared), declared),
        accepted_files=tuple(accepted),
        rejected=tuple(rejected),
    )


def _declared(schema: Mapping[str, pl.DataType], time_column: str | None) -> pl.Schema:
    # pl.Schema turns dtype classes (pl.Int64) into instances and refuses under-specified ones
    # (bare pl.Datetime), which would otherwise compare equal to any Datetime and weaken the check.
    declared = pl.Schema(schema)
    reserved = [name for name in (SOURCE_FILE, SOURCE_ROW) if name in declared]
    if reserved:
        raise ValueError(f"declared schema uses the reserved column names {reserved}")
    if time_column is not None:
        dtype = declared.get(time_column)
        if not (isinstance(dtype, pl.Datetime) and dtype.time_zone is not None):
            raise ValueError(f"time column {time_column!r} must be declared as a zoned Datetime, is {dtype}")
    return declared


def _window_bounds(window: tuple[datetime, datetime] | None) -> tuple[datetime, datetime] | None:
    if window is None:
        return None
    start, end = window
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError(f"window bounds must be tz-aware datetimes, got {start!r}, {end!r}")
    return start, end


def _files(zone: LandingZone, table: str) -> list[Path]:
    files = zone.files(table)
    if not files:
        raise FileNotFoundError(f"landing zone {zone.root}: no parquet files for table {table!r}")
    return files


def _check(path: Path, declared: pl.Schema) -> _FileCheck:
    """Compare the file's schema (its footer only: cheap) with the declared one."""
    try:
        found = pl.read_parquet_schema(path)
    except _UNREADABLE as error:
        return _FileCheck(path, None, (_unreadable(error),), {})
    problems: list[str] = []
    converted: dict[str, str] = {}
    for name, expected in declared.items():
        if name not in found:
            problems.append(f"column {name!r} is missing (expected {expected})")
            continue
        actual = found[name]
        if actual == expected:
            continue
        if isinstance(expected, pl.Datetime) and isinstance(actual, pl.Datetime) and expected.time_zone is not None:
            if actual.time_zone is None:
                problems.append(f"column {name!r}: expected {expected}, found {actual}: {_NAIVE_REFUSED}")
                continue
            if actual.time_unit == expected.time_unit:
                # Same instants, another zone: converting is exact, nothing is assumed.
                converted[name] = actual.time_zone
                continue
        problems.append(f"column {name!r}: expected {expected}, found {actual}")
    problems += [f"column {name!r} is not declared (found {dtype})" for name, dtype in found.items() if name not in declared]
    return _FileCheck(path, found, tuple(problems), converted)


def _in_window(column: str, expected: pl.DataType, check: _FileCheck, bounds: tuple[datetime, datetime]) -> pl.Expr:
    """start <= time < end on the column as stored, so the predicate reaches the parquet reader
    (row-group statistics) instead of running after a zone conversion it cannot see through."""
    if not isinstance(expected, pl.Datetime) or expected.time_zone is None:
        raise TypeError(f"time column {column!r} must be declared as a zoned Datetime, is {expected}")
    stored_zone = check.converted_zones.get(column, expected.time_zone)
    start, end = (
        pl.lit(bound.astimezone(timezone.utc)).cast(pl.Datetime(expected.time_unit, "UTC")).dt.convert_time_zone(stored_zone)
        for bound in bounds
    )
    return (pl.col(column) >= start) & (pl.col(column) < end)


def _conform(lazy: pl.LazyFrame, columns: list[str], declared: pl.Schema, check: _FileCheck, file: str) -> pl.LazyFrame:
    """`columns` in the given order, zones converted to the declared ones, provenance last."""
    selected = []
    for name in columns:
        expr = pl.col(name)
        if name in check.converted_zones:
            zone = declared[name].time_zone  # type: ignore[union-attr]
            expr = expr.dt.convert_time_zone(zone)
        selected.append(expr)
    return lazy.select(
        *selected,
        pl.lit(file, dtype=pl.String).alias(SOURCE_FILE),
        # Cast explicitly: the index type is UInt64 on polars' 64-bit-index builds.
        pl.col(SOURCE_ROW).cast(SOURCE_ROW_DTYPE),
    )


def _concat(frames: list[pl.DataFrame], columns: list[str], declared: pl.Schema) -> pl.DataFrame:
    if frames:
        return pl.concat(frames, how="vertical")
    empty = {name: declared[name] for name in columns} | {SOURCE_FILE: pl.String, SOURCE_ROW: SOURCE_ROW_DTYPE}
    return pl.DataFrame(schema=empty)


def _reject(zone: LandingZone, table: str, check: _FileCheck, time_column: str | None) -> RejectedFile:
    problems = list(check.problems)
    hours: tuple[datetime, ...] = ()
    hours_known = True
    if time_column is not None:
        try:
            hours, hours_known = _hours(check, time_column)
        except _UNREADABLE as error:
            # The footer was readable but the time column's pages are not.
            problems.append(_unreadable(error))
            hours, hours_known = (), False
    zone.quarantine_copy(table, check.path)
    return RejectedFile(
        table=table,
        file=check.path.name,
        path=str(check.path),
        problems=tuple(problems),
        hours=hours,
        hours_known=hours_known,
    )


def _hours(check: _FileCheck, time_column: str) -> tuple[tuple[datetime, ...], bool]:
    """The UTC hour starts a rejected file's rows cover, and whether they can be known at all."""
    dtype = check.found.get(time_column) if check.found is not None else None
    if not isinstance(dtype, pl.Datetime):
        return (), False
    times = pl.scan_parquet(check.path).select(pl.col(time_column).drop_nulls())
    if dtype.time_zone is not None:
        hours = (
            times.select(pl.col(time_column).dt.convert_time_zone("UTC").dt.truncate("1h").unique().sort())
            .collect()
            .get_column(time_column)
            .to_list()
        )
        return tuple(hours), True
    # Naive: the wall clock of an unknown zone. Every hour it could fall in under any real UTC
    # offset is covered, so holding these hours back never misses one of the file's rows.
    lowest, highest = times.select(pl.col(time_column).min().alias("lo"), pl.col(time_column).max().alias("hi")).collect().row(0)
    if lowest is None:
        return (), True
    first = _floor_hour(lowest.replace(tzinfo=timezone.utc) - _MAX_AHEAD_OF_UTC)
    last = _floor_hour(highest.replace(tzinfo=timezone.utc) + _MAX_BEHIND_UTC)
    count = int((last - first) / _HOUR) + 1
    return tuple(first + i * _HOUR for i in range(count)), True


def _floor_hour(instant: datetime) -> datetime:
    return instant.replace(minute=0, second=0, microsecond=0)
