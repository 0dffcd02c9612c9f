"""SQL over the lake with DuckDB: one view per Delta table, on any DuckDB connection."""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import polars as pl

from feature_pipelines.offline.delta_store import DeltaStore


def sql_name(table: str) -> str:
    """The DuckDB view name of a lake table: `_quality/check_results` -> `quality_check_results`."""
    return table.strip("_").replace("/", "_").replace("_/", "_")


def lake_tables(store: DeltaStore, candidates: Sequence[str]) -> list[str]:
    """The candidate tables that exist in the lake. Asked table by table (a Delta log check), so it
    works the same on a local path and an object store, where there is no directory to walk."""
    return [table for table in candidates if store.exists(table)]


def register_lake(
    connection: duckdb.DuckDBPyConnection, store: DeltaStore, tables: Sequence[str]
) -> duckdb.DuckDBPyConnection:
    """Make every existing table a view over its current version's files on `connection` (an
    in-memory one here, or the one an asset's `duckdb` resource opens), and return it."""
    for table in lake_tables(store, tables):
        connection.register(sql_name(table), store.open(table).to_pyarrow_dataset())
    return connection


def query_lake(store: DeltaStore, query: str, tables: Sequence[str]) -> pl.DataFrame:
    """Run `query` over the lake's tables (the caller's store carries its storage options)."""
    with duckdb.connect(":memory:") as connection:
        return register_lake(connection, store, tables).sql(query).pl()
