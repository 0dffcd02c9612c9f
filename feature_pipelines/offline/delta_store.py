"""Delta Lake tables on local disk or an object store: atomic time-window overwrites and time-travel reads.

The only module that touches `deltalake` (a test enforces it), so commit-conflict retries and the
redaction of storage options apply to every table in the project.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import polars as pl
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake import Schema as DeltaSchema
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

from feature_pipelines.timeutil import require_utc

LOG = logging.getLogger(__name__)

# Storage-option keys whose values are credentials (matched case-insensitively as substrings).
SECRET_KEY_MARKERS = ("SECRET", "KEY", "TOKEN", "PASSWORD", "CREDENTIAL")
REDACTED = "***"
# Delta's default `delta.deletedFileRetentionDuration`: VACUUM refuses a shorter retention unless
# its check is disabled explicitly.
DEFAULT_VACUUM_RETENTION_HOURS = 168
# Shorter values are not searched for in error text: they would blank out ordinary words.
_MIN_REDACTED_LENGTH = 4

_T = TypeVar("_T")


class TableMissingError(LookupError):
    """A table that a reader needs has never been written."""


class CommitConflictError(RuntimeError):
    """Concurrent writers kept winning the commit race for a table until the attempts ran out."""


class DeltaStoreError(RuntimeError):
    """A Delta operation failed; the message names the table and never contains a secret option."""


def is_secret_option(key: str) -> bool:
    return any(marker in key.upper() for marker in SECRET_KEY_MARKERS)


def redact_options(options: Mapping[str, str] | None) -> dict[str, str]:
    """The options with every credential-looking value replaced, safe for logs, metadata and errors."""
    return {key: (REDACTED if is_secret_option(key) else value) for key, value in (options or {}).items()}


def redact_text(text: str, options: Mapping[str, str] | None) -> str:
    """`text` with every secret option value blanked out (object-store errors may echo them)."""
    for key, value in (options or {}).items():
        if is_secret_option(key) and len(str(value)) >= _MIN_REDACTED_LENGTH:
            text = text.replace(str(value), REDACTED)
    return text


@dataclass(frozen=True)
class CommitRetryPolicy:
    """Bounded exponential backoff with jitter for commit conflicts.

    Jitter keeps two writers that collided from colliding again on the same schedule; the bound
    turns a table that is hammered without end into a clear error instead of a hung run.
    """

    max_attempts: int = 8
    base_delay_seconds: float = 0.05
    max_delay_seconds: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.base_delay_seconds < 0 or self.max_delay_seconds < self.base_delay_seconds:
            raise ValueError(
                f"need 0 <= base_delay_seconds <= max_delay_seconds, got {self.base_delay_seconds}, {self.max_delay_seconds}"
            )

    def delay_after(self, attempt: int) -> float:
        """Seconds to wait after failed attempt `attempt` (1-based): half fixed, half random."""
        ceiling = min(self.max_delay_seconds, self.base_delay_seconds * 2 ** (attempt - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


@dataclass
class CommitConflictStats:
    """What one store saw: commit conflicts, retries made, and writes that gave up."""

    conflicts: int = 0
    retries: int = 0
    exhausted: int = 0


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
class KeyRange:
    """Rows whose string `column` lies in [first, last] (partition keys of one run, which sort in
    time order): the quarantine replaces exactly the partitions a run judged."""

    column: str
    first: str
    last: str

    def sql_predicate(self) -> str:
        quote = lambda text: "'" + text.replace("'", "''") + "'"  # noqa: E731
        return f"{self.column} >= {quote(self.first)} AND {self.column} <= {quote(self.last)}"

    def polars_filter(self) -> pl.Expr:
        return pl.col(self.column).is_between(pl.lit(self.first), pl.lit(self.last), closed="both")

    def describe(self) -> str:
        return f"{self.column} in [{self.first!r}, {self.last!r}]"


@dataclass(frozen=True)
class Slices:
    """Several disjoint slices replaced in one commit: the partitions of a range that passed
    their checks, around the ones held back."""

    parts: tuple[TimeSlice | KeyRange, ...]

    def __post_init__(self) -> None:
        if not self.parts:
            raise ValueError("Slices needs at least one slice")

    def sql_predicate(self) -> str:
        return " OR ".join(f"({part.sql_predicate()})" for part in self.parts)

    def polars_filter(self) -> pl.Expr:
        return pl.any_horizontal([part.polars_filter() for part in self.parts])

    def describe(self) -> str:
        shown = "; ".join(part.describe() for part in self.parts[:3])
        return shown + (f"; and {len(self.parts) - 3} more" if len(self.parts) > 3 else "")


@dataclass(frozen=True)
class DeltaStore:
    """Where tables live: a root (local path or s3://, gs://, az:// URI) plus its storage options.

    Every table path and storage option in the project goes through here, so moving the lake to
    an object store is configuration. Storage options never leave this object unredacted: its
    repr, `describe()` and every error it raises blank out credential-looking values.
    """

    root: str
    storage_options: Mapping[str, str] | None = field(default=None, repr=False)
    retry: CommitRetryPolicy = field(default_factory=CommitRetryPolicy, repr=False)
    conflict_stats: CommitConflictStats = field(default_factory=CommitConflictStats, compare=False, repr=False)

    def __repr__(self) -> str:
        return f"DeltaStore({self.describe()})"

    def describe(self) -> str:
        """Root and storage options with secrets redacted: safe for logs, metadata and the UI."""
        options = redact_options(self.storage_options)
        return f"root={self.root!r}, storage_options={options!r}" if options else f"root={self.root!r}"

    def table_uri(self, table: str) -> str:
        return f"{self.root.rstrip('/')}/{table}"

    def _options(self) -> dict[str, str] | None:
        return dict(self.storage_options) if self.storage_options else None

    def _guarded(self, table: str, operation: str, action: Callable[[], _T]) -> _T:
        """Run a Delta call; any Delta or I/O failure becomes a DeltaStoreError naming the table
        and operation, with secrets redacted. When the original text held a secret the cause is
        dropped (Dagster would print the chain); otherwise it is kept."""
        try:
            return action()
        except (TableNotFoundError, CommitFailedError):
            raise  # handled by callers: TableMissingError, retries
        except (DeltaError, OSError) as error:
            text = f"{type(error).__name__}: {error}"
            redacted = redact_text(text, self.storage_options)
            failure = DeltaStoreError(f"table {table!r} at {self.table_uri(table)}: {operation} failed: {redacted}")
            if redacted != text:
                raise failure from None
            raise failure from error

    def exists(self, table: str) -> bool:
        return self._guarded(
            table, "existence check", lambda: DeltaTable.is_deltatable(self.table_uri(table), storage_options=self._options())
        )

    def version(self, table: str) -> int:
        return self.open(table).version()

    def open(self, table: str, version: int | None = None, *, as_of: datetime | None = None) -> DeltaTable:
        """The table at its latest version, a pinned version, or as of an instant."""
        if version is not None and as_of is not None:
            raise ValueError("pass either version or as_of, not both")
        delta = self._load(table, version)
        if as_of is not None:
            moment = require_utc(as_of, "as_of")
            self._guarded(table, f"time travel to {moment.isoformat()}", lambda: delta.load_as_version(moment))
        return delta

    def _load(self, table: str, version: int | None) -> DeltaTable:
        try:
            return self._guarded(
                table,
                "open" if version is None else f"open at version {version}",
                lambda: DeltaTable(self.table_uri(table), version=version, storage_options=self._options()),
            )
        except TableNotFoundError as error:
            raise TableMissingError(
                f"table {table!r} does not exist at {self.table_uri(table)}: materialize it first"
            ) from error

    def _current(self, table: str) -> DeltaTable | None:
        """The table's latest snapshot, or None before its first commit."""
        try:
            return self._load(table, None)
        except TableMissingError:
            return None

    def write(
        self,
        table: str,
        frame: pl.DataFrame,
        *,
        time_slice: TimeSlice | KeyRange | Slices | None,
        commit_metadata: Mapping[str, str] | None = None,
    ) -> int:
        """Replace exactly the rows of `time_slice` (or the whole table when None) in one commit.

        Rows outside the slice are rejected by Delta, so a bug cannot touch a neighbouring
        partition. Returns the committed version.

        Commit conflicts (another writer committed rows in the same range after this write read
        the table) are retried under `self.retry`. A retry is safe because a predicate overwrite
        is idempotent: each attempt re-reads the latest version, removes whatever rows of the
        range are there (the other writer's included) and adds this frame, so the range ends up
        holding exactly one writer's rows, never both. Data files of a losing attempt are never
        referenced by the log, so readers cannot see them.
        """
        if time_slice is not None:
            stray = frame.filter(~time_slice.polars_filter())
            if stray.height:
                raise ValueError(
                    f"table {table!r}: {stray.height} rows fall outside the partition window "
                    f"{time_slice.describe()}; first: {stray.row(0, named=True)}"
                )
        return self._commit_with_retries(
            table,
            frame,
            target=time_slice.describe() if time_slice is not None else "the whole table",
            mode="overwrite",
            predicate=time_slice.sql_predicate() if time_slice is not None else None,
            schema_mode=None if time_slice is not None else "overwrite",
            commit_metadata=commit_metadata,
        )

    def append(self, table: str, frame: pl.DataFrame, *, commit_metadata: Mapping[str, str] | None = None) -> int:
        """Add rows in one commit (logs: the quality ledger, quarantined partitions, request logs).

        Delta rebases blind appends on concurrent commits itself; a conflict it still reports
        (say, two writers creating the table at once) is retried like a write: an attempt that
        failed to commit added nothing, so retrying cannot duplicate rows.
        """
        return self._commit_with_retries(
            table, frame, target="appended rows", mode="append", predicate=None, schema_mode=None, commit_metadata=commit_metadata
        )

    def history(self, table: str) -> list[dict[str, Any]]:
        """The table's commits, newest first (version, timestamp in ms, operation, commit metadata)."""
        return self._guarded(table, "history", lambda: self.open(table).history())

    def delete_where(self, table: str, predicate: str) -> int:
        """Delete the rows matching a SQL `predicate` in one commit; returns the rows deleted."""
        delta = self.open(table)
        metrics = self._guarded(table, f"delete where {predicate}", lambda: delta.delete(predicate))
        return int(metrics["num_deleted_rows"])

    def vacuum(self, table: str, *, retention_hours: int) -> list[str]:
        """Remove every file that no version newer than `retention_hours` references (files removed
        by any earlier commit too); returns their paths. Below Delta's default retention (168 h) its
        guard is disabled explicitly: time travel to the versions whose files go is lost, and a
        writer committing meanwhile could lose its uncommitted files."""
        delta = self.open(table)
        return self._guarded(
            table, f"vacuum at {retention_hours} h retention",
            lambda: delta.vacuum(retention_hours=retention_hours, dry_run=False,
                                 enforce_retention_duration=retention_hours >= DEFAULT_VACUUM_RETENTION_HOURS, full=True),
        )

    def add_missing_columns(self, table: str, frame: pl.DataFrame) -> list[str]:
        """Add to an existing table the columns of `frame` it lacks (one metadata-only commit; its
        earlier rows read null there), so a writer whose schema grew keeps writing to a table an
        older version created. Returns the names added (none for a new table)."""
        if not self.exists(table):
            return []
        existing = {f.name for f in self.open(table).schema().fields}
        new = [name for name in frame.columns if name not in existing]
        if new:
            self.add_columns(table, frame.select(new).head(0))
        return new

    def add_columns(self, table: str, columns: pl.DataFrame) -> int:
        """Add the (nullable) columns of `columns`' schema to the table in one metadata-only commit;
        its earlier rows read null there. Returns the committed version."""
        fields = list(DeltaSchema.from_arrow(columns.head(0).to_arrow().schema).fields)
        delta = self.open(table)
        self._guarded(table, f"add columns {columns.columns}", lambda: delta.alter.add_columns(fields))
        return delta.version()

    def _commit_with_retries(
        self,
        table: str,
        frame: pl.DataFrame,
        *,
        target: str,
        mode: str,
        predicate: str | None,
        schema_mode: str | None,
        commit_metadata: Mapping[str, str] | None,
    ) -> int:
        for attempt in range(1, self.retry.max_attempts + 1):
            try:
                return self._commit_once(table, frame, mode=mode, predicate=predicate, schema_mode=schema_mode, commit_metadata=commit_metadata)
            except CommitFailedError as error:
                self.conflict_stats.conflicts += 1
                reason = redact_text(str(error).splitlines()[0], self.storage_options)
                if attempt == self.retry.max_attempts:
                    self.conflict_stats.exhausted += 1
                    raise CommitConflictError(
                        f"table {table!r} ({target}): gave up after {attempt} attempts, concurrent writers kept "
                        f"committing first; last conflict: {reason}. Nothing of this write was committed; "
                        "re-run it (the overwrite is idempotent) or stop the other backfill of these partitions."
                    ) from None
                delay = self.retry.delay_after(attempt)
                self.conflict_stats.retries += 1
                LOG.warning(
                    "table %r (%s): commit conflict on attempt %d of %d (%s); retrying in %.3f s",
                    table, target, attempt, self.retry.max_attempts, reason, delay,
                )
                time.sleep(delay)
        raise AssertionError("unreachable: the loop returns or raises")

    def _commit_once(
        self,
        table: str,
        frame: pl.DataFrame,
        *,
        mode: str,
        predicate: str | None,
        schema_mode: str | None,
        commit_metadata: Mapping[str, str] | None,
    ) -> int:
        """One attempt against the latest snapshot; returns the version this attempt committed."""
        current = self._current(table) or self._create_empty(table, frame)
        self._guarded(
            table,
            f"{mode} commit",
            lambda: write_deltalake(
                current,
                frame,
                mode=mode,  # type: ignore[arg-type]
                predicate=predicate,
                schema_mode=schema_mode,  # type: ignore[arg-type]
                commit_properties=CommitProperties(custom_metadata=dict(commit_metadata or {})),
            ),
        )
        return current.version()  # the write advanced this snapshot to its own commit

    def _create_empty(self, table: str, frame: pl.DataFrame) -> DeltaTable:
        """Create the table empty (version 0) before its first data commit.

        Delta's conflict check works from the snapshot a writer read. Two writers that both
        found no table would each commit "create with my rows" and the second would be rebased
        onto the first without removing its rows: the overlap would hold both. Writing data only
        against an existing snapshot makes every data commit conflict-checked. Two creators
        racing here both create the same empty table; the loser's error is expected and the
        table it then finds is used.
        """
        try:
            self._guarded(
                table,
                "create",
                lambda: write_deltalake(self.table_uri(table), frame.head(0), mode="ignore", storage_options=self._options()),
            )
        except (CommitFailedError, DeltaStoreError):
            if self._current(table) is None:
                raise  # not a lost creation race: the table still does not exist
            LOG.info("table %r: another writer created it first", table)
        created = self._current(table)
        if created is None:
            raise DeltaStoreError(f"table {table!r} at {self.table_uri(table)}: created, yet no table is found there")
        return created

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
        return self._guarded(table, "read", lazy.collect)
