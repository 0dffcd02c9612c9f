"""Running a job over a range of partitions as one run (the backfill policy's single-run shape)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from dagster import (
    AssetKey,
    DagsterInstance,
    Definitions,
    ExecuteInProcessResult,
    TimeWindow,
    TimeWindowPartitionsDefinition,
)

from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.features.spec import Partitioning
from feature_pipelines.orchestration.clock import clock_tags
from feature_pipelines.orchestration.partitions import (
    HOUR_KEY_FORMAT,
    partition_of_hour,
    partitions_for,
    raw_partitions,
)
from feature_pipelines.orchestration.schedules import (
    DAILY_SNAPSHOT_JOB,
    DIMENSIONS_JOB,
    HOURLY_SNAPSHOT_JOB,
    RAW_HOURLY_JOB,
    TRAINING_JOB,
)
from feature_pipelines.settings import Settings
from feature_pipelines.timeutil import floor_to, require_utc
from feature_pipelines.training.spec import FLIGHT_DELAY_TRAINING_SET

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


@dataclass(frozen=True)
class RangeRun:
    job_name: str
    first_partition: str
    last_partition: str
    result: ExecuteInProcessResult


def partition_keys_in(
    partitions: TimeWindowPartitionsDefinition, start: datetime, end: datetime, *, overlapping: bool = False
) -> list[str]:
    """The keys of the partitions inside [start, end) (or overlapping it), in order."""
    start, end = require_utc(start, "start"), require_utc(end, "end")
    keys = partitions.get_partition_keys_in_time_window(time_window=TimeWindow(start, end))
    if not overlapping:
        keys = [
            key
            for key in keys
            if partitions.time_window_for_partition_key(key).start >= start
            and partitions.time_window_for_partition_key(key).end <= end
        ]
    return list(keys)


def partition_keys_between(
    partitions: TimeWindowPartitionsDefinition, start: datetime, end: datetime, *, overlapping: bool = False
) -> tuple[str, str] | None:
    """First and last keys of the partitions inside [start, end) (or overlapping it), or None."""
    keys = partition_keys_in(partitions, start, end, overlapping=overlapping)
    return (keys[0], keys[-1]) if keys else None


def materialize_range(
    defs: Definitions,
    job_name: str,
    first_partition: str,
    last_partition: str,
    *,
    instance: DagsterInstance,
    raise_on_error: bool = True,
    assets: Sequence[str] | None = None,
    now: datetime | None = None,
    log_level: str | None = None,
) -> RangeRun:
    """One run over [first_partition, last_partition]: every asset reads and writes the range at once.

    Raw tables are daily partitions judged hour by hour; hour keys for the raw job ("2013-01-05-15:00")
    run the days holding them on a clock at the end of the last hour, unless `now` says otherwise.
    `assets` narrows the run to some of the job's assets; empty partition keys run an
    unpartitioned job. `now` is the run's clock (see orchestration.clock); `log_level` quiets the
    console (the event log in the instance keeps everything, for the UI).
    """
    if job_name == RAW_HOURLY_JOB and len(first_partition) == len(HOUR_KEY):
        first_partition, last_partition, now = _raw_days(first_partition, last_partition, now)
    tags = {RANGE_START_TAG: first_partition, RANGE_END_TAG: last_partition} if first_partition else {}
    if now is not None:
        tags.update(clock_tags(now))
    result = defs.resolve_job_def(job_name).execute_in_process(
        instance=instance,
        tags=tags or None,
        raise_on_error=raise_on_error,
        asset_selection=[AssetKey(name) for name in assets] if assets is not None else None,
        run_config={"loggers": {"console": {"config": {"log_level": log_level}}}} if log_level else None,
    )
    return RangeRun(job_name, first_partition, last_partition, result)


HOUR_KEY = "2013-01-05-15:00"


def _raw_days(first_hour: str, last_hour: str, now: datetime | None) -> tuple[str, str, datetime]:
    """The raw days holding two hour keys, and the clock that stops at the end of the last hour."""
    end = datetime.strptime(last_hour, HOUR_KEY_FORMAT).replace(tzinfo=UTC) + timedelta(hours=1)
    return partition_of_hour(first_hour), partition_of_hour(last_hour), now or end


def raw_history_lead() -> timedelta:
    """The longest raw history any feature view's trailing window reads."""
    return max(view.max_window + view.source.max_lateness for view in FEATURE_VIEWS.values())


