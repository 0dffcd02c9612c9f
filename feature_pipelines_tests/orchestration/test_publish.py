"""Publish assets in replay mode (2013 mapped onto the present), against a real redis-server:
online values equal offline point-in-time values, and an old partition never overwrites newer."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
import redis

from feature_pipelines.definitions import build_definitions
from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.offline.historical import get_historical_features
from feature_pipelines.online.retrieval import get_online_features
from feature_pipelines.orchestration.runs import materialize_range
from feature_pipelines.orchestration.schedules import HOURLY_SNAPSHOT_JOB
from feature_pipelines.settings import ReplayClock, Settings
from feature_pipelines.sources.nycflights import DATA_START
from feature_pipelines.timeutil import floor_to, utc_now
from dagster import DagsterInstance

from feature_pipelines_tests.conftest import backfill_to_last_hour

PREFIX = "fp:local"


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory, small_landing_root: Path, online_store_url: str):
    """Replay so that the small landing zone (Jan 1-11, 2013) ends after now; backfill 2 days."""
    now = utc_now()
    offset = timedelta(weeks=(now - timedelta(days=3) - DATA_START) // timedelta(weeks=1))
    tmp = tmp_path_factory.mktemp("replay")
    settings = Settings("local", str(tmp / "lake"), str(small_landing_root), ReplayClock(offset))
    defs = build_definitions(settings)
    instance = DagsterInstance.ephemeral()
    client = redis.Redis.from_url(online_store_url)
    client.flushall()
    _, runs = backfill_to_last_hour(defs, settings, lambda at: floor_to(at, timedelta(hours=1)) - timedelta(days=2), instance)
    return settings, defs, instance, DeltaStore(settings.lake_root), client, runs


def test_parity_checks_pass_and_publish_wrote_entities(replayed) -> None:
    *_, runs = replayed
    checks = [c for run in runs for c in run.result.get_asset_check_evaluations() if c.check_name == "online_matches_offline"]
    assert {c.asset_key.to_user_string() for c in checks} == {f"{name}_online" for name in FEATURE_VIEWS}
    assert all(c.passed for c in checks), [c.description for c in checks if not c.passed]
    compared = {c.asset_key.to_user_string(): c.metadata["entities_compared"].value for c in checks}
    assert compared["origin_weather_online"] == 3 and compared["carrier_delay_stats_online"] > 10


def test_online_features_equal_offline_point_in_time_now(replayed) -> None:
    _, _, _, store, client, _ = replayed
    now = utc_now()
    carriers = store.read("carrier_delay_stats")["carrier"].unique().sort()
    entities = pl.DataFrame({"carrier": carriers.to_list() + ["ZZ"]})
    references = [f"carrier_delay_stats:{name}" for name in FEATURE_VIEWS["carrier_delay_stats"].feature_names]
    online = get_online_features(client, prefix=PREFIX, views=FEATURE_VIEWS, entity_rows=entities, features=references, now=now)
    offline = get_historical_features(
        store, FEATURE_VIEWS, entities.with_columns(pl.lit(now).dt.cast_time_unit("us").alias("event_timestamp")), references
    ).frame.drop("event_timestamp")
    assert online.schema == offline.schema
    assert online.equals(offline)
    assert online.row(-1)[1:] == (None,) * (online.width - 1)  # unknown entity: nulls
    assert online.filter(pl.col("carrier") != "ZZ")["carrier_flights_count_24h"].null_count() < carriers.len()


def test_backfilling_an_old_partition_never_overwrites_newer_online_values(replayed) -> None:
    settings, defs, instance, store, client, runs = replayed
    before = {key: client.hgetall(key) for key in client.scan_iter(match=f"{PREFIX}:carrier_delay_stats:*")}
    assert before
    oldest = next(r for r in runs if r.job_name == HOURLY_SNAPSHOT_JOB).first_partition  # its first day
    run = materialize_range(defs, HOURLY_SNAPSHOT_JOB, oldest, oldest, instance=instance)
    assert run.result.success
    published = [e for e in run.result.get_asset_materialization_events() if e.asset_key.to_user_string() == "carrier_delay_stats_online"]
    metadata = published[0].materialization.metadata
    assert metadata["entities_written"].value == 0
    assert metadata["skipped_as_older"].value + metadata["skipped_as_expired"].value > 0
    after = {key: client.hgetall(key) for key in client.scan_iter(match=f"{PREFIX}:carrier_delay_stats:*")}
    assert after == before


def test_feature_store_facade_serves_training_and_online_alike(replayed) -> None:
    from feature_pipelines import FeatureStore

    _, _, _, store, client, _ = replayed
    facade = FeatureStore(lake=store, redis_client=client, key_prefix=PREFIX)
    now = utc_now()
    entities = pl.DataFrame({"origin": ["EWR", "JFK", "LGA"]})
    references = ["origin_weather:origin_temp_latest", "origin_weather:origin_observations_count_6h"]
    online = facade.get_online_features(entities, references, now=now)
    offline = facade.get_historical_features(
        entities.with_columns(pl.lit(now).dt.cast_time_unit("us").alias("event_timestamp")), references
    ).drop("event_timestamp")
    assert online.equals(offline) and online["origin_temp_latest"].null_count() == 0
    assert online.schema["origin_observations_count_6h"] == pl.Int64

