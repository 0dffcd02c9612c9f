"""The feature server's log of served values, read back for monitoring: a day of it, long or wide."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime

import polars as pl

from feature_pipelines.features.references import resolve_references
from feature_pipelines.features.spec import FeatureView
from feature_pipelines.monitoring.values import NUMERIC_DTYPES
from feature_pipelines.names import FEATURE_LOG_TABLE
from feature_pipelines.offline.delta_store import DeltaStore, TableMissingError


def read_served_log(store: DeltaStore, start: datetime, end: datetime, *, table: str = FEATURE_LOG_TABLE) -> pl.DataFrame:
    """The values served with request_time in [start, end); an empty frame if nothing was ever logged."""
    try:
        lazy = store.scan(table)
    except TableMissingError:
        return pl.DataFrame()
    return lazy.filter((pl.col("request_time") >= start) & (pl.col("request_time") < end)).collect()


def served_wide(log: pl.DataFrame, views: Mapping[str, FeatureView], references: Sequence[str]) -> pl.DataFrame:
    """One row per served entity row (request_id, entity_index), one column per referenced feature
    in its declared dtype, holding the value as served (numbers from `value_float`, others decoded
    from `value_json`). An entity row that was not served a feature holds null for it."""
    index = ["request_id", "entity_index"]
    wide: pl.DataFrame | None = None
    names: list[str] = []
    for request in resolve_references(list(references), views):
        for name in request.features:
            feature = request.view.feature(name)
            names.append(name)
            if feature.dtype in NUMERIC_DTYPES:
                value = pl.col("value_float").cast(feature.polars_dtype, strict=False)
            else:
                value = pl.col("value_json").map_elements(json.loads, return_dtype=feature.polars_dtype)
            rows = log.filter((pl.col("view") == request.view.name) & (pl.col("feature") == name)) if log.height else None
            column = (
                rows.select(*index, value.alias(name))
                if rows is not None
                else pl.DataFrame(schema={"request_id": pl.String, "entity_index": pl.Int64, name: feature.polars_dtype})
            )
            wide = column if wide is None else wide.join(column, on=index, how="full", coalesce=True)
    if wide is None:
        raise ValueError("served_wide: no feature references given")
    return wide.select(*index, *names).sort(index)
