"""The hourly and daily partition definitions, both in UTC, over the (possibly replayed) data range."""

from __future__ import annotations

from dagster import DailyPartitionsDefinition, HourlyPartitionsDefinition, TimeWindowPartitionsDefinition

from feature_pipelines.features.spec import Partitioning
from feature_pipelines.settings import Settings


def partitions_for(partitioning: Partitioning, settings: Settings) -> TimeWindowPartitionsDefinition:
    """Partitions over the data range; with replay on they lie in the present and only those
    already ended exist, so a schedule tick finds exactly the hour (or day) just closed."""
    if partitioning is Partitioning.HOURLY:
        return HourlyPartitionsDefinition(
            start_date=settings.data_start.strftime("%Y-%m-%d-%H:%M"),
            end_date=settings.data_end.strftime("%Y-%m-%d-%H:%M"),
            timezone="UTC",
        )
    return DailyPartitionsDefinition(
        start_date=settings.data_start.strftime("%Y-%m-%d"),
        end_date=settings.data_end.strftime("%Y-%m-%d"),
        timezone="UTC",
    )
