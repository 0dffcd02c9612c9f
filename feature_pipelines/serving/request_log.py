"""The feature server's request log: every served value, with the instant it was read at.

Why: training/serving skew is only visible by comparing what the model was actually served with
what the offline store says it should have been served. The server cannot afford to write to
Delta on the request path, so `RequestLog.record` only appends a reference to the already
built response to an in-memory buffer (O(1), no I/O, no serialisation); a background thread
turns the buffer into rows and appends them to a Delta table every `flush_rows` rows or
`flush_interval_s` seconds, and once more on `close()`.

Table `_serving/feature_log` (through `DeltaStore.append`), one row per (request, entity row,
feature) -- long format, so that adding a feature never changes the schema:

    request_id       String              one id per HTTP request (also the X-Request-ID header)
    request_time     Datetime(us, UTC)   the `now` the values were read at
    entity_index     Int64               position of the entity row in the request
    view             String              the feature view, or "on_demand"
    feature_service  String              the feature service the request asked for (its name),
                                         null for a request by feature references (per-service
                                         skew and drift group by it; the logged values are the
                                         ones read, before the service's transformations)
    entity_key       String              JSON object of the identifying columns in declared
                                         order, e.g. {"origin":"JFK","dest":"LAX"}; for an
                                         on-demand feature, the keys of its input views and
                                         its request columns
    <join keys>      typed (String for this catalog), one column per join key of any view
                     (origin, dest, carrier, tailnum, ...), set for the keys of the row's view
                     and null otherwise. A view with a new join key adds its column to the
                     table (a metadata-only commit; earlier rows read it as null), and a server
                     of an older catalog writes null in the columns it does not know, so the
                     log keeps accepting rows across a catalog change (`append_log_rows`)
    feature          String              the feature name (not the full "view:feature")
    value_json       String              the served value as JSON, exact: "null" for null,
                                         non-finite floats as the strings "NaN", "Infinity",
                                         "-Infinity" (the protobuf JSON convention), datetimes
                                         as ISO-8601 strings
    value_float      Float64             the value when it is an integer or a float (NaN and
                                         inf included; integers beyond 2**53 are rounded, use
                                         value_json for them), else null
    status           String              PRESENT, NOT_FOUND or OUTSIDE_MAX_AGE
    event_timestamp  Datetime(us, UTC)   the snapshot the value came from (null when there is
                                         none, and for on-demand features)

A skew monitor rebuilds what the training path gives for the same (entity, request_time):

    log = store.read(FEATURE_LOG_TABLE).filter(pl.col("view") == view.name)
    entities = log.select("request_id", "entity_index", *view.entity_keys,
                          event_timestamp="request_time").unique()
    offline = get_historical_features(store, views, entities,
                                      [f"{view.name}:{f}" for f in features]).frame
    expected = offline.unpivot(index=["request_id", "entity_index"], on=features,
                               variable_name="feature", value_name="offline_value")
    compared = log.join(expected, on=["request_id", "entity_index", "feature"])
    # per feature: share of rows where value_float and offline_value differ (nulls included)

(pass `as_of=<request_time>` to compare against what the lake held at serving time rather than
what it holds now.) On-demand rows are recomputed with `apply_on_demand` on that frame.

Rows are never lost silently: a failed append is retried `max_attempts` times with backoff;
if it still fails, the error is logged at ERROR with the row count and the rows stay buffered
for the next flush. Only when the buffer exceeds `max_buffered_rows` (the store has been down
for a long time) are the oldest rows dropped, each time with an ERROR log and a count in
`stats()["dropped_rows"]`, because the alternative is running the server out of memory.
Several server processes may share one table: Delta appends from different writers commit
independently.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import polars as pl

from feature_pipelines.features.spec import FeatureView
from feature_pipelines.json_values import non_finite_token
from feature_pipelines.names import FEATURE_LOG_TABLE
from feature_pipelines.offline.delta_store import DeltaStore

logger = logging.getLogger(__name__)

UTC_US = pl.Datetime("us", "UTC")
_FIXED_COLUMNS: dict[str, pl.DataType] = {
    "request_id": pl.String(),
    "request_time": UTC_US,
    "entity_index": pl.Int64(),
    "view": pl.String(),
    "entity_key": pl.String(),
    "feature_service": pl.String(),
}
_VALUE_COLUMNS: dict[str, pl.DataType] = {
    "feature": pl.String(),
    "value_json": pl.String(),
    "value_float": pl.Float64(),
    "status": pl.String(),
    "event_timestamp": UTC_US,
}
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
# Rows per frame built at once by `requests_to_frame` (each build holds the GIL; ~0.6 ms here).
FRAME_CHUNK_ROWS = 2_000
_encode_string = json.encoder.encode_basestring_ascii  # what _ENCODER writes for a str (ensure_ascii)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)


class RequestLogError(RuntimeError):
    """Rows that could not be written when the log was closed (they are named, not dropped)."""


@dataclass(frozen=True)
class ServedFeature:
    """One served column: a feature's values for every entity row of a request."""

    view: str
    feature: str
    key_columns: tuple[str, ...]
    values: Sequence[Any]
    statuses: Sequence[str]
    event_timestamps: Sequence[datetime | None]


