"""The hourly and daily partition definitions, both in UTC, over the (possibly replayed) data range."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from dagster import DailyPartitionsDefinition, HourlyPartitionsDefinition, TimeWindowPartitionsDefinition

from feature_pipelines.features.spec import FeatureView, Partitioning
from feature_pipelines.settings import Settings
from feature_pipelines.timeutil import PartitionWindow

HOUR_KEY_FORMAT = "%Y-%m-%d-%H:%M"
_HOUR = timedelta(hours=1)


def partitions_for(
    partitioning: Partitioning, settings: Settings, *, in_progress: bool = False
) -> TimeWindowPartitionsDefinition:
    """Partitions over the data range; with replay on they lie in the present and only those
    already ended exist, so a schedule tick finds exactly the hour (or day) just closed.

    `in_progress` adds the partition that is still open (today), for views whose snapshots are
    finer than their partitions: each hourly refresh rewrites today's snapshots so far.
    """
    if partitioning is Partitioning.HOURLY:
        return HourlyPartitionsDefinition(
            start_date=settings.data_start.strftime("%Y-%m-%d-%H:%M"),
            end_date=settings.data_end.strftime("%Y-%m-%d-%H:%M"),
            timezone="UTC",
            end_offset=1 if in_progress else 0,
        )
    return DailyPartitionsDefinition(
        start_date=settings.data_start.strftime("%Y-%m-%d"),
        end_date=settings.data_end.strftime("%Y-%m-%d"),
        timezone="UTC",
        end_offset=1 if in_progress else 0,
    )


def refreshes_in_progress(view: FeatureView) -> bool:
    """A view snapshotting more often than it partitions refreshes its open partition."""
    return view.cadence is not view.partitioning


def view_partitions(view: FeatureView, settings: Settings) -> TimeWindowPartitionsDefinition:
    return partitions_for(view.partitioning, settings, in_progress=refreshes_in_progress(view))


def partition_window(partitions: TimeWindowPartitionsDefinition, key: str) -> PartitionWindow:
    """A partition key with its UTC time window, the unit the quality checks report on."""
    window = partitions.time_window_for_partition_key(key)
    return PartitionWindow(key, window.start.astimezone(UTC), window.end.astimezone(UTC))


def raw_partitions(settings: Settings) -> TimeWindowPartitionsDefinition:
    """Raw tables' partitions: days, today's open one included and refreshed every hour.

    Dagster records one planned event and one materialization per partition, so a year of hourly
    partitions would be 35,000 event writes for two tables whose computation takes seconds. The quality gates still judge hour by hour
    (`hours_of`): an hour is the unit that is held back, quarantined and refused downstream.
    """
    return partitions_for(Partitioning.DAILY, settings, in_progress=True)


def hours_of(partitions: TimeWindowPartitionsDefinition, keys: Sequence[str], until: datetime) -> list[PartitionWindow]:
    """The hours of the partitions `keys` that have ended by `until` (an open day's hours so far),
    each keyed like an hourly partition ("2013-01-05-15:00"), in order."""
    hours = []
    for key in keys:
        window = partition_window(partitions, key)
        hour = window.start
        while hour < window.end and hour + _HOUR <= until:
            hours.append(PartitionWindow(hour.strftime(HOUR_KEY_FORMAT), hour, hour + _HOUR))
            hour += _HOUR
    return hours


def partition_of_hour(hour_key: str) -> str:
    """The daily partition key holding an hour key."""
    return hour_key[:10]
