"""Running a job over a range of partitions as one run (the backfill policy's single-run shape)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from dagster import AssetKey, DagsterInstance, Definitions, ExecuteInProcessResult, TimeWindow, TimeWindowPartitionsDefinition

from feature_pipelines.features.spec import Partitioning
from feature_pipelines.orchestration.partitions import partitions_for
from feature_pipelines.orchestration.schedules import DAILY_JOB, HOURLY_JOB
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
    partitions: TimeWindowPartitionsDefinition, start: datetime, end: datetime
) -> tuple[str, str] | None:
    """First and last keys of the partitions wholly inside [start, end), or None if there are none."""
    keys = partitions.get_partition_keys_in_time_window(
        time_window=TimeWindow(require_utc(start, "start"), require_utc(end, "end"))
    )
    inside = [
        key
        for key in keys
        if partitions.time_window_for_partition_key(key).start >= start
        and partitions.time_window_for_partition_key(key).end <= end
    ]
    return (inside[0], inside[-1]) if inside else None


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

    `assets` narrows the run to some of the job's assets (e.g. only the raw tables).
    """
    result = defs.resolve_job_def(job_name).execute_in_process(
        instance=instance,
        tags={RANGE_START_TAG: first_partition, RANGE_END_TAG: last_partition},
        raise_on_error=raise_on_error,
        asset_selection=[AssetKey(name) for name in assets] if assets is not None else None,
    )
    return RangeRun(job_name, first_partition, last_partition, result)


def materialize_window(
    defs: Definitions,
    settings: Settings,
    start: datetime,
    end: datetime,
    *,
    instance: DagsterInstance,
    raise_on_error: bool = True,
) -> list[RangeRun]:
    """Hourly job then daily job over [start, end): the demo's and the benchmark's backfill."""
    runs = []
    for partitioning, job_name in ((Partitioning.HOURLY, HOURLY_JOB), (Partitioning.DAILY, DAILY_JOB)):
        keys = partition_keys_between(partitions_for(partitioning, settings), start, end)
        if keys is None:
            continue
        run = materialize_range(defs, job_name, *keys, instance=instance, raise_on_error=raise_on_error)
        runs.append(run)
        if not run.result.success:
            break
    return runs


def default_demo_window(settings: Settings, now: datetime, days: int) -> tuple[datetime, datetime]:
    """The last `days` days of data ending at the last closed hour (or the end of the data)."""
    end = min(now.replace(minute=0, second=0, microsecond=0), settings.data_end)
    start = max(settings.data_start, end - timedelta(days=days))
    return start, end
