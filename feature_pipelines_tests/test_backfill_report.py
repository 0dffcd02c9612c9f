"""What `feature-pipelines backfill` and `feature-pipelines quarantine` tell a person: the pure
report functions on fake runs and quarantine frames, and the quarantine verb on a real Delta lake."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest
from dagster import AssetKey

from feature_pipelines import cli
from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.orchestration.backfill_report import (
    WHAT_TO_DO,
    WHAT_TO_DO_ON_ERROR,
    RunOutcome,
    outcome_of,
    quarantine_text,
    row_text,
    run_line,
    summary_text,
)
from feature_pipelines.orchestration.runs import PlannedRun
from feature_pipelines.quality.quarantine import (
    ACTION,
    AT,
    LANDING_FILES_SCHEMA,
    PARTITION,
    REASON,
    RULE,
    RUN_ID,
    Quarantine,
)
from feature_pipelines.quality.suites import UPSTREAM
from feature_pipelines.sources.landing import LandingZone
from feature_pipelines.sources.landing_contract import RejectedFile

AT_TIME = datetime(2013, 1, 6, tzinfo=timezone.utc)
PLAN = [
    PlannedRun("raw_dimensions_job", "", "", 1),
    PlannedRun("raw_hourly_job", "2013-01-01-00:00", "2013-01-02-23:00", 48),
    PlannedRun("raw_hourly_job", "2013-01-03-00:00", "2013-01-04-23:00", 48),
    PlannedRun("daily_snapshot_features_job", "2013-01-01", "2013-01-04", 4),
]


def _ok(planned: PlannedRun) -> RunOutcome:
    return RunOutcome(planned.job_name, planned.first_partition, planned.last_partition, planned.partitions, True)


def _failed_raw_and_refused_features() -> list[RunOutcome]:
    raw = RunOutcome(
        "raw_hourly_job", "2013-01-03-00:00", "2013-01-04-23:00", 48, False,
        held_back={"raw_flights": ("2013-01-03-06:00", "2013-01-04-10:00")},
        first_failure={"raw_flights": "rule landed_files_match_contract failed: landing file 'part-0002.parquet' "
                                      "of table 'flights' breaks its contract: column 'carrier' is missing"},
    )
    features = RunOutcome(
        "daily_snapshot_features_job", "2013-01-01", "2013-01-04", 4, False,
        held_back={"route_delay_stats": ("2013-01-03", "2013-01-04")},
        first_failure={"route_delay_stats": "rule every_upstream_partition_written_and_passed failed: ..."},
        refused=frozenset({"route_delay_stats"}),
    )
    return [_ok(PLAN[0]), _ok(PLAN[1]), raw, features]


def _summary_frame(rows: list[tuple[str, str, str, str, int, str]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"table": pl.String, PARTITION: pl.String, RULE: pl.String, ACTION: pl.String,
                                      "rows": pl.UInt32, "reason": pl.String}, orient="row")


def _files_frame() -> pl.DataFrame:
    hour = datetime(2013, 1, 3, 6, tzinfo=timezone.utc)
    return pl.DataFrame([{
        "table": "flights", "file": "part-0002.parquet", "path": "/landing/flights/part-0002.parquet",
        "copy": "/landing/_quarantine/flights/part-0002.parquet", "problems": json.dumps(["column 'carrier' is missing (expected String)"]),
        "hours_known": True, "hours": 1, "first_hour": hour, "last_hour": hour, RUN_ID: "r1", AT: AT_TIME,
    }], schema=LANDING_FILES_SCHEMA)


def test_run_lines_are_plain_text_naming_job_range_and_verdict() -> None:
    outcomes = _failed_raw_and_refused_features()
    assert run_line(outcomes[0]) == "raw_dimensions_job whole tables (1 partition): ok"
    assert run_line(outcomes[1]) == "raw_hourly_job 2013-01-01-00:00 .. 2013-01-02-23:00 (48 partitions): ok"
    assert run_line(outcomes[2]) == (
        "raw_hourly_job 2013-01-03-00:00 .. 2013-01-04-23:00 (48 partitions): FAILED "
        "(raw_flights held back 2013-01-03-06:00, 2013-01-04-10:00)"
    )
    assert all("\x1b" not in run_line(o) for o in outcomes)


def test_clean_backfill_summary_says_so_without_what_to_do() -> None:
    text = summary_text(PLAN, [_ok(p) for p in PLAN], _summary_frame([]), _files_frame().clear(), elapsed_seconds=12.34)
    assert text.splitlines() == [
        "backfill finished in 12.3 s: every run succeeded",
        "  raw_dimensions_job: whole tables, all written",
        "  raw_hourly_job: 96 partitions, all written",
        "  daily_snapshot_features_job: 4 partitions, all written",
    ]


def test_failed_backfill_summary_names_cause_consequences_quarantine_ui_and_what_to_do() -> None:
    quarantine = _summary_frame([
        ("raw_flights", "2013-01-03-06:00", "flights_landing_contract", "fail", 1,
         "table 'raw_flights' partition 2013-01-03-06:00: rule landed_files_match_contract failed: column 'carrier' is missing"),
        ("raw_flights", "2013-01-04-10:00", "flights_known_carrier", "fail", 20, "column 'carrier' rule carrier_in(raw_airlines) failed"),
        ("raw_flights", "2013-01-04-11:00", "flights_values_not_nan", "drop", 2, "dep_delay is NaN"),
        ("route_delay_stats", "2013-01-03", UPSTREAM, "fail", 178, "reads held-back raw_flights partitions"),
        ("route_delay_stats", "2013-01-04", UPSTREAM, "fail", 180, "reads held-back raw_flights partitions"),
    ])
    lines = summary_text(PLAN, _failed_raw_and_refused_features(), quarantine, _files_frame()).splitlines()
    assert len(lines) <= 15, lines
    assert lines[0] == "backfill finished: 2 runs of 4 failed"
    assert "  raw_hourly_job: 96 partitions: 94 written, 2 held back (raw_flights 2)" in lines
    assert any(line.startswith("    first: raw_flights: rule landed_files_match_contract failed") for line in lines)
    assert ("  daily_snapshot_features_job: 4 partitions: 2 written, 2 held back (route_delay_stats 2), "
            "refused: they read held-back upstream partitions") in lines
    # The table/partition prefix of the gate's message is dropped: the line names both already.
    assert ("  raw_flights flights_landing_contract (fail): 1 row in 1 partition: "
            "rule landed_files_match_contract failed: column 'carrier' is missing") in lines
    assert "  raw_flights flights_values_not_nan (drop): 2 rows in 1 partition: dep_delay is NaN" in lines
    assert f"  {UPSTREAM}: 358 rows of route_delay_stats refused: they read the held-back partitions" in lines
    assert ("  rejected landing file flights/part-0002.parquet: column 'carrier' is missing (expected String) "
            "(covers 1 hour, 2013-01-03T06:00Z)") in lines
    assert any(line.startswith("in the UI: Assets > raw_flights (and 1 downstream) > Partitions: held-back partitions are red")
               for line in lines)
    assert lines[-1] == WHAT_TO_DO


def test_failed_dimensions_run_leaves_the_rest_not_run_and_names_the_error() -> None:
    dims = RunOutcome("raw_dimensions_job", "", "", 1, False, errors=("raw_airlines: RawSchemaError: column 'name' is missing",))
    lines = summary_text(PLAN, [dims], _summary_frame([]), _files_frame().clear()).splitlines()
    assert lines[1:5] == [
        "  raw_dimensions_job: whole tables: FAILED",
        "    error: raw_airlines: RawSchemaError: column 'name' is missing",
        "  raw_hourly_job: not run (an earlier run it needs failed)",
        "  daily_snapshot_features_job: not run (an earlier run it needs failed)",
    ]
    assert lines[-1] == WHAT_TO_DO_ON_ERROR


def _evaluation(asset: str, check: str, partition: str | None, passed: bool, description: str = "") -> SimpleNamespace:
    return SimpleNamespace(asset_key=AssetKey(asset), check_name=check, partition=partition, passed=passed, description=description)


def _step_failure(step: str, message: str) -> SimpleNamespace:
    return SimpleNamespace(step_key=step, event_specific_data=SimpleNamespace(error=SimpleNamespace(message=message)))


def test_outcome_of_reads_held_back_partitions_refusals_and_unexplained_errors() -> None:
    result = SimpleNamespace(
        success=False, run_id="run-1",
        get_asset_check_evaluations=lambda: [
            _evaluation("raw_flights", "flights_known_carrier", "2013-01-04-10:00", False,
                        "table 'raw_flights' partition 2013-01-04-10:00: column 'carrier' rule carrier_in(raw_airlines) failed"),
            _evaluation("raw_flights", "flights_values_not_nan", "2013-01-04-11:00", True),  # a drop: written
            _evaluation("raw_flights", "flights_known_carrier", None, False),  # the range summary
            _evaluation("raw_weather", UPSTREAM, "2013-01-04-10:00", False, "reads held-back hours"),
        ],
        get_step_skipped_events=lambda: [SimpleNamespace(step_key="route_delay_stats")],
        get_step_failure_events=lambda: [_step_failure("raw_flights", "blocking check failed"),
                                         _step_failure("publish_online", "ConnectionError: Redis refused\nTraceback ...")],
    )
    planned = PlannedRun("raw_hourly_job", "2013-01-04-00:00", "2013-01-04-23:00", 24)
    outcome = outcome_of(planned, SimpleNamespace(result=result))  # type: ignore[arg-type]
    assert outcome.held_back == {"raw_flights": ("2013-01-04-10:00",), "raw_weather": ("2013-01-04-10:00",)}
    assert outcome.first_failure["raw_flights"] == "column 'carrier' rule carrier_in(raw_airlines) failed"
    assert outcome.refused == frozenset({"raw_weather"})
    assert outcome.skipped_steps == ("route_delay_stats",)
    # The gate's own step failure is explained by its held-back partitions; the publish one is not.
    assert outcome.errors == ("publish_online: ConnectionError: Redis refused",)
    assert outcome.complete_partitions() == 0


def test_row_text_drops_quarantine_columns_and_stays_on_one_short_line() -> None:
    row = {"carrier": "ZZ", "flight_number": 10018, "dep_delay": None, "air_time": 1.5,
           "dep_known_at": datetime(2013, 1, 4, 10, 5, tzinfo=timezone.utc), "note": "x" * 100,
           RULE: "flights_known_carrier", ACTION: "fail", REASON: "r", RUN_ID: "run", PARTITION: "p", AT: AT_TIME}
    text = row_text(row)
    assert text.startswith("carrier=ZZ flight_number=10018 dep_delay=null air_time=1.5 dep_known_at=2013-01-04T10:05Z note=xxx")
    assert "quarantine" not in text and "\n" not in text and len(text) <= 200


def test_empty_quarantine_says_nothing_is_held_back() -> None:
    assert quarantine_text(_summary_frame([]), {}, _files_frame().clear()) == "nothing is held back"


def _held_back_flights() -> pl.DataFrame:
    base = datetime(2013, 1, 4, 10, 25, tzinfo=timezone.utc)
    flights = pl.DataFrame({
        "carrier": ["ZZ", "UA", "ZZ", "B6"], "flight_number": [10018, 1018, 10404, 22], "origin": ["EWR", "EWR", "LGA", "JFK"],
        "dest": ["IAH", "IAH", "IAH", "SYR"], "dep_known_at": [base, base, base + timedelta(hours=1), base - timedelta(days=1, hours=4)],
        "dep_delay": [-5, -5, 1, None],
    })
    tags = [
        ("2013-01-04-10:00", "flights_known_carrier", "drop", "column 'carrier' rule carrier_in(raw_airlines) failed: 1 of 20 rows"),
        ("2013-01-04-10:00", "flights_unique", "drop", "two deliveries of the same flight disagree"),
        ("2013-01-04-11:00", "flights_known_carrier", "drop", "column 'carrier' rule carrier_in(raw_airlines) failed: 1 of 18 rows"),
        ("2013-01-03-06:00", "flights_landing_contract", "fail", "table 'raw_flights' partition 2013-01-03-06:00: rule "
         "landed_files_match_contract failed: landing file 'part-0002.parquet' breaks its contract"),
    ]
    return flights.with_columns(
        pl.Series(PARTITION, [t[0] for t in tags]), pl.Series(RULE, [t[1] for t in tags]), pl.Series(ACTION, [t[2] for t in tags]),
        pl.Series(REASON, [t[3] for t in tags]), pl.lit("run-1").alias(RUN_ID), pl.lit(AT_TIME).dt.cast_time_unit("us").alias(AT),
    )


def _held_back_partitions() -> pl.DataFrame:
    """The failed partitions, one with rows (the broken file's hour) and one emptied hour."""
    return pl.DataFrame(
        {PARTITION: ["2013-01-03-06:00", "2013-01-03-07:00"], RULE: ["flights_landing_contract", "flights_volume"],
         ACTION: ["fail", "fail"], REASON: ["landing file 'part-0002.parquet' breaks its contract", "no flight landed in the hour"],
         "rows": [1, 0], RUN_ID: ["run-1", "run-1"], AT: [AT_TIME, AT_TIME]},
        schema={PARTITION: pl.String, RULE: pl.String, ACTION: pl.String, REASON: pl.String, "rows": pl.Int64,
                RUN_ID: pl.String, AT: pl.Datetime("us", "UTC")},
    )


def test_quarantine_verb_lists_held_back_rows_by_table_partition_and_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    quarantine = Quarantine(DeltaStore(root=str(tmp_path / "lake")))
    quarantine.replace("raw_flights", _held_back_flights(), _held_back_partitions(),
                       first_partition="2013-01-03-00:00", last_partition="2013-01-04-23:00")
    hour = datetime(2013, 1, 3, 6, tzinfo=timezone.utc)
    rejected = RejectedFile("flights", "part-0002.parquet", str(tmp_path / "landing/flights/part-0002.parquet"),
                            ("column 'carrier' is missing (expected String)",), (hour,), True)
    quarantine.replace_files(LandingZone(tmp_path / "landing"), "flights", [rejected], run_id="run-1", at=AT_TIME)
    monkeypatch.setenv("FEATURE_PIPELINES_LAKE_ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("FEATURE_PIPELINES_ENV", "local")

    assert cli.main(["quarantine"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "raw_flights: 4 rows held back in 4 partitions"
    assert ("  flights_known_carrier (drop: these rows were removed): 2 rows: "
            "column 'carrier' rule carrier_in(raw_airlines) failed: 1 of 20 rows") in lines
    assert "    partitions: 2013-01-04-10:00 (1), 2013-01-04-11:00 (1)" in lines
    assert ("    e.g. carrier=ZZ flight_number=10018 origin=EWR dest=IAH dep_known_at=2013-01-04T10:25Z dep_delay=-5" in lines)
    assert ("  flights_landing_contract (fail: its whole partition is held back): 1 row: "
            "rule landed_files_match_contract failed: landing file 'part-0002.parquet' breaks its contract") in lines
    assert "flights/part-0002.parquet: column 'carrier' is missing (expected String) (covers 1 hour, 2013-01-03T06:00Z)" in out
    assert "  flights_volume (fail: its whole partition is held back): 0 rows: no flight landed in the hour" in lines
    assert "    partitions: 2013-01-03-07:00 (no rows)" in lines
    assert "rejected landing files: 1" in lines

    assert cli.main(["quarantine", "--table", "raw_flights", "--examples", "1"]) == 0
    narrowed = capsys.readouterr().out
    assert narrowed.count("    e.g. ") == 3  # one per rule that holds rows
    assert "rejected landing files: 1" in narrowed  # its landing table is flights

    assert cli.main(["quarantine", "--table", "raw_weather"]) == 0
    assert capsys.readouterr().out.strip() == "nothing is held back"


def test_quiet_loggers_silence_info_for_the_block_only() -> None:
    logger = logging.getLogger("deltalake")
    before = logger.level
    with cli._quiet_loggers():
        assert not logging.getLogger("dagster").isEnabledFor(logging.INFO)
        assert not logger.isEnabledFor(logging.INFO)
        assert logger.isEnabledFor(logging.WARNING)
    assert logger.level == before
