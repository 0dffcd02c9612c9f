"""Every feature service serves exactly its training vector: the online read of a service has the
training frame's columns, order and dtypes, and the values of the point-in-time read at the same
instant, bit for bit, with the service's pinned fitted statistics applied on both sides.

Real runs in replay mode (25 days of 2013 mapped to end in the future, so published values are
unexpired in Redis): the backfill publishes to a real redis-server and builds the training set,
the statistics asset fits on it, and both stores are read by service."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import redis
from dagster import DagsterInstance, materialize

from feature_pipelines.definitions import build_definitions
from feature_pipelines.feature_store import FeatureStore
from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.features.services import FEATURE_SERVICES, service_schema
from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.orchestration.statistics_assets import statistics_asset_name, unfitted_services
from feature_pipelines.settings import ReplayClock, Settings
from feature_pipelines.sources import nycflights
from feature_pipelines.sources.landing import LandingZone
from feature_pipelines.sources.nycflights import DATA_START
from feature_pipelines.streaming.consumer import StreamConsumer
from feature_pipelines.streaming.keys import stream_keys
from feature_pipelines.streaming.replay import push_replayed, stream_horizon
from feature_pipelines.streaming.runner import streaming_tables
from feature_pipelines.timeutil import floor_to, utc_now
from feature_pipelines.training.frames import training_frame
from feature_pipelines.training.spec import FLIGHT_DELAY_TRAINING_SET
from feature_pipelines_tests.conftest import backfill_to_last_hour, write_small_landing

KEYS = ["origin", "dest", "carrier", "tailnum"]
LANDED_DAYS = 25


def _landing(root: Path) -> Path:
    end = DATA_START + timedelta(days=LANDED_DAYS)
    write_small_landing(
        root,
        flights=nycflights.flights().filter(pl.col("dep_known_at").is_between(DATA_START, end, closed="left")),
        weather=nycflights.weather().filter(pl.col("observed_at").is_between(DATA_START, end, closed="left")),
    )
    return root


def _stream_until(client: redis.Redis, settings: Settings, until: datetime) -> None:
    """The streaming views' raw events up to `until` pushed as `traffic` pushes them, then consumed:
    the server reads those views from the stream's tiles."""
    keys = stream_keys("fp:local")
    horizon = stream_horizon(list(FEATURE_VIEWS.values()))
    for table in streaming_tables(FEATURE_VIEWS):
        pushed = push_replayed(client, keys, LandingZone(settings.landing_root), settings.replay, table,
                               until=until, horizon=horizon)
        assert pushed.events > 100, pushed
        consumer = StreamConsumer(client, list(FEATURE_VIEWS.values()), table=table, keys=keys, block_ms=10)
        while consumer.run_once().entries:
            pass


def test_every_feature_service_serves_exactly_its_training_vector(
    tmp_path: Path, empty_online_store: None, online_store_url: str
) -> None:
    now = utc_now()
    # 2013-01-01 lands 10 to 17 days ago (whole weeks, so weekdays line up): the data runs past now.
    offset = timedelta(weeks=(now - timedelta(days=10) - DATA_START) // timedelta(weeks=1))
    settings = Settings("local", str(tmp_path / "lake"), str(_landing(tmp_path / "landing")), ReplayClock(offset))
    defs = build_definitions(settings)
    instance = DagsterInstance.ephemeral()
    # Four days back: the training set gets its whole days whose features and next day are there.
    backfill_to_last_hour(defs, settings, lambda at: floor_to(at, timedelta(hours=1)) - timedelta(days=4), instance)
    lake = DeltaStore(settings.lake_root)
    pinning = [s for s in FEATURE_SERVICES.values() if s.needs_statistics]
    assert unfitted_services(lake, FEATURE_SERVICES.values()) == pinning  # what `backfill` fits after its runs
    for service in pinning:
        assert materialize([defs.resolve_assets_def(statistics_asset_name(service))], instance=instance).success
    assert unfitted_services(lake, FEATURE_SERVICES.values()) == []

    client = redis.Redis.from_url(online_store_url)
    # The stream is fed up to now, fresher than the lake, whose raw hours end at the last closed
    # hour: values read at that hour's end are ones both sides can know (and the hourly views'
    # newest published snapshots are stamped there).
    _stream_until(client, settings, utc_now())
    read_at = floor_to(now, timedelta(hours=1))  # the backfill, which ran after `now`, reached at least this hour
    store = FeatureStore(lake=lake, redis_client=client, key_prefix="fp:local")
    training_rows = lake.read(FLIGHT_DELAY_TRAINING_SET.name)
    entities = pl.concat([
        training_rows.select(KEYS).unique(maintain_order=True).head(300),
        pl.DataFrame({key: ["ZZZ"] for key in KEYS}),  # an unknown entity: nulls, imputed where declared
    ])
    assert entities.height > 100, entities.height
    stamped = entities.with_columns(pl.lit(read_at).dt.cast_time_unit("us").alias("event_timestamp"))
    assert len(FEATURE_SERVICES) >= 2 and any(s.needs_statistics for s in FEATURE_SERVICES.values())
    for name, service in FEATURE_SERVICES.items():
        online = store.get_online_features(entities, feature_service=name, now=read_at)
        offline = store.get_historical_features(stamped, feature_service=name).drop("event_timestamp")
        training = training_frame(lake, FLIGHT_DELAY_TRAINING_SET, service=service).frame
        assert online.columns == [*KEYS, *service.column_names], name
        assert {c: online.schema[c] for c in service.column_names} == service_schema(service), name
        assert {c: training.schema[c] for c in service.column_names} == service_schema(service), name
        assert online.schema == offline.schema, name
        differing = [c for c in online.columns if not online[c].equals(offline[c])]
        assert not differing, (name, differing, online.filter(online[differing[0]].ne_missing(offline[differing[0]]))
                               .select(*KEYS, differing[0]).head(3), offline.filter(online[differing[0]].ne_missing(
                                   offline[differing[0]])).select(*KEYS, differing[0]).head(3))
        assert online.equals(offline), name  # the same bits, nulls in the same places
        served = online.select(service.column_names)
        assert served.null_count().sum_horizontal().item() < served.height * served.width // 2, name
        # The streaming view's column came from the stream's tiles, fed with the day's real departures.
        assert online["aircraft_flights_count_24h"].gt(0).sum() > 20, name
    client.close()
