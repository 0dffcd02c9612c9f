"""Online reads: request order, declared dtypes, nulls for the unknown and the expired."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import polars as pl
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feature_pipelines.online import read as read_module
from feature_pipelines.online.encoding import OnlineEncodingError, UnknownEncodingVersionError
from feature_pipelines.online.keys import hash_key
from feature_pipelines.online.local_server import LocalRedisServer
from feature_pipelines.online.publish import publish
from feature_pipelines.online.read import OnlineReadError, read_online
from feature_pipelines.online.table import OnlineTable
from feature_pipelines_tests.online.conftest import (
    ENTITY_KEYS,
    FEATURES,
    PREFIX,
    SCHEMA,
    TABLE,
    TTL,
    VIEW,
    assert_frames_identical,
    now_utc,
    snapshot,
)

TS, EXPIRED = f"{VIEW}__event_timestamp", f"{VIEW}__is_expired"


@pytest.fixture(params=["python", "vectorised"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test through both read paths: per value (small requests) and per column (large)."""
    if request.param == "vectorised":
        monkeypatch.setattr(read_module, "SMALL_REQUEST_ROWS", 0)
    return str(request.param)


def _request(*pairs: tuple[str, str]) -> pl.DataFrame:
    return pl.DataFrame(pairs, schema={"origin": pl.String, "dest": pl.String}, orient="row")


def test_request_order_duplicates_and_unknown_entities(redis_client: redis.Redis, path: str) -> None:
    event_time = now_utc()
    frame = snapshot(30, event_time)
    publish(redis_client, frame=frame, table=TABLE)
    request = _request(("O5", "D5"), ("ZZZ", "D1"), ("O2", "D2"), ("O5", "D5"), ("O1", "nope"))
    got = read_online(redis_client, entity_rows=request, features=["route_top_carrier_24h", "route_flights_24h"],
                      now=event_time, table=TABLE)
    by_key = {(r["origin"], r["dest"]): r for r in frame.iter_rows(named=True)}
    expected = pl.DataFrame(
        {
            "origin": request["origin"], "dest": request["dest"],
            "route_top_carrier_24h": [by_key.get(k, {}).get("route_top_carrier_24h") for k in request.rows()],
            "route_flights_24h": [by_key.get(k, {}).get("route_flights_24h") for k in request.rows()],
        },
        schema={"origin": pl.String, "dest": pl.String, "route_top_carrier_24h": pl.String,
                "route_flights_24h": pl.Int64},
    )
    assert_frames_identical(got, expected)
    assert got["route_top_carrier_24h"][0] == "g0-c5"
    assert got.row(1)[2:] == (None, None)


def test_all_nulls_and_empty_strings_survive(redis_client: redis.Redis, path: str) -> None:
    event_time = now_utc()
    frame = snapshot(40, event_time)
    publish(redis_client, frame=frame, table=TABLE)
    got = read_online(redis_client, entity_rows=frame.select(ENTITY_KEYS), features=FEATURES,
                      now=event_time, table=TABLE)
    assert_frames_identical(got, frame.drop("event_timestamp"))
    assert "" in got["route_top_carrier_24h"].to_list() and None in got["route_top_carrier_24h"].to_list()


def test_ttl_boundary_and_metadata(redis_client: redis.Redis, path: str) -> None:
    event_time = now_utc().replace(microsecond=0)
    publish(redis_client, frame=snapshot(2, event_time), table=TABLE)
    request = _request(("O0", "D0"), ("O1", "D1"), ("none", "none"))
    at_edge = read_online(redis_client, entity_rows=request, features=["route_flights_24h"],
                          now=event_time + TTL, include_metadata=True, table=TABLE)
    assert at_edge["route_flights_24h"].to_list() == [0, 1, None]  # valid through ts + ttl inclusive
    assert at_edge[EXPIRED].to_list() == [False, False, None]
    past = read_online(redis_client, entity_rows=request, features=["route_flights_24h"],
                       now=event_time + TTL + timedelta(microseconds=1), include_metadata=True, table=TABLE)
    assert past["route_flights_24h"].to_list() == [None, None, None]
    assert past[EXPIRED].to_list() == [True, True, None]
    assert past[TS].to_list() == [event_time, event_time, None]
    assert past.schema[TS] == pl.Datetime("us", "UTC") and past.schema[EXPIRED] == pl.Boolean
    plain = read_online(redis_client, entity_rows=request, features=["route_flights_24h"],
                        now=event_time + TTL + timedelta(microseconds=1), table=TABLE)
    assert plain.columns == ["origin", "dest", "route_flights_24h"]


def test_unknown_feature_is_an_error_naming_view_and_feature(redis_client: redis.Redis) -> None:
    with pytest.raises(OnlineReadError, match=r"'route_delay_stats' has no feature 'route_nope_24h'"):
        read_online(redis_client, entity_rows=_request(("O0", "D0")), features=["route_nope_24h"],
                    now=now_utc(), table=TABLE)
    with pytest.raises(OnlineReadError, match="requested twice"):
        read_online(redis_client, entity_rows=_request(("O0", "D0")), features=FEATURES[:1] * 2,
                    now=now_utc(), table=TABLE)
    with pytest.raises(OnlineReadError, match=r"lacks entity key column\(s\) \['dest'\]"):
        read_online(redis_client, entity_rows=pl.DataFrame({"origin": ["O0"]}), features=FEATURES,
                    now=now_utc(), table=TABLE)
    with pytest.raises(OnlineReadError, match="timezone-aware"):
        read_online(redis_client, entity_rows=_request(("O0", "D0")), features=FEATURES,
                    now=datetime(2026, 1, 1), table=TABLE)


