"""The blast radius of a bad partition, on a real small lake: a raw hour that failed its gate and
one that was restated, walked forward to the exact served requests and models they touched."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.monitoring.blast_radius import FeatureWrite, PublishRecord, find_incidents, incidents_of, walk
from feature_pipelines.monitoring.lineage import snapshot_instants, spans_reading_source, window_of_key
from feature_pipelines.names import PREDICTIONS_TABLE
from feature_pipelines.offline.delta_store import DeltaStore, TimeSlice
from feature_pipelines.offline.historical import raw_hours_of
from feature_pipelines.quality.ledger import QualityLedger
from feature_pipelines.quality.outcome import CheckOutcome
from feature_pipelines.quality.quarantine import QUARANTINE_COLUMNS, Quarantine
from feature_pipelines.serving.request_log import (
    ServedFeature,
    ServedRequest,
    append_log_rows,
    key_columns_of,
    requests_to_frame,
)
from feature_pipelines.timeutil import floor_to, utc_now

CARRIERS = FEATURE_VIEWS["carrier_delay_stats"]  # hourly snapshots, 24h and 7d windows, daily partitions
H = timedelta(hours=1)
DAY = floor_to(utc_now() - timedelta(days=3), timedelta(days=1))  # the bad day: recent, so requests precede the restatement
BAD_HOUR, RESTATED_HOUR, REWRITTEN_HOUR = DAY + 10 * H, DAY + 14 * H, DAY + 13 * H
UTC_US = pl.Datetime("us", "UTC")


def flights(*rows: tuple[datetime, str, str, str, float]) -> pl.DataFrame:
    """raw_flights rows: (dep_known_at, carrier, origin, dest, dep_delay)."""
    return pl.DataFrame(
        [{"dep_known_at": t, "carrier": c, "origin": o, "dest": d, "tailnum": f"N{c}1", "dep_delay": delay} for t, c, o, d, delay in rows],
        schema={"dep_known_at": UTC_US, "carrier": pl.String, "origin": pl.String, "dest": pl.String, "tailnum": pl.String,
                "dep_delay": pl.Float64},
    )


def write_hour(store: DeltaStore, hour: datetime, rows: pl.DataFrame) -> int:
    return store.write("raw_flights", rows, time_slice=TimeSlice("dep_known_at", hour, hour + H),
                       commit_metadata={"dagster_run_id": f"raw-run-{store.version('raw_flights') if store.exists('raw_flights') else 0}"})


def served(request_id: str, at: datetime, view: str, keys: dict[str, str], stamp: datetime) -> ServedRequest:
    features = [ServedFeature(view, name, tuple(keys), [1.0], ["PRESENT"], [stamp]) for name in FEATURE_VIEWS[view].feature_names]
    return ServedRequest(request_id, at, {k: [v] for k, v in keys.items()}, features, feature_service="flight_delay")


@pytest.fixture
def lake(tmp_path: Path) -> DeltaStore:
    store = DeltaStore(root=str(tmp_path / "lake"))
    # Hour 10: AA and UA written and served; its re-run failed (a B6 row with an unknown airport,
    # the whole hour held back): the ledger says failed, the quarantine holds the new rows.
    write_hour(store, BAD_HOUR, flights((BAD_HOUR + 5 * timedelta(minutes=1), "AA", "JFK", "LAX", 3.0),
                                        (BAD_HOUR + 20 * timedelta(minutes=1), "UA", "EWR", "SFO", 12.0)))
    ledger = QualityLedger(store)
    ledger.record([CheckOutcome("flights_known_airports", False, "raw_flights", BAD_HOUR.strftime("%Y-%m-%d-%H:%M"),
                                "1 row with an unknown airport 'XXX'")], run_id="gate-run", row_counts={})
    held = flights((BAD_HOUR + 30 * timedelta(minutes=1), "B6", "JFK", "XXX", 1.0)).with_columns(
        pl.lit(BAD_HOUR.strftime("%Y-%m-%d-%H:%M")).alias(QUARANTINE_COLUMNS[0]), pl.lit("flights_known_airports").alias(QUARANTINE_COLUMNS[1]),
        pl.lit("fail").alias(QUARANTINE_COLUMNS[2]), pl.lit("unknown airport").alias(QUARANTINE_COLUMNS[3]),
        pl.lit("gate-run").alias(QUARANTINE_COLUMNS[4]), pl.lit(utc_now()).dt.cast_time_unit("us").alias(QUARANTINE_COLUMNS[5]))
    Quarantine(store).replace("raw_flights", held, held.head(0).select(QUARANTINE_COLUMNS[0]),
                              first_partition=held[QUARANTINE_COLUMNS[0]][0], last_partition=held[QUARANTINE_COLUMNS[0]][0])
    # Hour 13 is rewritten with the same rows (a re-run): no restatement. Hour 14's DL delay is corrected: restated.
    for _ in range(2):
        write_hour(store, REWRITTEN_HOUR, flights((REWRITTEN_HOUR + timedelta(minutes=7), "WN", "LGA", "MDW", 0.0)))
    write_hour(store, RESTATED_HOUR, flights((RESTATED_HOUR + timedelta(minutes=9), "DL", "JFK", "ATL", 5.0)))
    log = [
        served("r-aa", BAD_HOUR + 90 * timedelta(minutes=1), "carrier_delay_stats", {"carrier": "AA"}, BAD_HOUR + H),
        served("r-aa-before", BAD_HOUR + timedelta(minutes=30), "carrier_delay_stats", {"carrier": "AA"}, BAD_HOUR),  # window ends at 10:00
        served("r-ua-7d", DAY + 36 * H, "carrier_delay_stats", {"carrier": "UA"}, DAY + 36 * H),  # only the 7d features read hour 10
        served("r-ua-far", DAY + 9 * 24 * H, "carrier_delay_stats", {"carrier": "UA"}, DAY + 8 * 24 * H),  # past the 7d window
        served("r-wn", BAD_HOUR + 2 * H, "carrier_delay_stats", {"carrier": "WN"}, BAD_HOUR + 2 * H),  # no flight in a bad hour
        served("r-weather", BAD_HOUR + 2 * H, "origin_weather", {"origin": "JFK"}, BAD_HOUR + 2 * H),  # another source
        served("r-dl", RESTATED_HOUR + 2 * H, "carrier_delay_stats", {"carrier": "DL"}, RESTATED_HOUR + 2 * H),
    ]
    append_log_rows(store, requests_to_frame(log, key_columns_of(list(FEATURE_VIEWS.values()))))
    return store


def restate(store: DeltaStore) -> datetime:
    """Correct hour 14's DL delay; the commit instant."""
    write_hour(store, RESTATED_HOUR, flights((RESTATED_HOUR + timedelta(minutes=9), "DL", "JFK", "ATL", 50.0)))
    return utc_now()


