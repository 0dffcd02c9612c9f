"""Delta Lake tables on local disk or an object store: atomic time-window overwrites and time-travel reads."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import polars as pl
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import TableNotFoundError

from feature_pipelines.timeutil import require_utc


class TableMissingError(LookupError):
    """A table that a reader needs has never been written."""


@dataclass(frozen=True)
class TimeSlice:
    """A half-open window of a table's time column: [start, end), or (start, end] when closed='right'.

    Feature tables stamp a partition's snapshot at its end, so their slices are closed on the
    right; raw tables stamp events inside the partition, closed on the left.
    """

    column: str
    start: datetime
    end: datetime
    closed: str = "left"

    def __post_init__(self) -> None:
        require_utc(self.start, "slice start")
        require_utc(self.end, "slice end")
        if self.closed not in ("left", "right"):
            raise ValueError(f"closed must be 'left' or 'right', got {self.closed!r}")

    def sql_predicate(self) -> str:
        low, high = (">=", "<") if self.closed == "left" else (">", "<=")
        return (
            f"{self.column} {low} '{self.start.isoformat()}' AND {self.column} {high} '{self.end.isoformat()}'"
        )

    def polars_filter(self) -> pl.Expr:
        column = pl.col(self.column)
        if self.closed == "left":
            return (column >= self.start) & (column < self.end)
        return (column > self.start) & (column <= self.end)

    def describe(self) -> str:
        left, right = ("[", ")") if self.closed == "left" else ("(", "]")
        return f"{self.column} in {left}{self.start.isoformat()}, {self.end.isoformat()}{right}"


@dataclass(frozen=True)
class DeltaStore:
    """Where tables live: a root (local path or s3://, gs://, az:// URI) plus its storage options.

    Every table path and storage option in the project goes through here, so moving the lake to
    an object store is configuration.
    """

    root: str
    storage_options: Mapping[str, str] | None = None

    def table_uri(self, table: str) -> str:
        return f"{self.root.rstrip('/')}/{table}"

    def _options(self) -> dict[str, str] | None:
        return dict(self.storage_options) if self.storage_options else None

    def exists(self, table: str) -> bool:
        return DeltaTable.is_deltatable(self.table_uri(table), storage_options=self._options())

    def version(self, table: str) -> int:
        return self.open(table).version()

    def open(self, table: str, version: int | None = None, *, as_of: datetime | None = None) -> DeltaTable:
        """The table at its latest version, a pinned version, or as of an instant."""
        if version is not None and as_of is not None:
            raise ValueError("pass either version or as_of, not both")
        delta = self._load(table, version)
        if as_of is not None:
            delta.load_as_version(require_utc(as_of, "as_of"))
        return delta

    def _load(self, table: str, version: int | None) -> DeltaTable:
        try:
            return DeltaTable(self.table_uri(table), version=version, storage_options=self._options())
        except TableNotFoundError as error:
            raise TableMissingError(
                f"table {table!r} does not exist at {self.table_uri(table)}: materialize it first"
            ) from error

    def write(
        self,
        table: str,
        frame: pl.DataFrame,
        *,
        time_slice: TimeSlice | None,
        commit_metadata: Mapping[str, str] | None = None,
    ) -> int:
        """Replace exactly the rows of `time_slice` (or the whole table when None) in one commit.

        Rows outside the slice are rejected by Delta, so a bug cannot touch a neighbouring
        partition. Returns the committed version.
        """
        if time_slice is not None:
            stray = frame.filter(~time_slice.polars_filter())
            if stray.height:
                raise ValueError(
                    f"table {table!r}: {stray.height} rows fall outside the partition window "
                    f"{time_slice.describe()}; first: {stray.row(0, named=True)}"
                )
        write_deltalake(
            self.table_uri(table),
            frame,
            mode="overwrite",
            predicate=time_slice.sql_predicate() if time_slice is not None else None,
            schema_mode=None if time_slice is not None else "overwrite",
            storage_options=self._options(),
            commit_properties=CommitProperties(custom_metadata=dict(commit_metadata or {})),
        )
        return self.version(table)

    def append(self, table: str, frame: pl.DataFrame, *, commit_metadata: Mapping[str, str] | None = None) -> int:
        """Add rows in one commit (logs: the quality ledger, quarantined partitions, request logs)."""
        write_deltalake(
            self.table_uri(table),
            frame,
            mode="append",
            storage_options=self._options(),
            commit_properties=CommitProperties(custom_metadata=dict(commit_metadata or {})),
        )
        return self.version(table)

    def scan_version_at(self, table: str, moment: datetime) -> int:
        """The table's version as of an instant (the latest commit at or before it)."""
        return self.open(table, as_of=moment).version()

    def scan(self, table: str, *, version: int | None = None, as_of: datetime | None = None) -> pl.LazyFrame:
        """A lazy read of the table at its latest version, a pinned version, or as of an instant."""
        return pl.scan_delta(self.open(table, version, as_of=as_of))

    def read(self, table: str, *, time_slice: TimeSlice | None = None, version: int | None = None) -> pl.DataFrame:
        lazy = self.scan(table, version=version)
        if time_slice is not None:
            lazy = lazy.filter(time_slice.polars_filter())
        return lazy.collect()
