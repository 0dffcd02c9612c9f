"""The landing zone's per-file contract: each landed parquet file is checked on its own against the
declared schema; a bad delivery is rejected whole, quarantined (copied) and placed in its hours."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from feature_pipelines.sources import nycflights
from feature_pipelines.sources.landing import LandingZone
from feature_pipelines.sources.landing_contract import (
    SOURCE_FILE,
    SOURCE_ROW,
    LandedTable,
    RejectedFile,
    read_landed,
)

SEED = "part-0000.parquet"
LATE = "part-0001-late.parquet"
BAD = "part-0002-bad.parquet"
UTC_US = "Datetime(time_unit='us', time_zone='UTC')"
FLIGHTS_SCHEMA = nycflights.flights().schema
WEATHER_SCHEMA = nycflights.weather().schema


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=timezone.utc)  # type: ignore[misc]


def _flights_of(day: int) -> pl.DataFrame:
    """The real flights whose outcome became known on 2013-01-<day> (UTC)."""
    start = utc(2013, 1, day)
    return nycflights.flights().filter(pl.col("dep_known_at").is_between(start, start + timedelta(days=1), closed="left"))


DAY1 = _flights_of(1)  # 697 rows, 10:17 .. 23:59 UTC
DAY2 = _flights_of(2)  # 930 rows, 00:00 .. 23:58 UTC, 20 distinct hours


def _hours_of(frame: pl.DataFrame, column: str) -> tuple[datetime, ...]:
    return tuple(sorted({value.replace(minute=0, second=0, microsecond=0) for value in frame[column]}))


def _with_provenance(frame: pl.DataFrame, file: str) -> pl.DataFrame:
    return frame.with_columns(
        pl.lit(file).alias(SOURCE_FILE), pl.int_range(pl.len(), dtype=pl.UInt32).alias(SOURCE_ROW)
    )


def _read(zone: LandingZone, **kwargs: object) -> LandedTable:
    return read_landed(zone, "flights", FLIGHTS_SCHEMA, time_column="dep_known_at", **kwargs)  # type: ignore[arg-type]


def test_good_seed_and_new_delivery_return_every_row_in_file_name_order(tmp_path: Path) -> None:
    zone = LandingZone(tmp_path)
    # Land the later delivery first and with its columns in another order: neither may matter.
    zone.put("flights", DAY2.select(reversed(DAY2.columns)), file_name=LATE)
    zone.put("flights", DAY1, file_name=SEED)

    landed = _read(zone)

    assert landed.table == "flights"
    assert landed.accepted_files == (SEED, LATE)
    assert landed.rejected == ()
    assert landed.rows.columns == [*FLIGHTS_SCHEMA, SOURCE_FILE, SOURCE_ROW]
    assert landed.rows.schema[SOURCE_ROW] == pl.UInt32
    expected = pl.concat([_with_provenance(DAY1, SEED), _with_provenance(DAY2, LATE)])
    assert_frame_equal(landed.rows, expected)
    assert landed.rows.height == 697 + 930
    assert landed.rows[SOURCE_ROW].to_list()[695:699] == [695, 696, 0, 1]
    assert landed.rejected_hours() == {}


BadCase = tuple[Callable[[pl.DataFrame], pl.DataFrame], tuple[str, ...], bool]

# delivery edit -> (exact problems, whether the hours can be known)
BAD_DELIVERIES: dict[str, BadCase] = {
    "dropped column": (
        lambda frame: frame.drop("dep_delay"),
        ("column 'dep_delay' is missing (expected Int64)",),
        True,
    ),
    "changed dtype": (
        lambda frame: frame.with_columns(pl.col("dep_delay").cast(pl.String)),
        ("column 'dep_delay': expected Int64, found String",),
        True,
    ),
    "extra column": (
        lambda frame: frame.with_columns(pl.lit(1, dtype=pl.Int64).alias("foo")),
        ("column 'foo' is not declared (found Int64)",),
        True,
    ),
    "zoned time column in another unit": (
        lambda frame: frame.with_columns(pl.col("dep_known_at").cast(pl.Datetime("ns", "UTC"))),
        (f"column 'dep_known_at': expected {UTC_US}, found Datetime(time_unit='ns', time_zone='UTC')",),
        True,
    ),
    "two problems": (
        lambda frame: frame.drop("air_time").with_columns(pl.col("cancelled").cast(pl.Int8)),
        ("column 'cancelled': expected Boolean, found Int8", "column 'air_time' is missing (expected Int64)"),
        True,
    ),
    "time column dropped": (
        lambda frame: frame.drop("dep_known_at"),
        (f"column 'dep_known_at' is missing (expected {UTC_US})",),
        False,
    ),
    "time column as text": (
        lambda frame: frame.with_columns(pl.col("dep_known_at").dt.to_string()),
        (f"column 'dep_known_at': expected {UTC_US}, found String",),
        False,
    ),
}


@pytest.mark.parametrize("case", list(BAD_DELIVERIES))
def test_a_delivery_breaking_the_contract_is_rejected_whole_and_quarantined(tmp_path: Path, case: str) -> None:
    edit, problems, hours_known = BAD_DELIVERIES[case]
    zone = LandingZone(tmp_path)
    zone.put("flights", DAY1, file_name=SEED)
    bad_path = zone.put("flights", edit(DAY2), file_name=BAD)

    landed = _read(zone)

    # The good file's rows are still returned, none of the bad file's.
    assert landed.accepted_files == (SEED,)
    assert_frame_equal(landed.rows, _with_provenance(DAY1, SEED))
    expected_hours = _hours_of(DAY2, "dep_known_at") if hours_known else ()
    assert landed.rejected == (
        RejectedFile(
            table="flights",
            file=BAD,
            path=str(bad_path),
            problems=problems,
            hours=expected_hours,
            hours_known=hours_known,
        ),
    )
    if hours_known:
        assert len(expected_hours) == 20
        assert landed.rejected_hours() == {hour: [landed.rejected[0]] for hour in expected_hours}
    # Copied, not moved: the delivery stays in the landing folder and keeps failing its hours.
    copy = tmp_path / "_quarantine" / "flights" / BAD
    assert copy.read_bytes() == bad_path.read_bytes()
    assert bad_path.is_file()
    assert zone.files("flights") == [tmp_path / "flights" / SEED, bad_path]


def test_rejection_message_names_file_table_problem_and_hours(tmp_path: Path) -> None:
    zone = LandingZone(tmp_path)
    zone.put("flights", DAY1, file_name=SEED)
    zone.put("flights", DAY2.with_columns(pl.col("dep_delay").cast(pl.String)), file_name=BAD)

    (rejected,) = _read(zone).rejected

    assert rejected.message() == (
        "landing file 'part-0002-bad.parquet' of table 'flights' breaks its contract: "
        "column 'dep_delay': expected Int64, found String; "
        "it covers 20 hour(s) from 2013-01-02T00:00:00+00:00 to 2013-01-02T23:00:00+00:00 (hour starts, UTC)"
    )


def test_naive_time_column_is_refused_and_covers_every_hour_any_utc_offset_could_put_it_in(tmp_path: Path) -> None:
    zone = LandingZone(tmp_path)
    zone.put("flights", DAY1, file_name=SEED)
    zone.put("flights", DAY2.with_columns(pl.col("dep_known_at").dt.replace_time_zone(None)), file_name=BAD)

    landed = _read(zone)

    (rejected,) = landed.rejected
    assert rejected.problems == (
        f"column 'dep_known_at': expected {UTC_US}, found Datetime(time_unit='us', time_zone=None): "
        "a time without an explicit zone is refused, never assumed to be UTC",
    )
    # Wall clock 2013-01-02 00:00 .. 23:58 of an unknown zone (UTC-12 .. UTC+14): the instants lie
    # in [01-01 10:00, 01-03 11:58], i.e. every hour from 01-01 10:00 to 01-03 11:00.
    assert rejected.hours_known is True
    assert rejected.hours == tuple(utc(2013, 1, 1, 10) + timedelta(hours=i) for i in range(50))
    assert rejected.hours[-1] == utc(2013, 1, 3, 11)
    assert_frame_equal(landed.rows, _with_provenance(DAY1, SEED))
    assert (tmp_path / "_quarantine" / "flights" / BAD).is_file()


def test_naive_weather_observation_time_is_refused_with_the_contract_message(tmp_path: Path) -> None:
    weather = nycflights.weather().head(72)
    zone = LandingZone(tmp_path)
    zone.put("weather", weather.with_columns(pl.col("observed_at").dt.replace_time_zone(None)))

    landed = read_landed(zone, "weather", WEATHER_SCHEMA, time_column="observed_at")

    assert landed.accepted_files == ()
    assert landed.rows.height == 0
    assert landed.rows.columns == [*WEATHER_SCHEMA, SOURCE_FILE, SOURCE_ROW]
    (rejected,) = landed.rejected
    assert rejected.problems == (
        "column 'observed_at': expected Datetime(time_unit='us', time_zone='UTC'), found "
        "Datetime(time_unit='us', time_zone=None): a time without an explicit zone is refused, never assumed to be UTC",
    )
    first, last = weather["observed_at"].min(), weather["observed_at"].max()
    assert rejected.hours[0] == first - timedelta(hours=14)
    assert rejected.hours[-1] == last + timedelta(hours=12)
    assert len(rejected.hours) == int((last - first) / timedelta(hours=1)) + 27


def test_new_york_zoned_times_are_converted_to_the_same_utc_instants(tmp_path: Path) -> None:
    instants = [name for name, dtype in FLIGHTS_SCHEMA.items() if isinstance(dtype, pl.Datetime)]
    new_york = DAY2.with_columns(pl.col(instants).dt.convert_time_zone(nycflights.NEW_YORK))
    zone = LandingZone(tmp_path)
    zone.put("flights", DAY1, file_name=SEED)
    zone.put("flights", new_york, file_name=LATE)

    landed = _read(zone)

    assert landed.rejected == ()
    assert landed.accepted_files == (SEED, LATE)
    assert_frame_equal(landed.rows, pl.concat([_with_provenance(DAY1, SEED), _with_provenance(DAY2, LATE)]))
    stored = pl.read_parquet(tmp_path / "flights" / LATE)["dep_known_at"]
    assert stored.dtype == pl.Datetime("us", nycflights.NEW_YORK)
    got = landed.rows.filter(pl.col(SOURCE_FILE) == LATE)["dep_known_at"]
    assert got.dtype == pl.Datetime("us", "UTC")
    assert (stored[0].hour, got[0].hour, got[0]) == (8, 13, utc(2013, 1, 2, 13, 48))


def test_the_result_does_not_depend_on_creation_order_listing_order_or_mtimes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deliveries = {
        SEED: DAY1,
        LATE: DAY2.head(400),
        "part-0001-later.parquet": DAY2.slice(400),
        BAD: DAY2.with_columns(pl.col("dep_delay").cast(pl.Float64)),
    }

    def land(root: Path, order: list[str], mtimes_ascending: bool) -> LandingZone:
        zone = LandingZone(root)
        for index, name in enumerate(order):
            path = zone.put("flights", deliveries[name], file_name=name)
            stamp = 1_600_000_000 + (index if mtimes_ascending else -index) * 3600
            os.utime(path, (stamp, stamp))
        return zone

    names = list(deliveries)
    zones = [
        land(tmp_path / "a", names, mtimes_ascending=True),
        land(tmp_path / "b", list(reversed(names)), mtimes_ascending=True),
        land(tmp_path / "c", [names[2], names[0], names[3], names[1]], mtimes_ascending=False),
    ]
    # And a filesystem that lists in reverse name order.
    real_glob = pathlib.Path.glob
    monkeypatch.setattr(
        pathlib.Path, "glob", lambda self, pattern: iter(sorted(real_glob(self, pattern), reverse=True))
    )

    results = [_read(zone) for zone in zones]

    expected_order = (SEED, LATE, "part-0001-later.parquet")
    expected_rows = pl.concat([_with_provenance(deliveries[name], name) for name in expected_order])
    for zone, landed in zip(zones, results):
        assert [path.name for path in zone.files("flights")] == [*expected_order, BAD]
        assert landed.accepted_files == expected_order
        assert_frame_equal(landed.rows, expected_rows)
        assert [(r.file, r.problems, r.hours) for r in landed.rejected] == [
            (BAD, ("column 'dep_delay': expected Int64, found Float64",), _hours_of(DAY2, "dep_known_at"))
        ]


def test_a_file_that_is_not_parquet_is_rejected_with_unknown_hours(tmp_path: Path) -> None:
    zone = LandingZone(tmp_path)
    zone.put("flights", DAY1, file_name=SEED)
    broken = tmp_path / "flights" / "part-0001-broken.parquet"
    broken.write_bytes(b"carrier,flight_number\nUA,1545\n")

    landed = _read(zone)

    assert_frame_equal(landed.rows, _with_provenance(DAY1, SEED))
    (rejected,) = landed.rejected
    assert rejected.file == "part-0001-broken.parquet"
    assert rejected.hours == ()
    assert rejected.hours_known is False
    assert len(rejected.problems) == 1
    assert rejected.problems[0].startswith("file cannot be read as parquet: ")
    assert "PAR1" in rejected.problems[0]  # the reader's reason, not just "failed"
    assert rejected.message().endswith("; its hours are unknown")
    assert rejected.message().startswith("landing file 'part-0001-broken.parquet' of table 'flights' breaks its contract")
    assert landed.rejected_hours() == {}
    assert (tmp_path / "_quarantine" / "flights" / "part-0001-broken.parquet").read_bytes() == broken.read_bytes()
    assert broken.is_file()


def test_window_returns_only_rows_in_it_with_their_row_index_in_the_file(tmp_path: Path) -> None:
    zone = LandingZone(tmp_path)
    zone.put("flights", DAY1, file_name=SEED)
    zone.put("flights", DAY2, file_name=LATE)
    zone.put("flights", DAY2.with_columns(pl.col("dep_delay").cast(pl.String)), file_name=BAD)
    start, end = utc(2013, 1, 1, 22), utc(2013, 1, 2, 2)

    landed = _read(zone, window=(start, end))

    in_window = pl.col("dep_known_at").is_between(start, end, closed="left")
    expected = pl.concat([
        _with_provenance(DAY1, SEED).filter(in_window),
        _with_provenance(DAY2, LATE).filter(in_window),
    ])
    assert expected[SOURCE_FILE].unique(maintain_order=True).to_list() == [SEED, LATE]
    assert expected.height > 0
    assert_frame_equal(landed.rows, expected)
    assert landed.rows["dep_known_at"].min() >= start
    assert landed.rows["dep_known_at"].max() < end
    assert landed.accepted_files == (SEED, LATE)
    # Rejected files are reported whatever hours the window asks for.
    assert [r.file for r in landed.rejected] == [BAD]
    assert landed.rejected[0].hours == _hours_of(DAY2, "dep_known_at")


def test_window_on_new_york_zoned_file_cuts_on_the_utc_instant(tmp_path: Path) -> None:
    zone = LandingZone(tmp_path)
    zone.put("flights", DAY2.with_columns(pl.col("dep_known_at").dt.convert_time_zone(nycflights.NEW_YORK)))
    start, end = utc(2013, 1, 2, 13), utc(2013, 1, 2, 14)

    landed = _read(zone, window=(start, end))

    expected = _with_provenance(DAY2, SEED).filter(pl.col("dep_known_at").is_between(start, end, closed="left"))
    assert expected.height > 0
    assert_frame_equal(landed.rows, expected)


def test_rejected_hours_maps_each_hour_to_every_file_covering_it(tmp_path: Path) -> None:
    zone = LandingZone(tmp_path)
    early = DAY2.filter(pl.col("dep_known_at") < utc(2013, 1, 2, 3))
    zone.put("flights", DAY1, file_name=SEED)
    zone.put("flights", early.with_columns(pl.lit(0).alias("foo")), file_name="part-0001-a.parquet")
    zone.put("flights", DAY2.drop("distance"), file_name="part-0002-b.parquet")

    landed = _read(zone)

    a, b = landed.rejected
    assert (a.file, b.file) == ("part-0001-a.parquet", "part-0002-b.parquet")
    assert a.hours == (utc(2013, 1, 2, 0), utc(2013, 1, 2, 1), utc(2013, 1, 2, 2))
    by_hour = landed.rejected_hours()
    assert list(by_hour) == list(_hours_of(DAY2, "dep_known_at"))
    assert by_hour[utc(2013, 1, 2, 1)] == [a, b]
    assert by_hour[utc(2013, 1, 2, 12)] == [b]


def test_unpartitioned_table_rejects_a_bad_file_with_no_hours(tmp_path: Path) -> None:
    planes = nycflights.planes()
    zone = LandingZone(tmp_path)
    zone.put("planes", planes, file_name=SEED)
    zone.put("planes", planes.head(3).with_columns(pl.col("seats").cast(pl.String)), file_name=LATE)

    landed = read_landed(zone, "planes", planes.schema, time_column=None)

    assert_frame_equal(landed.rows, _with_provenance(planes, SEED))
    (rejected,) = landed.rejected
    assert rejected.problems == ("column 'seats': expected Int64, found String",)
    assert (rejected.hours, rejected.hours_known) == ((), True)
    assert rejected.message().endswith("; it covers no hour")


def test_a_table_without_files_is_an_error_naming_root_and_table(tmp_path: Path) -> None:
    zone = LandingZone(tmp_path)
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}.*'flights'"):
        _read(zone)
    (tmp_path / "flights").mkdir()
    (tmp_path / "flights" / "notes.txt").write_text("not a delivery")
    with pytest.raises(FileNotFoundError, match="'flights'"):
        _read(zone)
    assert zone.files("flights") == []
    assert zone.files("weather") == []


def test_time_column_must_be_declared_as_zoned_datetime(tmp_path: Path) -> None:
    zone = LandingZone(tmp_path)
    zone.put("flights", DAY1)
    with pytest.raises(ValueError, match="zoned Datetime"):
        read_landed(zone, "flights", FLIGHTS_SCHEMA, time_column="dep_delay")
    with pytest.raises(ValueError, match="tz-aware"):
        _read(zone, window=(datetime(2013, 1, 1), datetime(2013, 1, 2)))


def test_quarantine_copy_is_idempotent_and_follows_a_replaced_delivery(tmp_path: Path) -> None:
    zone = LandingZone(tmp_path)
    path = zone.put("flights", DAY1.head(5), file_name=BAD)

    first = zone.quarantine_copy("flights", path)
    second = zone.quarantine_copy("flights", path)

    assert first == second == tmp_path / "_quarantine" / "flights" / BAD
    assert first.read_bytes() == path.read_bytes()
    assert sorted(p.name for p in first.parent.iterdir()) == [BAD]  # no partial copies left behind
    zone.put("flights", DAY1.head(7), file_name=BAD)
    os.utime(path, (1_700_000_000, 1_700_000_000))
    assert zone.quarantine_copy("flights", path).read_bytes() == path.read_bytes()
    assert pl.read_parquet(first).height == 7


def test_scan_still_reads_every_file_in_file_name_order(tmp_path: Path) -> None:
    zone = LandingZone(tmp_path)
    zone.put("flights", DAY2, file_name=LATE)
    zone.put("flights", DAY1, file_name=SEED)
    assert zone.has("flights")
    assert_frame_equal(zone.scan("flights").collect(), pl.concat([DAY1, DAY2]))