@pytest.mark.parametrize(
    ("entity", "field", "stored", "error", "message"),
    [
        (("O1", "D1"), "__v", b"7", UnknownEncodingVersionError, r"'route_delay_stats'.*origin='O1', dest='D1'.*'7'"),
        (("O2", "D2"), "route_dep_delay_mean_24h", b"abc", OnlineEncodingError,
         r"'route_delay_stats'.*dest='D2'.*'route_dep_delay_mean_24h'"),
    ],
    ids=["unknown_encoding_version", "malformed_value"],
)
def test_an_unreadable_stored_value_is_an_error_naming_view_entity_and_field(
    redis_client: redis.Redis, path: str, entity: tuple[str, str], field: str, stored: bytes,
    error: type[Exception], message: str,
) -> None:
    event_time = now_utc()
    publish(redis_client, frame=snapshot(3, event_time), table=TABLE)
    redis_client.hset(hash_key(PREFIX, VIEW, entity), field, stored)
    with pytest.raises(error, match=message):
        read_online(redis_client, entity_rows=_request(("O0", "D0"), entity), features=FEATURES,
                    now=event_time, table=TABLE)


def test_feature_added_after_publish_reads_null(redis_client: redis.Redis, path: str) -> None:
    event_time = now_utc()
    publish(redis_client, frame=snapshot(2, event_time), table=TABLE)
    schema = {**SCHEMA, "route_new_feature_24h": pl.Float64()}
    got = read_online(redis_client, entity_rows=_request(("O0", "D0")), features=["route_new_feature_24h"],
                      now=event_time, table=replace(TABLE, schema=schema))
    assert got["route_new_feature_24h"].to_list() == [None]
    assert got.schema["route_new_feature_24h"] == pl.Float64


def test_empty_request_gives_an_empty_typed_frame(redis_client: redis.Redis) -> None:
    got = read_online(redis_client, entity_rows=_request(), features=FEATURES, now=now_utc(),
                      include_metadata=True, table=TABLE)
    assert got.height == 0
    assert got.columns == [*ENTITY_KEYS, *FEATURES, TS, EXPIRED]
    assert [got.schema[f] for f in FEATURES] == list(SCHEMA.values())


def test_works_with_a_decoding_client(redis_server: LocalRedisServer, redis_client: redis.Redis) -> None:
    """Packed floats are not text: reads stay bytes whatever the client's decode_responses."""
    event_time = now_utc()
    frame = snapshot(5, event_time)
    text_client = redis_server.client(decode_responses=True)
    assert publish(text_client, frame=frame, table=TABLE).written == 5
    got = read_online(text_client, entity_rows=frame.select(ENTITY_KEYS), features=FEATURES,
                      now=event_time, table=TABLE)
    assert_frames_identical(got, frame.drop("event_timestamp"))
    text_client.close()


def test_large_request_crosses_the_pipeline_chunk(redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(read_module, "PIPELINE_CHUNK", 64)
    event_time = now_utc()
    frame = snapshot(1_000, event_time)
    publish(redis_client, frame=frame, table=TABLE)
    request = frame.select(ENTITY_KEYS).reverse()
    got = read_online(redis_client, entity_rows=request, features=FEATURES, now=event_time, table=TABLE)
    assert_frames_identical(got, frame.reverse().drop("event_timestamp"))


ROWS = st.lists(
    st.tuples(
        st.text(alphabet="ab|{}%", max_size=3),
        st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
        st.one_of(st.none(), st.floats(allow_nan=True)),
        st.one_of(st.none(), st.text(max_size=5)),
        st.one_of(st.none(), st.booleans()),
    ),
    max_size=12,
    unique_by=lambda row: row[0],
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=ROWS)
def test_property_publish_then_read_round_trips(redis_client: redis.Redis, rows: list[tuple[object, ...]]) -> None:
    redis_client.flushall()
    event_time = datetime.now(timezone.utc)
    schema = {"i": pl.Int64(), "f": pl.Float64(), "s": pl.String(), "b": pl.Boolean()}
    frame = pl.DataFrame(
        rows, schema={"k": pl.String, **schema}, orient="row"
    ).with_columns(pl.lit(event_time).cast(pl.Datetime("us", "UTC")).alias("event_timestamp"))
    table = OnlineTable(name="prop", entity_keys=("k",), schema=schema, ttl=TTL, prefix=PREFIX)
    assert publish(redis_client, frame=frame, table=table).written == len(rows)
    original = read_module.SMALL_REQUEST_ROWS
    for threshold in (original, 0):  # per-value path, then per-column path
        read_module.SMALL_REQUEST_ROWS = threshold
        try:
            got = read_online(redis_client, entity_rows=frame.select("k"), features=list(schema),
                              now=event_time, table=table)
        finally:
            read_module.SMALL_REQUEST_ROWS = original
        assert_frames_identical(got, frame.drop("event_timestamp"))


def test_categorical_request_keys_find_string_keyed_entities(redis_client: redis.Redis, path: str) -> None:
    event_time = now_utc()
    frame = snapshot(5, event_time)
    publish(redis_client, frame=frame, table=TABLE)
    request = frame.select(pl.col("origin").cast(pl.Categorical), "dest")
    got = read_online(redis_client, entity_rows=request, features=["route_flights_24h"], now=event_time, table=TABLE)
    assert got["route_flights_24h"].to_list() == frame["route_flights_24h"].to_list()
    assert got.schema["origin"] == pl.Categorical