@dataclass(frozen=True)
class ServedRequest:
    """What one request served: the entity columns as given, and each feature column."""

    request_id: str
    request_time: datetime
    entities: Mapping[str, Sequence[Any]]
    features: Sequence[ServedFeature]
    feature_service: str | None = None

    @property
    def row_count(self) -> int:
        height = len(next(iter(self.entities.values()))) if self.entities else 0
        return height * len(self.features)


class RowSource(Protocol):
    """A served request in a form of its own, that writes its log rows itself (`add_rows`): the
    lean path queues what it already holds, and the writer thread turns it into the same rows a
    `ServedRequest` of it would give, without building one."""

    @property
    def request_id(self) -> str: ...

    @property
    def row_count(self) -> int: ...

    def add_rows(self, columns: LogColumns) -> None: ...


def value_json(value: Any) -> str:
    """A served value as exact JSON text; see the module docstring for non-finite floats.

    The common types take a fast path (this runs per logged value); the text is what
    `json.dumps` gives (floats by their shortest round-trip repr).
    """
    if value is None:
        return "null"
    kind = type(value)
    if kind is float:
        if math.isfinite(value):
            return repr(value)
        return f'"{non_finite_token(value)}"'
    if kind is int:
        return str(value)
    if kind is bool:
        return "true" if value else "false"
    if isinstance(value, datetime):
        return _ENCODER.encode(value.isoformat())
    return _ENCODER.encode(value)


def value_float(value: Any) -> float | None:
    """A served value as the log's `value_float`: ints and floats as float, anything else null."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def log_schema(key_columns: Mapping[str, pl.DataType]) -> dict[str, pl.DataType]:
    """The log table's columns for a set of typed join-key columns, in table order."""
    clash = sorted(set(key_columns) & (set(_FIXED_COLUMNS) | set(_VALUE_COLUMNS)))
    if clash:
        raise ValueError(f"request log: join key column(s) {clash} collide with the log's own columns")
    return {**_FIXED_COLUMNS, **key_columns, **_VALUE_COLUMNS}


def entity_keys_json(entities: Mapping[str, Sequence[Any]], keys: tuple[str, ...], height: int) -> list[str]:
    """Each entity row's `entity_key`: its `keys` columns as a JSON object, in that order."""
    if not keys:
        return ["{}"] * height
    columns = [entities[key] for key in keys]
    if all(type(value) is str for column in columns for value in column):
        # The common case, string keys: the encoder's own text, without a dict and an encode per row.
        heads = _key_heads(keys)
        return ["".join([part for head, value in zip(heads, row) for part in (head, _encode_string(value))]) + "}"
                for row in zip(*columns)]
    columns = [[v.isoformat() if isinstance(v, datetime) else v for v in column] for column in columns]
    return [_ENCODER.encode(dict(zip(keys, row))) for row in zip(*columns)]


@functools.lru_cache(maxsize=256)
def _key_heads(keys: tuple[str, ...]) -> tuple[str, ...]:
    """What precedes each key's value in `_ENCODER.encode({key: ...})`: '{"origin":', ',"dest":'."""
    return tuple(("{" if position == 0 else ",") + _encode_string(key) + ":" for position, key in enumerate(keys))


def requests_to_frame(
    requests: Sequence[ServedRequest | RowSource], key_columns: Mapping[str, pl.DataType]
) -> pl.DataFrame:
    """The log rows of some served requests (the flusher's work, off the request path).

    Made in frames of about `FRAME_CHUNK_ROWS` rows, concatenated: building a frame from Python
    lists is one call that holds the GIL throughout (~3 ms for 10,000 rows), and the server's
    event loop waits for the GIL meanwhile.
    """
    frames = []
    columns = LogColumns(key_columns)
    for served in requests:
        if isinstance(served, ServedRequest):
            columns.add_served(served)
        else:
            served.add_rows(columns)
        if columns.rows >= FRAME_CHUNK_ROWS:
            frames.append(columns.frame())
            columns = LogColumns(key_columns, micros=columns.micros, key_json=columns._key_json)
    if columns.rows or not frames:
        frames.append(columns.frame())
    return frames[0] if len(frames) == 1 else pl.concat(frames, rechunk=False)