def test_a_snapshot_reads_exactly_the_hours_offline_says_it_reads() -> None:
    hour = window_of_key(BAD_HOUR.strftime("%Y-%m-%d-%H:%M"))
    spans = spans_reading_source(CARRIERS, hour)
    instants = snapshot_instants(CARRIERS, spans)
    key = hour.key
    assert instants[0] == BAD_HOUR + H and instants[-1] == BAD_HOUR + H + timedelta(days=7) - H
    assert all(key in raw_hours_of(CARRIERS, pl.Series([t], dtype=UTC_US)) for t in instants)
    outside = [instants[0] - H, instants[-1] + H]
    assert not any(key in raw_hours_of(CARRIERS, pl.Series([t], dtype=UTC_US)) for t in outside)


def test_failed_gate_and_restatement_are_found_and_walked_to_the_exact_requests(lake: DeltaStore) -> None:
    restate(lake)
    incidents = find_incidents(lake, FEATURE_VIEWS, DAY, DAY + timedelta(days=1))
    assert sorted((i.table, i.partition, i.kind) for i in incidents) == [
        ("raw_flights", BAD_HOUR.strftime("%Y-%m-%d-%H:%M"), "gate_failed"),
        ("raw_flights", RESTATED_HOUR.strftime("%Y-%m-%d-%H:%M"), "restated"),
    ]
    radius = walk(lake, FEATURE_VIEWS, incidents)
    assert radius.request_ids == ["r-aa", "r-dl", "r-ua-7d"]
    ua = radius.served.filter(pl.col("request_id") == "r-ua-7d")
    assert set(ua["feature"]) == {f for f in CARRIERS.feature_names if f.endswith("_7d")}
    by_view = {(i.incident.split(" ")[0], i.view): i for i in radius.impacts}
    gate = by_view[(f"raw_flights/{BAD_HOUR:%Y-%m-%d-%H:%M}", "carrier_delay_stats")]
    assert gate.precision == "entity" and gate.entities == 3  # AA and UA stored, B6 quarantined
    assert gate.snapshots == 7 * 24 and gate.partitions[0] == f"{DAY:%Y-%m-%d}"
    assert radius.models is None and "no model scored" in radius.summary()


