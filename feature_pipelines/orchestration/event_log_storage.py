"""Dagster's SQLite event log with the bookkeeping of a backfill made cheap: the local instance's
event log storage (`deploy/dagster.local.yaml`).

Dagster's `SqliteEventLogStorage` keeps one database per run and an index database for asset
events, in the same files and schema as here. Per event it builds a new SQLAlchemy engine for
each database it touches (four per materialization: the run's, the index's, and one to ask
whether a table exists), and commits with a full fsync. A year's backfill records about ten
thousand events, one planned event and one materialization per partition, so the bookkeeping
cost more than the computation (`benchmarks/bench_backfill.py` reports the split).

This subclass changes how the files are written, not what is in them:
- one engine per database, kept while the storage lives (NullPool: a connection is still opened
  per transaction, so several processes share the files exactly as before);
- `PRAGMA synchronous=NORMAL` on each connection. The databases are already in WAL mode, where
  NORMAL is crash-safe for the process: a commit is durable once the WAL reaches the disk at the
  next checkpoint, and only an OS crash or power loss can lose the last commits. The lake (Delta)
  and the quality ledger remain the record of what was computed; the event log is its index;
- a batch of events (Dagster sends one per partition range when `DAGSTER_EVENT_BATCH_SIZE` is
  set, see `definitions.py`) is written in one transaction per database;
- a planned asset check over a partition range is serialized once, not once per partition.

Instances that used Dagster's own class read and write the same files with this one, and back.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as db
from dagster import Field, StringSource
from dagster._core.events import ASSET_CHECK_EVENTS, ASSET_EVENTS, EVENT_TYPE_TO_PIPELINE_RUN_STATUS
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.event_log import SqliteEventLogStorage
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable
from dagster._core.storage.sqlalchemy_compat import db_result
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._serdes import ConfigurableClassData, serialize_value
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

# Run databases whose engines stay open: a run writes its own, the webserver reads a few at once.
OPEN_RUN_DATABASES = 16
# Events per batch a step hands the storage for a partition range (Dagster reads this variable).
EVENT_BATCH_SIZE_VARIABLE = "DAGSTER_EVENT_BATCH_SIZE"
EVENT_BATCH_SIZE = 1000


def default_event_log_dir() -> str:
    """Where Dagster's default SQLite storage keeps the event logs: $DAGSTER_HOME/history/runs."""
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        raise ValueError("DAGSTER_HOME is not set: the event log storage needs it or an explicit base_dir")
    return os.path.join(home, "history", "runs")