class LogColumns:
    """The log table's columns as Python lists, filled one request at a time, then one frame.

    Built column by column (one list extend per column per request, rows feature-major then
    entity-minor) rather than row by row: this runs in the server process, and every
    millisecond it holds the GIL is taken from requests. Times go in as epoch microseconds,
    each distinct instant converted once (`micros`): polars' own conversion of Python datetimes
    took half of the time (~2 us per value).
    """

    def __init__(self, key_columns: Mapping[str, pl.DataType], *, micros: _Micros | None = None,
                 key_json: dict[tuple[tuple[str, ...], tuple[Any, ...]], str] | None = None) -> None:
        self.schema = log_schema(key_columns)
        self.lists: dict[str, list[Any]] = {name: [] for name in self.schema}
        self._request_ids = self.lists["request_id"]
        extend = {name: values.extend for name, values in self.lists.items()}
        self.add_request_id, self.add_request_time = extend["request_id"], extend["request_time"]
        self.add_index, self.add_view, self.add_entity_key = extend["entity_index"], extend["view"], extend["entity_key"]
        self.add_service = extend["feature_service"]
        self.add_keys = [(name, extend[name]) for name in key_columns]
        self.key_names = tuple(key_columns)
        self._key_json: dict[tuple[tuple[str, ...], tuple[Any, ...]], str] = {} if key_json is None else key_json
        self.add_feature, self.add_json, self.add_float = extend["feature"], extend["value_json"], extend["value_float"]
        self.add_status, self.add_event_time = extend["status"], extend["event_timestamp"]
        self.micros = micros or _Micros()

    def entity_key_json(self, keys: tuple[str, ...], values: tuple[Any, ...]) -> str:
        """One entity's `entity_key` (what `entity_keys_json` gives), each distinct entity encoded once."""
        text = self._key_json.get((keys, values))
        if text is None:
            text = self._key_json[keys, values] = entity_keys_json(dict(zip(keys, ([v] for v in values))), keys, 1)[0]
        return text

    @property
    def rows(self) -> int:
        return len(self._request_ids)

    def add_served(self, served: ServedRequest) -> None:
        features = served.features
        height = len(next(iter(served.entities.values()))) if served.entities else 0
        rows = height * len(features)
        if not rows:
            return
        micros = self.micros
        nulls = [None] * height
        key_json = {keys: entity_keys_json(served.entities, keys, height)
                    for keys in dict.fromkeys(feature.key_columns for feature in features)}
        self.add_request_id([served.request_id] * rows)
        self.add_request_time([micros(served.request_time)] * rows)
        self.add_service([served.feature_service] * rows)
        self.add_index(list(range(height)) * len(features))
        self.add_view([feature.view for feature in features for _ in nulls])
        self.add_entity_key([text for feature in features for text in key_json[feature.key_columns]])
        for name, add_key in self.add_keys:
            column = served.entities.get(name, nulls)
            add_key([value for feature in features for value in (column if name in feature.key_columns else nulls)])
        self.add_feature([feature.feature for feature in features for _ in nulls])
        values = [value for feature in features for value in feature.values]
        self.add_json([value_json(value) for value in values])
        self.add_float([value_float(value) for value in values])
        self.add_status([status for feature in features for status in feature.statuses])
        self.add_event_time([None if t is None else micros(t) for feature in features for t in feature.event_timestamps])

    def frame(self) -> pl.DataFrame:
        lengths = {name: len(values) for name, values in self.lists.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"request log: served columns of different lengths {lengths}")
        as_micros = {**self.schema, "request_time": pl.Int64(), "event_timestamp": pl.Int64()}
        return pl.DataFrame(self.lists, schema=as_micros).with_columns(
            pl.col("request_time", "event_timestamp").cast(UTC_US)
        )


class _Micros:
    """Epoch microseconds of datetimes, each distinct instant computed once (a naive one read as
    UTC, as polars reads it)."""

    def __init__(self) -> None:
        self._seen: dict[datetime, int] = {}

    def __call__(self, moment: datetime) -> int:
        micros = self._seen.get(moment)
        if micros is None:
            aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
            micros = self._seen[moment] = (aware - _EPOCH) // _ONE_US
        return micros