def test_publishes_models_and_the_end_of_a_restatement(lake: DeltaStore) -> None:
    restated_at = restate(lake)
    partition = f"{DAY:%Y-%m-%d}"
    publishes = [PublishRecord("carrier_delay_stats", "pub-early", BAD_HOUR + timedelta(minutes=15), partition, partition),
                 PublishRecord("carrier_delay_stats", "pub-11", BAD_HOUR + H + timedelta(minutes=15), partition, partition)]
    # The corrected partition is rewritten and published after the restatement: later requests are clean.
    fixed = restated_at + timedelta(minutes=5)
    publishes.append(PublishRecord("carrier_delay_stats", "pub-fixed", fixed, partition, partition))
    writes = [FeatureWrite("carrier_delay_stats", partition, restated_at + timedelta(minutes=1))]
    append_log_rows(lake, requests_to_frame(
        [served("r-dl-fixed", fixed + H, "carrier_delay_stats", {"carrier": "DL"}, RESTATED_HOUR + 2 * H)],
        key_columns_of(list(FEATURE_VIEWS.values()))))
    lake.append(PREDICTIONS_TABLE, pl.DataFrame(
        {"request_id": ["r-aa", "r-dl", "r-wn", "r-dl-fixed"], "entity_index": [0, 0, 0, 0],
         "request_time": [BAD_HOUR] * 4, "feature_service": ["flight_delay"] * 4, "model_name": ["flight_delay_model"] * 4,
         "model_version": ["3"] * 4, "score": [0.1, 0.2, 0.3, 0.4]},
        schema_overrides={"request_time": UTC_US}))
    radius = walk(lake, FEATURE_VIEWS, find_incidents(lake, FEATURE_VIEWS, DAY, DAY + timedelta(days=1)),
                  publishes=publishes, writes=writes)
    assert radius.request_ids == ["r-aa", "r-dl", "r-ua-7d"]  # r-dl-fixed was served the corrected values
    aa = radius.served.filter(pl.col("request_id") == "r-aa")
    assert set(aa["publish_run_id"]) == {"pub-11"}  # the latest publish before the request
    models = radius.models
    assert models is not None and models.to_dicts() == [
        {"model_name": "flight_delay_model", "model_version": "3", "requests": 2, "request_ids": ["r-aa", "r-dl"]}]
    payload = radius.to_dict(sample=2)
    assert payload["affected_requests"] == 3 and payload["request_ids"] == ["r-aa", "r-dl"]
    assert "| raw_flights/" in radius.markdown()


def test_a_named_partition_without_a_record_walks_at_partition_precision(lake: DeltaStore) -> None:
    incidents = incidents_of(lake, FEATURE_VIEWS, "raw_flights", f"{REWRITTEN_HOUR:%Y-%m-%d-%H:%M}")
    assert [i.kind for i in incidents] == ["named"]
    radius = walk(lake, FEATURE_VIEWS, incidents)
    # Every carrier's snapshot after 13:00 whose window still reaches hour 13 (WN's at 12:00 does not).
    assert radius.request_ids == ["r-dl", "r-ua-7d"]
    assert {i.precision for i in radius.impacts} == {"partition"}


