"""Forget an aircraft from every store, then backfill: real Dagster runs over a real Delta lake, the
session's real redis-server, the `forget` verb itself; the absence check passes, and fails once a
row is put back."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest
import redis
from dagster import materialize

from feature_pipelines.cli import main
from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.features.services import FEATURE_SERVICES
from feature_pipelines.names import FEATURE_LOG_TABLE, online_key_prefix
from feature_pipelines.offline.delta_store import DeltaStoreError
from feature_pipelines.online.publish import latest_per_entity, publish
from feature_pipelines.online.table import OnlineTable
from feature_pipelines.orchestration.privacy_checks import ABSENCE_CHECK
from feature_pipelines.orchestration.runs import RangeRun, materialize_range
from feature_pipelines.orchestration.schedules import (
    DAILY_SNAPSHOT_JOB,
    DIMENSIONS_JOB,
    HOURLY_SNAPSHOT_JOB,
    RAW_HOURLY_JOB,
    TRAINING_JOB,
)
from feature_pipelines.orchestration.statistics_assets import statistics_asset_name
from feature_pipelines.privacy.deletion_ledger import DELETIONS_TABLE
from feature_pipelines.quality.quarantine import QUARANTINE_COLUMNS, Quarantine, rows_table
from feature_pipelines.serving.request_log import append_log_rows, entity_keys_json, key_columns_of, log_schema
from feature_pipelines.sources.landing_contract import read_landed
from feature_pipelines.sources.raw_tables import RAW_TABLES, declared_schema
from feature_pipelines.streaming.keys import entity_text, stream_keys
from feature_pipelines.streaming.producer import push_events
from feature_pipelines.training.spec import FLIGHT_DELAY_TRAINING_SET, LABELS_TABLE
from feature_pipelines_tests.conftest import Pipeline

GONE, KEPT = "N13988", "N608JB"  # each has flights every day of 2013-01-01..03 and a row in the planes registry
PREFIX = online_key_prefix("local")
AIRCRAFT = FEATURE_VIEWS["aircraft_utilisation"]
NOW = datetime(2013, 1, 4, tzinfo=UTC)
ENTITY_TABLES = ["raw_flights", "raw_planes", "aircraft_utilisation", LABELS_TABLE, FLIGHT_DELAY_TRAINING_SET.name,
                 FEATURE_LOG_TABLE, rows_table("raw_flights")]


def _run(pipeline: Pipeline, job: str, first: str, last: str) -> RangeRun:
    run = materialize_range(pipeline.defs, job, first, last, instance=pipeline.instance, raise_on_error=False)
    assert run.result.success, job
    return run


def _rows_of(pipeline: Pipeline, table: str, tail: str, version: int | None = None) -> int:
    frame = pipeline.store.read(table, version=version)
    if "tailnum" in frame.columns:
        return frame.filter(pl.col("tailnum") == tail).height + frame.filter(
            pl.col("tailnum").is_null() & pl.col("entity_key").str.contains(f'"tailnum":"{tail}"', literal=True)
        ).height if "entity_key" in frame.columns else frame.filter(pl.col("tailnum") == tail).height
    return 0


def _log_rows(tails: list[str]) -> pl.DataFrame:
    """Served values of the aircraft view, and an on-demand row whose only trace of the tail is its entity_key JSON."""
    schema = log_schema(key_columns_of(list(FEATURE_VIEWS.values())))
    rows = [{"request_id": f"r{i}", "request_time": NOW, "entity_index": 0, "view": "aircraft_utilisation",
             "entity_key": entity_keys_json({"tailnum": [tail]}, ("tailnum",), 1)[0], "tailnum": tail,
             "feature": "aircraft_flights_24h", "value_json": "1", "value_float": 1.0, "status": "PRESENT"}
            for i, tail in enumerate(tails)]
    rows.append({"request_id": "od", "request_time": NOW, "entity_index": 0, "view": "on_demand",
                 "entity_key": entity_keys_json({"carrier": ["UA"], "tailnum": [GONE]}, ("carrier", "tailnum"), 1)[0],
                 "feature": "some_on_demand", "value_json": "2", "value_float": 2.0, "status": "PRESENT"})
    return pl.DataFrame(rows, schema=schema)


def _quarantine_flights(pipeline: Pipeline) -> None:
    """Both tails' first flights held back by a run, as the gate records them."""
    landed = read_landed(pipeline.landing, "flights", declared_schema(RAW_TABLES[0]), time_column="dep_known_at").rows
    flights = landed.filter(pl.col("tailnum").is_in([GONE, KEPT])).head(4)  # as the gate sees them: source file and row
    tagged = flights.with_columns(
        pl.lit("2013-01-01-05:00").alias(QUARANTINE_COLUMNS[0]), pl.lit("flights_unique").alias(QUARANTINE_COLUMNS[1]),
        pl.lit("drop").alias(QUARANTINE_COLUMNS[2]), pl.lit("conflict").alias(QUARANTINE_COLUMNS[3]),
        pl.lit("run").alias(QUARANTINE_COLUMNS[4]), pl.lit(NOW).dt.cast_time_unit("us").alias(QUARANTINE_COLUMNS[5]),
    )
    Quarantine(pipeline.store).replace("raw_flights", tagged, pl.DataFrame(), first_partition="2013-01-01-05:00", last_partition="2013-01-01-05:00")


def _check_passed(run: RangeRun, table: str) -> bool:
    [evaluation] = [e for e in run.result.get_asset_check_evaluations()
                    if e.asset_key.to_user_string() == table and e.check_name == ABSENCE_CHECK]
    return evaluation.passed


