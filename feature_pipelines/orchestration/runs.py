"""Running a job over a range of partitions as one run (the backfill policy's single-run shape)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

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
from feature_pipelines.orchestration.partitions import partitions_for
from feature_pipelines.orchestration.schedules import (
    DAILY_SNAPSHOT_JOB,
    DIMENSIONS_JOB,
    HOURLY_SNAPSHOT_JOB,
    RAW_HOURLY_JOB,
    TRAINING_JOB,
)
from feature_pipelines.settings import Settings
from feature_pipelines.timeutil import require_utc

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


@dataclass(frozen=True)
class RangeRun:
    job_name: str
    first_partition: str
    last_partition: str
    result: ExecuteInProcessResult


def partition_keys_between(
    partitions: TimeWindowPartitionsDefinition, start: datetime, end: datetime, *, overlapping: bool = False
) -> tuple[str, str] | None:
    """First and last keys of the partitions inside [start, end) (or overlapping it), or None."""
    start, end = require_utc(start, "start"), require_utc(end, "end")
    keys = partitions.get_partition_keys_in_time_window(time_window=TimeWindow(start, end))
    if not overlapping:
        keys = [
            key
            for key in keys
            if partitions.time_window_for_partition_key(key).start >= start
            and partitions.time_window_for_partition_key(key).end <= end
        ]
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
) -> RangeRun:
    """One run over [first_partition, last_partition]: every asset reads and writes the range at once.

    `assets` narrows the run to some of the job's assets; empty partition keys run an
    unpartitioned job.
    """
    result = defs.resolve_job_def(job_name).execute_in_process(
        instance=instance,
        tags={RANGE_START_TAG: first_partition, RANGE_END_TAG: last_partition} if first_partition else None,
        raise_on_error=raise_on_error,
        asset_selection=[AssetKey(name) for name in assets] if assets is not None else None,
    )
    return RangeRun(job_name, first_partition, last_partition, result)


def raw_history_lead() -> timedelta:
    """The longest raw history any feature view's trailing window reads."""
    return max(view.max_window + view.source.max_lateness for view in FEATURE_VIEWS.values())


def materialize_window(
    defs: Definitions,
    settings: Settings,
    start: datetime,
    end: datetime,
    *,
    instance: DagsterInstance,
    raise_on_error: bool = True,
) -> list[RangeRun]:
    """The demo's and the benchmark's backfill of snapshots in (start, end]: one run per job.

    Dimension tables; raw hours from `start` minus the longest trailing window (so no feature is
    computed from partial history); the hourly-snapshot views (and their publish) over every day
    overlapping the range, the open day included; the daily-snapshot views over the whole days
    inside it; labels and training sets over the whole days before the last.
    """
    dimensions = materialize_range(defs, DIMENSIONS_JOB, "", "", instance=instance, raise_on_error=raise_on_error)
    if not dimensions.result.success:
        return [dimensions]
    plan = [
        (RAW_HOURLY_JOB, partitions_for(Partitioning.HOURLY, settings), max(settings.data_start, start - raw_history_lead()), False),
        (HOURLY_SNAPSHOT_JOB, partitions_for(Partitioning.DAILY, settings, in_progress=True), start, True),
        (DAILY_SNAPSHOT_JOB, partitions_for(Partitioning.DAILY, settings), start, False),
        # Labels need the raw hours of the day after, so training sets stop a day before `end`.
        (TRAINING_JOB, partitions_for(Partitioning.DAILY, settings), start, False),
    ]
    runs = [dimensions]
    for job_name, partitions, job_start, overlapping in plan:
        job_end = end - timedelta(days=1) if job_name == TRAINING_JOB else end
        keys = partition_keys_between(partitions, job_start, job_end, overlapping=overlapping)
        if keys is None:
            continue
        # A failed job does not stop the next: independent views still run, and anything that
        # needs the failed partitions is refused by the quality ledger, naming them.
        runs.append(materialize_range(defs, job_name, *keys, instance=instance, raise_on_error=raise_on_error))
    return runs


def default_demo_window(settings: Settings, now: datetime, days: int) -> tuple[datetime, datetime]:
    """The last `days` days of data ending at the last closed hour (or the end of the data)."""
    end = min(now.replace(minute=0, second=0, microsecond=0), settings.data_end)
    start = max(settings.data_start, end - timedelta(days=days))
    return start, end
