"""The hourly and daily partition definitions, both in UTC, over the (possibly replayed) data range."""

from __future__ import annotations

from datetime import timezone

from dagster import DailyPartitionsDefinition, HourlyPartitionsDefinition, TimeWindowPartitionsDefinition

from feature_pipelines.features.spec import FeatureView, Partitioning
from feature_pipelines.quality.suites import PartitionWindow
from feature_pipelines.settings import Settings


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
    return PartitionWindow(key, window.start.astimezone(timezone.utc), window.end.astimezone(timezone.utc))