def _synchronous_normal(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class BatchedSqliteEventLogStorage(SqliteEventLogStorage):
    """SQLite event log storage with kept engines, WAL commits without fsync, and batched writes.

    Configure it in dagster.yaml; `base_dir` defaults to Dagster's own place for the event logs:

        event_log_storage:
          module: feature_pipelines.orchestration.event_log_storage
          class: BatchedSqliteEventLogStorage
    """

    def __init__(self, base_dir: str | None = None, inst_data: ConfigurableClassData | None = None) -> None:
        # Set before the parent's constructor: it already connects to the index database.
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._tables_present: set[str] = set()
        super().__init__(base_dir or default_event_log_dir(), inst_data)

    @classmethod
    def config_type(cls) -> dict[str, Field]:
        return {"base_dir": Field(StringSource, is_required=False)}

    @classmethod
    def from_config_value(  # type: ignore[override]
        cls, inst_data: ConfigurableClassData | None, config_value: dict[str, str]
    ) -> BatchedSqliteEventLogStorage:
        return cls(inst_data=inst_data, **config_value)

    def _engine(self, shard: str) -> Engine:
        """The shard's engine, created once; the least recently used run databases are let go."""
        engine = self._engines.get(shard)
        if engine is not None:
            self._engines.move_to_end(shard)
            return engine
        engine = db.create_engine(
            self.conn_string_for_shard(shard),
            poolclass=NullPool,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS},
        )
        db.event.listen(engine, "connect", _synchronous_normal)
        self._engines[shard] = engine
        if len(self._engines) > OPEN_RUN_DATABASES + 1:
            _, oldest = self._engines.popitem(last=False)
            oldest.dispose()
        return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        with self._db_lock:
            engine = self._engine(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def has_table(self, table_name: str) -> bool:
        """Whether the index database has a table; a table once there stays (asked per asset event)."""
        if table_name not in self._tables_present and super().has_table(table_name):
            self._tables_present.add(table_name)
        return table_name in self._tables_present

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        """A batch of one run's events (its planned events at creation, a step's materializations
        over a partition range): one transaction for the run's database and one for the index's
        asset events. Asset check and run status events are mirrored into the index as Dagster does."""
        if len({event.run_id for event in events}) != 1:
            super().store_event_batch(events)
            return
        statements = [self.prepare_insert_event(event) for event in events]
        with self.run_connection(events[0].run_id) as conn:
            for statement in statements:
                conn.execute(statement)
        asset_events = [(event, statement) for event, statement in zip(events, statements, strict=True) if _is_asset_event(event)]
        if asset_events:
            with self.index_transaction() as conn:
                event_ids = []
                for _, statement in asset_events:
                    with db_result(conn, statement) as result:
                        event_ids.append(result.inserted_primary_key[0])
                self._store_asset_event_tags(conn, [event for event, _ in asset_events], event_ids)
                for event, event_id in _last_per_asset_and_type([event for event, _ in asset_events], event_ids):
                    self._store_asset_event(conn, event, event_id)
        for event, statement in zip(events, statements, strict=True):
            if event.is_dagster_event and event.dagster_event_type in ASSET_CHECK_EVENTS:
                with self.index_connection() as conn, db_result(conn, statement) as result:
                    event_id = result.inserted_primary_key[0]
                self.store_asset_check_event(event, event_id)
            elif event.is_dagster_event and event.dagster_event_type in EVENT_TYPE_TO_PIPELINE_RUN_STATUS:
                with self.index_connection() as conn:
                    conn.execute(statement)

    def _store_asset_check_evaluation_planned(self, event: EventLogEntry, event_id: int | None) -> None:
        """As Dagster's: one planned execution row per partition of the check's run, each holding
        the planned event. Dagster serializes the event again for every row (a year's range: 365
        times per check, a third of the raw tables' bookkeeping); here it is serialized once."""
        planned = event.get_dagster_event().asset_check_planned_data
        partition_keys = planned.partitions_subset.get_partition_keys() if planned.partitions_subset else [None]
        row = {
            "asset_key": planned.asset_key.to_string(),
            "check_name": planned.check_name,
            "run_id": event.run_id,
            "execution_status": AssetCheckExecutionRecordStatus.PLANNED.value,
            "evaluation_event": serialize_value(event),
            "evaluation_event_timestamp": self._event_insert_timestamp(event),
            "evaluation_event_storage_id": event_id,
        }
        with self.index_connection() as conn:
            conn.execute(AssetCheckExecutionsTable.insert(), [{**row, "partition": key} for key in partition_keys])

    def dispose(self) -> None:
        super().dispose()
        for engine in self._engines.values():
            engine.dispose()
        self._engines.clear()


def _last_per_asset_and_type(events: Sequence[EventLogEntry], event_ids: Sequence[int]) -> list[tuple[EventLogEntry, int]]:
    """The events whose asset-row updates decide the asset table's final state, in their order.

    Dagster keeps one row per asset (its last materialization, last run, last event time), and
    each event type sets the same columns every time: applying only the last event of each
    asset and type, in order, leaves the row as applying all of them would. A range's batch of
    365 materializations of one asset then updates its row once instead of 365 times, each a
    failed INSERT and an UPDATE carrying the serialized event."""
    last: dict[tuple[str, str], int] = {}
    for position, event in enumerate(events):
        last[(event.get_dagster_event().asset_key.to_string(), event.get_dagster_event().event_type_value)] = position
    return [(events[position], event_ids[position]) for position in sorted(last.values())]


def _is_asset_event(event: EventLogEntry) -> bool:
    return bool(event.is_dagster_event and event.dagster_event_type in ASSET_EVENTS and event.get_dagster_event().asset_key)