def training_reach() -> timedelta:
    """How far before its day a training row reads features: its lead time plus each view's TTL,
    rounded up to whole days (feature partitions are days)."""
    spec = FLIGHT_DELAY_TRAINING_SET
    reach = max(spec.feature_reach(FEATURE_VIEWS[name]) for name in spec.view_names)
    return timedelta(days=math.ceil(reach / timedelta(days=1)))


@dataclass(frozen=True)
class PlannedRun:
    """One run of a backfill: a job over a contiguous range of its partitions."""

    job_name: str
    first_partition: str
    last_partition: str
    partitions: int


def plan_window(
    settings: Settings, start: datetime, end: datetime, *, chunk: int | None = None, now: datetime | None = None
) -> list[PlannedRun]:
    """The runs of a backfill of snapshots in (start, end], in order, each job's range cut into
    runs of at most `chunk` partitions (None: one run per job). Values do not depend on the cut.

    Dimension tables; the feature views from `start` minus the training set's reach (its rows read
    features up to a TTL before their day), raw hours from there minus the longest trailing window
    (so no feature is computed from partial history); the hourly-snapshot views (and their
    publish) over every day overlapping the range, the open day included; the daily-snapshot views
    over the whole days inside it; labels and training sets over every whole day whose next day's
    raw hours are there. Raw hours go on past `end` up to a day, as far as the clock `now`
    (default `end`) and the data allow: the labels of `end`'s last day need them. Raw tables are
    days: every day overlapping the raw hours runs, the open one up to the clock.
    """
    plan = [PlannedRun(DIMENSIONS_JOB, "", "", 1)]
    # Training rows read features up to their TTL before their day, so features start that much earlier.
    features_start = max(settings.data_start, start - training_reach())
    raw_end = max(end, min(end + timedelta(days=1), floor_to(now or end, timedelta(hours=1)), settings.data_end))
    jobs = [
        (RAW_HOURLY_JOB, raw_partitions(settings), max(settings.data_start, features_start - raw_history_lead()), True),
        (HOURLY_SNAPSHOT_JOB, partitions_for(Partitioning.DAILY, settings, in_progress=True), features_start, True),
        (DAILY_SNAPSHOT_JOB, partitions_for(Partitioning.DAILY, settings), features_start, False),
        # Labels need the raw hours of the day after: training sets stop a day before the raw hours do.
        (TRAINING_JOB, partitions_for(Partitioning.DAILY, settings), start, False),
    ]
    ends = {RAW_HOURLY_JOB: raw_end, TRAINING_JOB: min(end, raw_end - timedelta(days=1))}
    for job_name, partitions, job_start, overlapping in jobs:
        job_end = ends.get(job_name, end)
        keys = partition_keys_in(partitions, job_start, job_end, overlapping=overlapping)
        step = chunk or len(keys) or 1
        for first in range(0, len(keys), step):
            part = keys[first:first + step]
            plan.append(PlannedRun(job_name, part[0], part[-1], len(part)))
    return plan


def materialize_window(
    defs: Definitions,
    settings: Settings,
    start: datetime,
    end: datetime,
    *,
    instance: DagsterInstance,
    now: datetime,
    raise_on_error: bool = True,
    chunk: int | None = None,
    log_level: str | None = None,
    on_run: Callable[[PlannedRun, RangeRun], None] | None = None,
) -> list[RangeRun]:
    """The demo's and the benchmark's backfill of snapshots in (start, end], on one clock `now`
    (every run carries it: no run computes past what an earlier run of the backfill covered).

    A failed run does not stop the next: its good partitions were written, and each later run
    refuses only the partitions that read a failed one, naming them. A failed dimensions run
    stops the backfill (every raw check needs the dimensions).
    """
    runs = []
    for planned in plan_window(settings, start, end, chunk=chunk, now=now):
        run = materialize_range(defs, planned.job_name, planned.first_partition, planned.last_partition, instance=instance,
                                raise_on_error=raise_on_error, now=now, log_level=log_level)
        runs.append(run)
        if on_run is not None:
            on_run(planned, run)
        if planned.job_name == DIMENSIONS_JOB and not run.result.success:
            break
    return runs


def default_demo_window(settings: Settings, now: datetime, days: int) -> tuple[datetime, datetime]:
    """The last `days` days of data ending at the last closed hour (or the end of the data)."""
    end = min(now.replace(minute=0, second=0, microsecond=0), settings.data_end)
    start = max(settings.data_start, end - timedelta(days=days))
    return start, end