def append_log_rows(store: DeltaStore, frame: pl.DataFrame, *, table: str = FEATURE_LOG_TABLE) -> int:
    """Append log rows whatever join-key columns the table and `frame` each have (see the module
    docstring); the committed version. Anything else that differs (a retyped column) is refused
    by the append, as before."""
    return store.append(table, conform_to_log(store, frame, table=table))


def conform_to_log(store: DeltaStore, frame: pl.DataFrame, *, table: str = FEATURE_LOG_TABLE) -> pl.DataFrame:
    """`frame` in the log table's schema: the table first gains the columns only `frame` has
    (nullable, so its earlier rows read them as null), then `frame` gets null columns for those
    only the table has, in the table's column order."""
    if not store.exists(table):
        return frame
    schema = store.scan(table).collect_schema()
    added = [name for name in frame.columns if name not in schema]
    if added:
        store.add_columns(table, frame.select(added))
        logger.info("request log: added column(s) %s to %s (a view with a new join key)", added, table)
        schema = store.scan(table).collect_schema()
    return _in_schema(frame, schema)


def _in_schema(frame: pl.DataFrame, schema: Mapping[str, pl.DataType]) -> pl.DataFrame:
    """`frame` with the columns of `schema` in its order, null where `frame` has none."""
    if list(schema) == frame.columns:
        return frame
    return frame.select(
        pl.col(name) if name in frame.columns else pl.lit(None, dtype=dtype).alias(name) for name, dtype in schema.items()
    )


