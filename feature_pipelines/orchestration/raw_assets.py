"""Raw assets: landing-zone files to Delta tables (flights and weather by day, judged hour by hour; dimensions whole)."""


import time
from datetime import timedelta

import polars as pl
from dagster import AssetExecutionContext, AssetsDefinition, BackfillPolicy, MetadataValue, asset

from feature_pipelines.orchestration.clock import run_clock
from feature_pipelines.orchestration.io_manager import CLOSED_KEY, TIME_COLUMN_KEY
from feature_pipelines.orchestration.partitions import hours_of, partition_of_hour, raw_partitions
from feature_pipelines.orchestration.quality_gate import WriteTarget, gate_and_write, gate_check_specs
from feature_pipelines.privacy.deletion_ledger import DeletionLedger, drop_forgotten
from feature_pipelines.quality.quarantine import Quarantine
from feature_pipelines.quality.raw_rules import (
    FLIGHTS_KEY,
    FLIGHTS_TABLE,
    ORIGINS,
    RAW_RULES,
    WEATHER_KEY,
    WEATHER_TABLE,
    LandingFacts,
    delivery_index,
    hourly_counts,
    validate_raw_flights_partitions,
    validate_raw_weather_partitions,
)
from feature_pipelines.resources import LakeResource, LandingResource
from feature_pipelines.settings import Settings
from feature_pipelines.sources.landing import NYCFLIGHTS_TABLES, LandingZone
from feature_pipelines.sources.landing_contract import SOURCE_FILE, SOURCE_ROW, LandedTable, read_landed
from feature_pipelines.sources.nycflights import KNOWN_MISSING_AIRPORTS
from feature_pipelines.sources.raw_tables import RAW_TABLES, RawTable, declared_schema

RAW_KEYS = {FLIGHTS_TABLE: FLIGHTS_KEY, WEATHER_TABLE: WEATHER_KEY}


class RawSchemaError(ValueError):
    """A landed dimension file breaks its table's contract (dimension tables have no partition to hold back)."""


def _known_keys(zone: LandingZone) -> dict[str, frozenset[str]]:
    """The keys the dimension tables know, from their landed files (the data, not a run's record)."""
    def column(table: str, name: str) -> frozenset[str]:
        landed = read_landed(zone, table, NYCFLIGHTS_TABLES[table]().schema, time_column=None)
        return frozenset(v for v in landed.rows.get_column(name).to_list() if v is not None)

    return {
        "carrier": column("airlines", "carrier"),
        "origin": frozenset(ORIGINS),
        "dest": column("airports", "faa") | frozenset(KNOWN_MISSING_AIRPORTS),
        "tailnum": column("planes", "tailnum"),
    }


def _landing_facts(zone: LandingZone, table: RawTable, landed: LandedTable, history: pl.DataFrame, offset: timedelta) -> LandingFacts:
    """What the rules judge beyond the run's rows, all read from the landing zone's data;
    `history` is every landed row, in replayed time."""
    rejected = {hour + offset: [f.message() for f in files] for hour, files in landed.rejected_hours().items()}
    return LandingFacts(
        rejected_hours=rejected,
        first_delivery=delivery_index(history, RAW_KEYS[table.name], declared_schema(table)),
        hourly_counts=hourly_counts(history, table.time_column or ""),
        known_keys=_known_keys(zone) if table.name == FLIGHTS_TABLE else None,
    )


def build_raw_asset(table: RawTable, settings: Settings) -> AssetsDefinition:
    """One raw asset per landing table; partitioned ones read only their days (an open day up to
    the run's clock) and are checked (write-audit-publish) hour by hour before they are written:
    a bad hour holds back only itself, and its day shows red."""
    if table.time_column is None:
        return _build_dimension_asset(table)
    partitions = raw_partitions(settings)
    offset = settings.replay.offset
    rules = RAW_RULES[table.name]
    target = WriteTarget(table.name, table.time_column, "left")

    @asset(
        name=table.name,
        description=table.description,
        group_name="raw",
        partitions_def=partitions,
        backfill_policy=BackfillPolicy.single_run(),
        metadata={TIME_COLUMN_KEY: table.time_column, CLOSED_KEY: "left"},
        check_specs=gate_check_specs(table.name, rules),
        output_required=False,
        io_manager_key="delta_io_manager",
        kinds={"polars", "delta"},
        pool="lake_writes",
    )
    def _raw(context: AssetExecutionContext, landing: LandingResource, lake: LakeResource):
        began = time.perf_counter()
        now = run_clock(context)
        windows = hours_of(partitions, context.partition_keys, now)
        if not windows:
            context.log.info(f"table {table.name!r}: no hour of {context.partition_keys[0]} has closed by {now.isoformat()}")
            return
        zone = landing.zone()
        # One read of every landed row: the run's hours are a slice of it, and the rules judge
        # volume and deliveries against all of it.
        landed = read_landed(zone, table.landing_table, declared_schema(table), time_column=table.time_column)
        history = settings.replay.frame_to_present(landed.rows)
        run_hours = pl.col(table.time_column).is_between(windows[0].start, windows[-1].end, closed="left")
        frame = history.filter(run_hours).sort(table.time_column, maintain_order=True)
        store = lake.store()
        # Forgotten entities (the deletion ledger) never re-enter, whatever the landing zone still holds;
        # the rules' landing facts (volume, first deliveries) still judge the source as it landed.
        frame, forgotten_rows = drop_forgotten(frame, DeletionLedger(store).forgotten())
        facts = _landing_facts(zone, table, landed, history, offset)
        landed_at = time.perf_counter()
        outcomes = RAW_VALIDATORS[table.name](frame, partitions=windows, landing=facts)
        Quarantine(store).replace_files(zone, table.landing_table, landed.rejected, run_id=context.run.run_id, at=now)
        yield from gate_and_write(
            context, target=target, frame=frame, windows=windows, outcomes_by_partition=outcomes, rules=rules,
            store=store, now=now, stored_columns=[c for c in frame.columns if c not in (SOURCE_FILE, SOURCE_ROW)],
            partition_of=partition_of_hour,
            metadata=lambda written: {
                "compute_seconds": round(landed_at - began, 4),
                "quality_check_seconds": round(time.perf_counter() - landed_at, 4),
                "landed_files": len(landed.accepted_files),
                "forgotten_rows_left_out": forgotten_rows,
                "rejected_files": MetadataValue.json([f.file for f in landed.rejected]),
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
    def _dimension(context: AssetExecutionContext, landing: LandingResource, lake: LakeResource) -> pl.DataFrame:
        landed = read_landed(landing.zone(), table.landing_table, declared_schema(table), time_column=None)
        if landed.rejected:
            raise RawSchemaError(f"table {table.name!r} (unpartitioned): " + "; ".join(f.message() for f in landed.rejected))
        rows, forgotten_rows = drop_forgotten(landed.rows.drop(SOURCE_FILE, SOURCE_ROW), DeletionLedger(lake.store()).forgotten())
        context.add_output_metadata({"forgotten_rows_left_out": forgotten_rows})
        return rows

    return _dimension


RAW_VALIDATORS = {"raw_flights": validate_raw_flights_partitions, "raw_weather": validate_raw_weather_partitions}


def build_raw_assets(settings: Settings) -> list[AssetsDefinition]:
    return [build_raw_asset(table, settings) for table in RAW_TABLES]
