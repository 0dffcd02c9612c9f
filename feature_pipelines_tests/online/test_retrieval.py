"""Online retrieval returns the training frame: same columns, dtypes, order and bits, at "now".

The reference is the real training path (`get_historical_features` over Delta tables in a tmp
lake); the online side is the real publish into a real redis-server. The tables are made by
hand so that every rule is exercised: awkward floats, integer nulls, unknown entities, null
keys, duplicates, and a value that Redis still holds but that is past its TTL at "now".
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import redis

from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.features.on_demand import (
    ON_DEMAND_FEATURES,
    OnDemandFeatureError,
    apply_on_demand,
    required_references,
)
from feature_pipelines.features.references import UnknownFeatureError
from feature_pipelines.features.spec import FeatureView
from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.offline.historical import get_historical_features
from feature_pipelines.online.publish import publish
from feature_pipelines.online.read import OnlineReadError
from feature_pipelines.online.retrieval import get_online_features
from feature_pipelines.online.table import OnlineTable
from feature_pipelines_tests.online.conftest import assert_frames_identical

PREFIX = "fp:retrieval"
UTC_US = pl.Datetime("us", "UTC")
NAN_WITH_PAYLOAD = struct.unpack("<d", struct.pack("<Q", 0x7FF8_0000_0000_0ABC))[0]
ROUTE = FEATURE_VIEWS["route_delay_stats"]
EXPIRES_IN = timedelta(minutes=10)
READ_DELAY = EXPIRES_IN + timedelta(seconds=3)
CARRIER = FEATURE_VIEWS["carrier_delay_stats"]


def _table(view: FeatureView, rows: list[dict[str, Any]]) -> pl.DataFrame:
    """A feature table as the pipeline writes it: keys, event and created times, every feature."""
    schema: dict[str, pl.DataType] = {key: pl.String() for key in view.entity_keys}
    schema["event_timestamp"] = UTC_US
    schema["created_timestamp"] = UTC_US
    schema.update(view.schema())
    filled = [{name: row.get(name) for name in schema} for row in rows]
    return pl.DataFrame(filled, schema=schema, orient="row")


def route_rows(now: datetime) -> list[dict[str, Any]]:
    """Route snapshots around `now`; values picked to be awkward for a float or int round trip."""
    day = timedelta(days=1)
    return [
        # An older snapshot that the newer one must beat, online and offline.
        dict(origin="JFK", dest="LAX", event_timestamp=now - 3 * day, created_timestamp=now - 3 * day,
             route_flights_count_24h=1, route_dep_delay_mean_24h=99.0, route_dep_delay_mean_7d=1.0),
        dict(origin="JFK", dest="LAX", event_timestamp=now - day, created_timestamp=now - day,
             route_flights_count_24h=42, route_dep_delay_mean_24h=0.1 + 0.2, route_dep_delay_mean_7d=-0.0,
             route_dep_delay_p90_24h=NAN_WITH_PAYLOAD, route_cancel_rate_24h=5e-324),
        dict(origin="EWR", dest="ORD", event_timestamp=now - timedelta(hours=5), created_timestamp=now,
             route_flights_count_24h=None, route_dep_delay_mean_24h=-7.25, route_dep_delay_mean_7d=2.5,
             route_dep_delay_p90_24h=math.inf, route_cancel_rate_24h=1 / 3),
        dict(origin="LGA", dest="ATL", event_timestamp=now - timedelta(hours=1), created_timestamp=now,
             route_flights_count_24h=2**62, route_dep_delay_mean_24h=None, route_dep_delay_mean_7d=0.0),
        # Past its TTL at the tests' read instant (READ_DELAY after `now`, on their own clock), while
        # Redis, on the wall clock, holds it for EXPIRES_IN after `now`: long enough for a slow test.
        dict(origin="EWR", dest="BOS", event_timestamp=now - ROUTE.ttl + EXPIRES_IN,
             created_timestamp=now, route_flights_count_24h=7, route_dep_delay_mean_24h=3.0,
             route_dep_delay_mean_7d=4.0),
    ]


def carrier_rows(now: datetime) -> list[dict[str, Any]]:
    return [
        dict(carrier="UA", event_timestamp=now - timedelta(hours=1), created_timestamp=now,
             carrier_flights_count_24h=300, carrier_dep_delay_mean_24h=12.5, carrier_dep_delay_mean_7d=10.0),
        dict(carrier="AA", event_timestamp=now - timedelta(hours=2), created_timestamp=now,
             carrier_flights_count_24h=0, carrier_dep_delay_mean_24h=None, carrier_dep_delay_mean_7d=None),
    ]


def publish_latest(client: redis.Redis, prefix: str, view: FeatureView, table: pl.DataFrame) -> None:
    """Publish each entity's latest snapshot, as the pipeline's publish step does."""
    latest = table.sort("event_timestamp").group_by(list(view.entity_keys), maintain_order=True).last()
    publish(client, OnlineTable.for_view(view, prefix), latest)


def build_stores(
    client: redis.Redis, lake: Path, now: datetime, prefix: str = PREFIX
) -> DeltaStore:
    """The same snapshots written to a Delta lake and published to Redis."""
    store = DeltaStore(root=str(lake))
    for view, rows in ((ROUTE, route_rows(now)), (CARRIER, carrier_rows(now))):
        table = _table(view, rows)
        store.write(view.name, table, time_slice=None)
        publish_latest(client, prefix, view, table)
    return store


def entity_frame(read_at: datetime) -> pl.DataFrame:
    """Entity rows as a training set has them: keys, prediction time, request data, a label."""
    origins = ["JFK", "EWR", "LGA", "EWR", "JFK", "XXX", "JFK", None]
    dests = ["LAX", "ORD", "ATL", "BOS", "LAX", "YYY", "LAX", "LAX"]
    carriers = ["UA", "AA", "UA", "ZZ", "UA", "UA", None, "AA"]
    n = len(origins)
    return pl.DataFrame(
        {
            "label": pl.Series([1.5 * i for i in range(n)], dtype=pl.Float64),
            "carrier": pl.Series(carriers, dtype=pl.String),
            "origin": pl.Series(origins, dtype=pl.String),
            "dest": pl.Series(dests, dtype=pl.String),
            "event_timestamp": pl.Series([read_at] * n, dtype=UTC_US),
            "scheduled_departure": pl.Series(
                [read_at + timedelta(hours=i) for i in range(n - 1)] + [None], dtype=UTC_US
            ),
        }
    )


FEATURES = [
    "carrier_delay_stats:carrier_dep_delay_mean_24h",
    "route_delay_stats:route_dep_delay_mean_7d",
    "route_delay_stats:route_flights_count_24h",
    "carrier_delay_stats:carrier_flights_count_24h",
    "route_delay_stats:route_dep_delay_mean_24h",
    "route_delay_stats:route_dep_delay_p90_24h",
    "route_delay_stats:route_cancel_rate_24h",
    "route_delay_stats:route_dep_delay_p90_7d",
]


@pytest.fixture
def stores(redis_client: redis.Redis, tmp_path: Path) -> Iterator[tuple[DeltaStore, datetime]]:
    now = datetime.now(timezone.utc)
    yield build_stores(redis_client, tmp_path / "lake", now), now


def test_online_equals_historical_at_now(redis_client: redis.Redis, stores: tuple[DeltaStore, datetime]) -> None:
    store, now = stores
    read_at = now + READ_DELAY
    entities = entity_frame(read_at)
    offline = get_historical_features(store, FEATURE_VIEWS, entities, FEATURES).frame
    online = get_online_features(
        redis_client, prefix=PREFIX, views=FEATURE_VIEWS, entity_rows=entities, features=FEATURES, now=read_at
    )
    assert_frames_identical(online, offline)
    # The rules, spelled out rather than only inherited from the offline side.
    assert online.columns[: entities.width] == entities.columns
    assert online.columns[entities.width:] == [
        "carrier_dep_delay_mean_24h", "carrier_flights_count_24h",
        "route_dep_delay_mean_7d", "route_flights_count_24h", "route_dep_delay_mean_24h",
        "route_dep_delay_p90_24h", "route_cancel_rate_24h", "route_dep_delay_p90_7d",
    ]
    assert online.schema["route_flights_count_24h"] == pl.Int64
    assert online["route_flights_count_24h"].to_list() == [42, None, 2**62, None, 42, None, 42, None]
    assert struct.pack("<d", online["route_dep_delay_p90_24h"][0]) == struct.pack("<d", NAN_WITH_PAYLOAD)
    assert math.copysign(1.0, online["route_dep_delay_mean_7d"][0]) == -1.0
    assert online["route_dep_delay_mean_24h"][3] is None  # EWR-BOS: in Redis, but past its TTL
    assert online["carrier_flights_count_24h"].to_list() == [300, 0, 300, None, 300, 300, None, 0]


def test_metadata_columns_come_last_and_mark_expiry(
    redis_client: redis.Redis, stores: tuple[DeltaStore, datetime]
) -> None:
    store, now = stores
    read_at = now + READ_DELAY
    entities = entity_frame(read_at)
    plain = get_online_features(redis_client, prefix=PREFIX, views=FEATURE_VIEWS, entity_rows=entities,
                                features=FEATURES, now=read_at)
    with_meta = get_online_features(redis_client, prefix=PREFIX, views=FEATURE_VIEWS, entity_rows=entities,
                                    features=FEATURES, now=read_at, include_metadata=True)
    meta = ["carrier_delay_stats__event_timestamp", "carrier_delay_stats__is_expired",
            "route_delay_stats__event_timestamp", "route_delay_stats__is_expired"]
    assert with_meta.columns == plain.columns + meta
    assert_frames_identical(with_meta.drop(meta), plain)
    assert with_meta["route_delay_stats__is_expired"].to_list() == [False, False, False, True, False, None, False, None]
    assert with_meta.schema["route_delay_stats__event_timestamp"] == UTC_US
    assert with_meta["route_delay_stats__event_timestamp"][0] == now - timedelta(days=1)


def test_on_demand_parity_with_training_path(
    redis_client: redis.Redis, stores: tuple[DeltaStore, datetime]
) -> None:
    """The training path (historical + apply_on_demand) and the online path give the same bits,
    including null and zero denominators (JFK-LAX has a -0.0 7d mean, LGA-ATL 0.0, AA nulls)."""
    store, now = stores
    read_at = now + READ_DELAY
    entities = entity_frame(read_at)
    on_demand = list(ON_DEMAND_FEATURES.values())
    requested = ["route_delay_stats:route_dep_delay_mean_24h"]  # the other inputs are not requested
    references = required_references(requested, on_demand)
    training = apply_on_demand(
        get_historical_features(store, FEATURE_VIEWS, entities, references).frame, on_demand
    )
    online = get_online_features(redis_client, prefix=PREFIX, views=FEATURE_VIEWS, entity_rows=entities,
                                 features=requested, now=read_at, on_demand=on_demand)
    names = [feature.name for feature in on_demand]
    assert online.columns == [*entities.columns, "route_dep_delay_mean_24h", *names]
    assert_frames_identical(online, training.select(online.columns))
    ratio = online["route_dep_delay_ratio_24h_7d"].to_list()
    assert ratio[0] is None and ratio[2] is None  # -0.0 and 0.0 denominators: null, never inf
    assert ratio[1] == -7.25 / 2.5
    assert online["carrier_dep_delay_ratio_24h_7d"].to_list()[:2] == [1.25, None]
    assert online["scheduled_departure_hour_utc"].to_list() == [
        (read_at + timedelta(hours=i)).hour for i in range(7)
    ] + [None]


def test_on_demand_only_and_errors(redis_client: redis.Redis, stores: tuple[DeltaStore, datetime]) -> None:
    _, now = stores
    entities = entity_frame(now)
    hour = ON_DEMAND_FEATURES["scheduled_departure_hour_utc"]
    only = get_online_features(redis_client, prefix=PREFIX, views=FEATURE_VIEWS, entity_rows=entities,
                               features=[], now=now, on_demand=[hour])
    assert only.columns == [*entities.columns, hour.name]
    with pytest.raises(UnknownFeatureError, match="no features requested"):
        get_online_features(redis_client, prefix=PREFIX, views=FEATURE_VIEWS, entity_rows=entities,
                            features=[], now=now)
    with pytest.raises(UnknownFeatureError, match="unknown feature view 'nope'"):
        get_online_features(redis_client, prefix=PREFIX, views=FEATURE_VIEWS, entity_rows=entities,
                            features=["nope:x"], now=now)
    with pytest.raises(OnlineReadError, match="timezone-aware"):
        get_online_features(redis_client, prefix=PREFIX, views=FEATURE_VIEWS, entity_rows=entities,
                            features=FEATURES, now=now.replace(tzinfo=None))
    with pytest.raises(OnlineReadError, match=r"\['tailnum'\] is missing"):
        get_online_features(redis_client, prefix=PREFIX, views=FEATURE_VIEWS, entity_rows=entities,
                            features=["aircraft_utilisation:aircraft_flights_count_24h"], now=now)
    with pytest.raises(OnDemandFeatureError, match="request column 'scheduled_departure'"):
        get_online_features(redis_client, prefix=PREFIX, views=FEATURE_VIEWS,
                            entity_rows=entities.drop("scheduled_departure"), features=[], now=now,
                            on_demand=[hour])
    with pytest.raises(OnlineReadError, match="collide"):
        get_online_features(redis_client, prefix=PREFIX, views=FEATURE_VIEWS,
                            entity_rows=entities.with_columns(route_flights_count_24h=pl.lit(1)),
                            features=FEATURES, now=now)


def test_vectorised_read_path_gives_the_same_frame(
    redis_client: redis.Redis, stores: tuple[DeltaStore, datetime], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests above SMALL_REQUEST_ROWS take read_online's per-column path; same answer."""
    from feature_pipelines.online import read as read_module

    _, now = stores
    read_at = now + READ_DELAY
    entities = entity_frame(read_at)
    small = get_online_features(redis_client, prefix=PREFIX, views=FEATURE_VIEWS, entity_rows=entities,
                                features=FEATURES, now=read_at, include_metadata=True)
    monkeypatch.setattr(read_module, "SMALL_REQUEST_ROWS", 0)
    large = get_online_features(redis_client, prefix=PREFIX, views=FEATURE_VIEWS, entity_rows=entities,
                                features=FEATURES, now=read_at, include_metadata=True)
    assert_frames_identical(large, small)
