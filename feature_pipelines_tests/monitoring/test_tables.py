"""A monitoring table made by an older monitor (fewer figures) takes the new monitor's rows: the new
figures are added as columns, the old day's rows read null there and keep their values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from feature_pipelines.monitoring.tables import DAY_COLUMN, SKEW
from feature_pipelines.offline.delta_store import DeltaStore, TimeSlice

DAY = datetime(2026, 12, 1, tzinfo=UTC)


def _rows(day: datetime) -> pl.DataFrame:
    schema = SKEW.schema()
    values = {name: (day if name == DAY_COLUMN else None) for name in schema}
    values["view"], values["feature"] = "route_delay_stats", "route_dep_delay_mean_24h"
    return pl.DataFrame([values], schema=schema, orient="row")


def test_a_table_of_an_older_monitor_gains_the_new_figures(tmp_path: Path) -> None:
    store = DeltaStore(root=str(tmp_path))
    newer_figures = list(SKEW.schema())[-3:]
    older = _rows(DAY).drop(newer_figures)
    store.write(SKEW.name, older, time_slice=TimeSlice(DAY_COLUMN, DAY, DAY + timedelta(days=1)))

    next_day = DAY + timedelta(days=1)
    SKEW.write(store, _rows(next_day).to_dicts(), next_day, next_day + timedelta(days=1))

    table = store.read(SKEW.name).sort(DAY_COLUMN)
    assert set(newer_figures) <= set(table.columns)
    assert table[DAY_COLUMN].to_list() == [DAY, next_day]
    assert table["feature"].to_list() == ["route_dep_delay_mean_24h"] * 2
    assert table.filter(pl.col(DAY_COLUMN) == DAY).select(newer_figures).null_count().sum_horizontal().item() == 3
