"""A lake built before its feature service changed (the demo after a day away, on new code): the
training job still writes, adding the service's new columns to the table; a training read refuses
the rows of the old definition, naming their days and what to run; once rebuilt, it reads them.
Real Dagster runs on a real Delta lake."""

from __future__ import annotations

import polars as pl
import pytest

from feature_pipelines.orchestration.runs import materialize_range
from feature_pipelines.orchestration.schedules import (
    DAILY_SNAPSHOT_JOB,
    HOURLY_SNAPSHOT_JOB,
    RAW_HOURLY_JOB,
    TRAINING_JOB,
)
from feature_pipelines.training.frames import TrainingFrameError, training_frame
from feature_pipelines.training.spec import FLIGHT_DELAY_TRAINING_SET, SERVICE_VERSION_COLUMN
from feature_pipelines_tests.conftest import Pipeline

SPEC = FLIGHT_DELAY_TRAINING_SET
NEW_COLUMN = "route_dep_delay_ratio_24h_7d"  # the on-demand feature flight_delay_v1 gained


def _run(pipeline: Pipeline, job: str, first: str, last: str) -> None:
    assert materialize_range(pipeline.defs, job, first, last, instance=pipeline.instance).result.success


def test_a_table_of_an_older_service_grows_its_columns_and_is_refused_until_rebuilt(pipeline: Pipeline) -> None:
    _run(pipeline, RAW_HOURLY_JOB, "2013-01-01-00:00", "2013-01-05-23:00")
    _run(pipeline, HOURLY_SNAPSHOT_JOB, "2013-01-01", "2013-01-04")
    _run(pipeline, DAILY_SNAPSHOT_JOB, "2013-01-01", "2013-01-04")
    _run(pipeline, TRAINING_JOB, "2013-01-02", "2013-01-03")
    built = pipeline.store.read(SPEC.name)
    assert built[SERVICE_VERSION_COLUMN].unique().to_list() == [SPEC.service.version]
    assert training_frame(pipeline.store, SPEC).frame.height == built.height

    # The table as the code before the service change wrote it: no on-demand column, no provenance.
    pipeline.store.write(SPEC.name, built.drop(NEW_COLUMN, SERVICE_VERSION_COLUMN), time_slice=None)

    # Today's code writes one day into it: the columns are added, the old day reads null there.
    _run(pipeline, TRAINING_JOB, "2013-01-03", "2013-01-03")
    table = pipeline.store.read(SPEC.name)
    assert {NEW_COLUMN, SERVICE_VERSION_COLUMN} <= set(table.columns)
    old_day = table.filter(pl.col("scheduled_departure_at").dt.date() == pl.date(2013, 1, 2))
    assert old_day.height > 0 and old_day[NEW_COLUMN].null_count() == old_day.height
    assert old_day[SERVICE_VERSION_COLUMN].null_count() == old_day.height

    with pytest.raises(TrainingFrameError) as refused:
        training_frame(pipeline.store, SPEC)
    message = str(refused.value)
    assert f"{old_day.height} row(s) over 1 day(s) (2013-01-02 .. 2013-01-02)" in message
    assert f"not the current {SPEC.service.version}" in message and "feature-pipelines backfill" in message

    _run(pipeline, TRAINING_JOB, "2013-01-02", "2013-01-02")
    rebuilt = training_frame(pipeline.store, SPEC).frame
    assert rebuilt.height == built.height
    assert SERVICE_VERSION_COLUMN not in rebuilt.columns  # provenance stays in the table, out of the vector
    assert rebuilt[NEW_COLUMN].drop_nulls().len() > 0