def test_forget_erases_every_store_and_a_backfill_does_not_bring_it_back(
    pipeline: Pipeline, online_store_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    _run(pipeline, DIMENSIONS_JOB, "", "")
    _run(pipeline, RAW_HOURLY_JOB, "2013-01-01-00:00", "2013-01-03-23:00")
    _run(pipeline, HOURLY_SNAPSHOT_JOB, "2013-01-01", "2013-01-02")
    _run(pipeline, DAILY_SNAPSHOT_JOB, "2013-01-01", "2013-01-02")
    _run(pipeline, TRAINING_JOB, "2013-01-02", "2013-01-02")
    service = next(s for s in FEATURE_SERVICES.values() if s.needs_statistics)  # its fit pins the training set's version
    assert materialize([pipeline.defs.resolve_assets_def(statistics_asset_name(service))], instance=pipeline.instance).success
    append_log_rows(pipeline.store, _log_rows([GONE, KEPT]))
    _quarantine_flights(pipeline)
    client = redis.Redis.from_url(online_store_url)
    online = OnlineTable.for_view(AIRCRAFT, PREFIX)
    gone_key, kept_key = online.keys_for_rows([(GONE,)])[0], online.keys_for_rows([(KEPT,)])[0]
    # 2013's snapshots are past their TTL today, so the publish asset wrote none: publish the latest, stamped now.
    latest = latest_per_entity(AIRCRAFT, pipeline.store.read(AIRCRAFT.name))
    publish(client, online, latest.with_columns(pl.lit(datetime.now(UTC)).dt.cast_time_unit("us").alias("event_timestamp")))
    assert client.exists(gone_key) and client.exists(kept_key)
    tiles = stream_keys(PREFIX)
    gone_tile = tiles.tile(AIRCRAFT.name, entity_text([GONE]), 0)
    client.hset(gone_tile, "n", 1)
    client.hset(tiles.tile_events(AIRCRAFT.name, entity_text([GONE]), 0), "e", "{}")
    client.hset(tiles.tile(AIRCRAFT.name, entity_text([KEPT]), 0), "n", 1)
    flights = pipeline.store.read("raw_flights").filter(pl.col("tailnum").is_in([GONE, KEPT]))
    stream = tiles.events("raw_flights")
    client.delete(stream)
    push_events(client, "raw_flights", flights.drop("created_timestamp", strict=False), keys=tiles)
    before = {table: (_rows_of(pipeline, table, GONE), _rows_of(pipeline, table, KEPT), pipeline.store.version(table))
              for table in ENTITY_TABLES}
    assert all(gone > 0 and kept > 0 for gone, kept, _ in before.values()), before

    monkeypatch.setenv("FEATURE_PIPELINES_LAKE_ROOT", pipeline.settings.lake_root)
    monkeypatch.setenv("FEATURE_PIPELINES_LANDING_ROOT", pipeline.settings.landing_root)
    assert main(["forget", "--entity", "aircraft=N14228"]) == 2
    assert "unknown entity key 'aircraft'" in capsys.readouterr().err
    assert main(["forget", "--entity", f"tailnum={GONE}"]) == 0
    summary = capsys.readouterr().out
    print(summary)

    for table, (gone, kept, version) in before.items():
        assert _rows_of(pipeline, table, GONE) == 0, table
        assert _rows_of(pipeline, table, KEPT) == kept, table
        assert f"{table} " in summary and str(gone) in summary
        with pytest.raises((DeltaStoreError, OSError)):  # the versions before the deletion: their files were vacuumed
            pipeline.store.read(table, version=version)
    assert not client.exists(gone_key) and client.exists(kept_key)
    assert not client.exists(gone_tile) and client.exists(tiles.tile(AIRCRAFT.name, entity_text([KEPT]), 0))
    left = [fields[b"payload"].decode() for _, fields in client.xrange(stream)]
    assert left and all(GONE not in payload for payload in left) and any(KEPT in payload for payload in left)
    ledger = pipeline.store.read(DELETIONS_TABLE).sort("recorded_at")
    assert ledger["status"].to_list() == ["requested", "completed"]
    erased = {t["table"]: t["rows_deleted"] for t in ledger["tables"][1]}
    assert erased["raw_flights"] == before["raw_flights"][0] and gone_key in ledger["redis_keys"][1].to_list()
    assert f"{FLIGHT_DELAY_TRAINING_SET.name} version" in summary and "NOT rebuildable" in summary
    assert "proof: absent from all" in summary

    # A backfill over the same days: the landing zone still holds the tail, the raw assets leave it out.
    raw = _run(pipeline, RAW_HOURLY_JOB, "2013-01-01-00:00", "2013-01-02-23:00")
    left_out = [m.metadata["forgotten_rows_left_out"].value for m in raw.result.asset_materializations_for_node("raw_flights")]
    assert sum(left_out) > 0 and _check_passed(raw, "raw_flights")
    features = _run(pipeline, DAILY_SNAPSHOT_JOB, "2013-01-01", "2013-01-02")
    assert _check_passed(features, "aircraft_utilisation")
    for table in ("raw_flights", "aircraft_utilisation"):
        assert _rows_of(pipeline, table, GONE) == 0 and _rows_of(pipeline, table, KEPT) > 0
    assert not client.exists(gone_key)

    # A row put back (a day the next run does not rewrite): the blocking check fails and stops what is downstream.
    pipeline.store.append("raw_flights", pipeline.store.read("raw_flights").head(1).with_columns(pl.lit(GONE).alias("tailnum")))
    blocked = materialize_range(pipeline.defs, RAW_HOURLY_JOB, "2013-01-01-00:00", "2013-01-01-23:00",
                                instance=pipeline.instance, raise_on_error=False)
    assert not _check_passed(blocked, "raw_flights")
