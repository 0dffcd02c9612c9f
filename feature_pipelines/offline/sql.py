"""SQL over the lake with DuckDB (through dagster-duckdb's resource): one view per Delta table."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import polars as pl
from dagster_duckdb import DuckDBResource

from feature_pipelines.offline.delta_store import DeltaStore


def sql_name(table: str) -> str:
    """The DuckDB view name of a lake table: `_quality/check_results` -> `quality_check_results`."""
    return table.strip("_").replace("/", "_").replace("_/", "_")


def lake_tables(store: DeltaStore, candidates: Sequence[str]) -> list[str]:
    """The candidate tables that exist in the lake. Asked table by table (a Delta log check), so it
    works the same on a local path and an object store, where there is no directory to walk."""
    return [table for table in candidates if store.exists(table)]


@contextmanager
def lake_connection(duckdb: DuckDBResource, store: DeltaStore, tables: Sequence[str]) -> Iterator[object]:
    """A DuckDB connection where every existing table is a view over its current version's files."""
    with duckdb.get_connection() as connection:
        for table in lake_tables(store, tables):
            connection.register(sql_name(table), store.open(table).to_pyarrow_dataset())
        yield connection


def query_lake(store: DeltaStore, query: str, tables: Sequence[str]) -> pl.DataFrame:
    """Run `query` over the lake's tables (the caller's store carries its storage options)."""
    with lake_connection(DuckDBResource(database=":memory:"), store, tables) as connection:
        return connection.sql(query).pl()  # type: ignore[attr-defined]
