"""SQL over the lake with DuckDB (through dagster-duckdb's resource): one view per Delta table."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl
from dagster_duckdb import DuckDBResource

from feature_pipelines.offline.delta_store import DeltaStore


def lake_tables(store: DeltaStore) -> list[str]:
    """Tables directly under a local lake root (object-store roots list through the catalog)."""
    root = Path(store.root)
    return sorted(p.name for p in root.iterdir() if (p / "_delta_log").is_dir()) if root.is_dir() else []


@contextmanager
def lake_connection(duckdb: DuckDBResource, store: DeltaStore) -> Iterator[object]:
    """A DuckDB connection where every Delta table is a view over its current version's files."""
    with duckdb.get_connection() as connection:
        for table in lake_tables(store):
            connection.register(table, store.open(table).to_pyarrow_dataset())
        yield connection


def query_lake(store: DeltaStore, query: str) -> pl.DataFrame:
    """Run `query` over every table of the lake (the caller's store carries its storage options)."""
    with lake_connection(DuckDBResource(database=":memory:"), store) as connection:
        return connection.sql(query).pl()  # type: ignore[attr-defined]