class RequestLog:
    """Buffers served requests and appends them to Delta from a background thread.

    `key_columns` fixes the typed join-key columns of the table (a Delta append cannot add
    columns), usually the union of the views' join keys, all String.
    """

    def __init__(
        self,
        store: DeltaStore,
        *,
        key_columns: Mapping[str, pl.DataType],
        table: str = FEATURE_LOG_TABLE,
        flush_rows: int = 10_000,
        flush_interval_s: float = 5.0,
        max_attempts: int = 3,
        retry_backoff_s: float = 0.2,
        max_buffered_rows: int = 2_000_000,
    ) -> None:
        if flush_rows < 1 or flush_interval_s <= 0 or max_attempts < 1:
            raise ValueError("request log: flush_rows, flush_interval_s and max_attempts must be positive")
        self.store = store
        self.table = table
        self.key_columns = dict(key_columns)
        log_schema(self.key_columns)  # refuse colliding names now, not at the first flush
        self.flush_rows = flush_rows
        self.flush_interval_s = flush_interval_s
        self.max_attempts = max_attempts
        self.retry_backoff_s = retry_backoff_s
        self.max_buffered_rows = max_buffered_rows
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._pending: list[ServedRequest | RowSource] = []
        self._pending_rows = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._written_rows = 0
        self._failed_flushes = 0
        self._dropped_rows = 0
        self._last_error: str | None = None
        self._table_schema: pl.Schema | None = None  # the table's columns as of the last append
        atexit.register(self._close_at_exit)

    # -- request path ---------------------------------------------------------------------------

    def record(self, served: ServedRequest | RowSource) -> None:
        """Buffer one request's served values; constant time, never blocks on I/O (a `RowSource`
        writes its rows at the next flush, in the writer thread)."""
        rows = served.row_count
        if rows == 0:
            return
        with self._lock:
            if self._closed:
                raise RequestLogError("request log is closed: the served values cannot be logged")
            self._pending.append(served)
            self._pending_rows += rows
            full = self._pending_rows >= self.flush_rows
        if full:
            self._wake.set()

    # -- background flushing --------------------------------------------------------------------

    def start(self) -> None:
        """Start the flusher thread; idempotent."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="feature-request-log", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            if self._stop.is_set():
                break
            failures = self._failed_flushes
            self.flush()
            if self._failed_flushes > failures:
                # The store is failing: wait a full interval (the buffer keeps filling) rather
                # than retrying at every wake-up from a full buffer.
                self._stop.wait(self.flush_interval_s)

    def _take(self) -> tuple[list[ServedRequest | RowSource], int]:
        with self._lock:
            batch, rows = self._pending, self._pending_rows
            self._pending, self._pending_rows = [], 0
        return batch, rows

    def _put_back(self, batch: list[ServedRequest | RowSource], rows: int) -> None:
        with self._lock:
            self._pending = [*batch, *self._pending]
            self._pending_rows += rows
            dropped = 0
            while self._pending_rows > self.max_buffered_rows and self._pending:
                oldest = self._pending.pop(0)
                self._pending_rows -= oldest.row_count
                dropped += oldest.row_count
            self._dropped_rows += dropped
        if dropped:
            logger.error(
                "request log: DROPPED %d rows (oldest first): %d rows were buffered, over "
                "max_buffered_rows=%d, because appends to %s keep failing",
                dropped, rows, self.max_buffered_rows, self.table,
            )

    def _to_frame(self, batch: list[ServedRequest | RowSource]
                  ) -> tuple[pl.DataFrame | None, list[ServedRequest | RowSource], int]:
        """The rows of a batch; a request that cannot be turned into rows (a bug: values that do
        not fit the declared key types) is dropped loudly instead of blocking every later flush."""
        try:
            return requests_to_frame(batch, self.key_columns), batch, sum(r.row_count for r in batch)
        except (pl.exceptions.PolarsError, TypeError, ValueError, KeyError, IndexError):
            logger.warning("request log: a batch failed to convert; isolating the bad request(s)")
        frames, kept = [], []
        for served in batch:
            try:
                frames.append(requests_to_frame([served], self.key_columns))
            except (pl.exceptions.PolarsError, TypeError, ValueError, KeyError, IndexError) as error:
                with self._lock:
                    self._dropped_rows += served.row_count
                logger.error(
                    "request log: DROPPED %d rows of request %s: they cannot be written to %s: %s",
                    served.row_count, served.request_id, self.table, error, exc_info=error,
                )
                continue
            kept.append(served)
        if not frames:
            return None, [], 0
        return pl.concat(frames), kept, sum(r.row_count for r in kept)

    def _conformed(self, frame: pl.DataFrame) -> pl.DataFrame:
        """`frame` in the table's schema, read (and evolved) only when a key column is new to it."""
        if self._table_schema is not None and all(name in self._table_schema for name in frame.columns):
            return _in_schema(frame, self._table_schema)
        frame = conform_to_log(self.store, frame, table=self.table)
        self._table_schema = frame.schema
        return frame

    def flush(self) -> int:
        """Append everything buffered now; the rows written (0 if the append keeps failing,
        in which case the rows stay buffered and the failure is logged at ERROR)."""
        with self._flush_lock:
            batch, rows = self._take()
            if not batch:
                return 0
            frame, batch, rows = self._to_frame(batch)
            if frame is None:
                return 0
            error: Exception | None = None
            for attempt in range(1, self.max_attempts + 1):
                try:
                    self.store.append(self.table, self._conformed(frame))
                except Exception as caught:  # noqa: BLE001 - any storage error; re-raised below as a log + retained rows
                    error = caught
                    self._table_schema = None  # another writer may have changed the schema: look again
                    logger.warning(
                        "request log: append of %d rows to %s failed (attempt %d/%d): %s",
                        rows, self.table, attempt, self.max_attempts, caught,
                    )
                    if attempt < self.max_attempts:
                        time.sleep(self.retry_backoff_s * 2 ** (attempt - 1))
                    continue
                with self._lock:
                    self._written_rows += rows
                return rows
            with self._lock:
                self._failed_flushes += 1
                self._last_error = f"{type(error).__name__}: {error}"
            logger.error(
                "request log: could not append %d rows to %s after %d attempts; keeping them "
                "for the next flush. Last error: %s",
                rows, self.table, self.max_attempts, error, exc_info=error,
            )
            self._put_back(batch, rows)
            return 0

    def close(self) -> None:
        """Stop the flusher and write what is left.

        Raises:
            RequestLogError: rows could not be written; they are counted in the message (and
                were logged at ERROR) rather than silently lost.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.flush()
        atexit.unregister(self._close_at_exit)
        with self._lock:
            left = self._pending_rows
        if left:
            raise RequestLogError(
                f"request log: {left} rows could not be appended to {self.table} "
                f"({self._last_error}); they are lost with this process"
            )

    def _close_at_exit(self) -> None:
        if not self._closed:
            logger.warning("request log: closed at interpreter exit; call close() on shutdown")
            self.close()

    def stats(self) -> dict[str, Any]:
        """Counters for /health and metrics: what is buffered, written, failed and dropped."""
        with self._lock:
            return {
                "pending_rows": self._pending_rows,
                "written_rows": self._written_rows,
                "failed_flushes": self._failed_flushes,
                "dropped_rows": self._dropped_rows,
                "last_error": self._last_error,
            }


def key_columns_of(views: Sequence[FeatureView]) -> dict[str, pl.DataType]:
    """Every join key of the views, String-typed, in first-appearance order (the log's key columns)."""
    return {key: pl.String() for view in views for key in view.entity_keys}