def test_the_asset_and_the_verb_walk_a_restated_raw_hour_through_real_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """Real runs: raw flights and carrier_delay_stats with its publish; a landed file corrected and
    its day re-run restates one hour; the asset and the verb name the request that was served from it."""
    from dagster import materialize

    from feature_pipelines.cli import main
    from feature_pipelines.orchestration.blast_radius_assets import build_blast_radius_asset
    from feature_pipelines.orchestration.resources_by_env import lake_for
    from feature_pipelines.orchestration.runs import materialize_range
    from feature_pipelines.orchestration.schedules import HOURLY_SNAPSHOT_JOB, RAW_HOURLY_JOB
    from feature_pipelines.sources import nycflights
    from feature_pipelines_tests.conftest import make_pipeline, write_small_landing

    hour = datetime(2013, 1, 2, 15, tzinfo=UTC)
    original = nycflights.flights().filter(pl.col("dep_known_at").is_between(datetime(2013, 1, 1, tzinfo=UTC), datetime(2013, 1, 3, tzinfo=UTC), closed="left"))
    landing = tmp_path / "landing"
    write_small_landing(landing, flights=original)
    pipeline = make_pipeline(tmp_path, landing)
    assert materialize_range(pipeline.defs, RAW_HOURLY_JOB, "2013-01-01", "2013-01-02", instance=pipeline.instance).result.success
    assert materialize_range(pipeline.defs, HOURLY_SNAPSHOT_JOB, "2013-01-02", "2013-01-02", instance=pipeline.instance,
                             assets=["carrier_delay_stats", "carrier_delay_stats_online"]).result.success
    # Served after the publish, both the 16:00 snapshot (its windows read 15:00): a carrier with a departure at 15:00, one without.
    in_hour = original.filter(pl.col("dep_known_at").is_between(hour, hour + H, closed="left"))
    victim = in_hour.row(0, named=True)
    bystander = next(c for c in original["carrier"].unique().sort() if c not in set(in_hour["carrier"]))
    at = utc_now()
    append_log_rows(pipeline.store, requests_to_frame(
        [served("r-victim", at, "carrier_delay_stats", {"carrier": victim["carrier"]}, hour + H),
         served("r-bystander", at, "carrier_delay_stats", {"carrier": bystander}, hour + H)],
        key_columns_of(list(FEATURE_VIEWS.values()))))
    # The feed corrects one departure's delay: its file is replaced and the day re-run.
    corrected = original.with_columns(
        pl.when((pl.col("dep_known_at") == victim["dep_known_at"]) & (pl.col("carrier") == victim["carrier"])
                & (pl.col("tailnum") == victim["tailnum"])).then(pl.col("dep_delay") + 30).otherwise(pl.col("dep_delay")).alias("dep_delay"))
    write_small_landing(landing, flights=corrected)
    assert materialize_range(pipeline.defs, RAW_HOURLY_JOB, "2013-01-02", "2013-01-02", instance=pipeline.instance).result.success

    asset = build_blast_radius_asset(FEATURE_VIEWS, pipeline.settings)
    result = materialize([asset], partition_key="2013-01-02", instance=pipeline.instance,
                         resources={"lake": lake_for(pipeline.settings)})
    metadata = result.asset_materializations_for_node("blast_radius")[0].metadata
    assert metadata["incidents"].value == 1 and metadata["affected_requests"].value == 1
    assert metadata["sample_request_ids"].value == ["r-victim"] and metadata["publishes"].value == 1
    assert "raw_flights/2013-01-02-15:00 (restated)" in metadata["report"].value

    monkeypatch.setenv("FEATURE_PIPELINES_LAKE_ROOT", pipeline.settings.lake_root)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    (tmp_path / "dagster_home").mkdir()
    capsys.readouterr()
    assert main(["blast-radius", "--table", "raw_flights", "--partition", "2013-01-02-15:00", "--json"]) == 0
    walked = json.loads(capsys.readouterr().out)
    assert walked["request_ids"] == ["r-victim"] and walked["incidents"][0]["kind"] == "restated"
    assert walked["models"] is None  # no predictions table: no model scored them
