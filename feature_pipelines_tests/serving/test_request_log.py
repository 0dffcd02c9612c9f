"""The request log: served values land in Delta with their request time, off the request path,
and a failing store never loses rows silently."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest
import redis
from fastapi import FastAPI

from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.features.spec import Aggregation, Entity, Feature, NullPolicy
from feature_pipelines.features.weather import origin_weather
from feature_pipelines.names import EVENT_TIMESTAMP
from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.online.publish import publish
from feature_pipelines.online.table import OnlineTable
from feature_pipelines.serving.request_log import (
    FEATURE_LOG_TABLE,
    RequestLog,
    RequestLogError,
    ServedFeature,
    ServedRequest,
    key_columns_of,
    log_schema,
    value_json,
)
from feature_pipelines_tests.serving.conftest import PREFIX, Published, TestClient

KEYS = key_columns_of(list(FEATURE_VIEWS.values()))
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def _served(request_id: str, values: list[float | None], when: datetime = T0) -> ServedRequest:
    n = len(values)
    return ServedRequest(
        request_id=request_id,
        request_time=when,
        entities={"origin": ["JFK"] * n, "dest": [f"D{i}" for i in range(n)]},
        features=[ServedFeature("route_delay_stats", "route_dep_delay_mean_24h", ("origin", "dest"), values,
                                ["PRESENT"] * n, [when - timedelta(hours=1)] * n)],
    )


def test_served_values_land_in_delta_after_close(make_app: Callable[..., FastAPI], published: Published,
                                                 tmp_path: Path) -> None:
    store = DeltaStore(root=str(tmp_path / "log-lake"))
    log = RequestLog(store, key_columns=KEYS, flush_interval_s=60)
    features = ["route_delay_stats:route_dep_delay_mean_24h", "route_delay_stats:route_dep_delay_p90_24h",
                "route_delay_stats:route_flights_count_24h", "on_demand:route_dep_delay_ratio_24h_7d"]
    ids = []
    with TestClient(make_app(request_log=log)) as client:
        for origins, dests in ((["JFK", "XXX"], ["LAX", "YYY"]), (["EWR"], ["ORD"])):
            response = client.post("/get-online-features",
                                   json={"features": features, "entities": {"origin": origins, "dest": dests}})
            assert response.status_code == 200, response.text
            ids.append(response.headers["x-request-id"])
        assert not store.exists(FEATURE_LOG_TABLE)  # nothing written on the request path
    rows = store.read(FEATURE_LOG_TABLE).sort("request_id", "entity_index", "feature")
    assert rows.schema == pl.Schema(log_schema(KEYS))
    assert rows.height == (2 + 1) * len(features)
    assert set(rows["request_id"]) == set(ids)
    assert rows["request_time"].unique().to_list() == [published.read_at]
    first = rows.filter(pl.col("request_id") == ids[0], pl.col("entity_index") == 0)
    by_feature = {r["feature"]: r for r in first.iter_rows(named=True)}
    mean = by_feature["route_dep_delay_mean_24h"]
    assert mean["view"] == "route_delay_stats" and mean["status"] == "PRESENT"
    assert json.loads(mean["entity_key"]) == {"origin": "JFK", "dest": "LAX"}
    assert (mean["origin"], mean["dest"], mean["carrier"], mean["tailnum"]) == ("JFK", "LAX", None, None)
    assert mean["value_float"] == 0.1 + 0.2 and json.loads(mean["value_json"]) == 0.1 + 0.2
    assert mean["event_timestamp"] == published.now - timedelta(days=1)
    assert by_feature["route_dep_delay_p90_24h"]["value_json"] == '"NaN"'
    assert math.isnan(by_feature["route_dep_delay_p90_24h"]["value_float"])
    assert by_feature["route_flights_count_24h"]["value_json"] == "42"
    ratio = by_feature["route_dep_delay_ratio_24h_7d"]
    assert (ratio["view"], ratio["value_json"], ratio["event_timestamp"]) == ("on_demand", "null", None)
    unknown = rows.filter(pl.col("request_id") == ids[0], pl.col("entity_index") == 1,
                          pl.col("feature") == "route_dep_delay_mean_24h").row(0, named=True)
    assert (unknown["status"], unknown["value_json"], unknown["value_float"]) == ("NOT_FOUND", "null", None)


def test_background_thread_flushes_every_n_rows(tmp_path: Path) -> None:
    store = DeltaStore(root=str(tmp_path / "lake"))
    log = RequestLog(store, key_columns=KEYS, flush_rows=3, flush_interval_s=60)
    log.start()
    try:
        log.record(_served("a", [1.0, 2.0, 3.0]))
        deadline = time.monotonic() + 5
        while log.stats()["written_rows"] < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert store.read(FEATURE_LOG_TABLE)["value_float"].sort().to_list() == [1.0, 2.0, 3.0]
    finally:
        log.close()


@dataclass(frozen=True)
class FlakyStore(DeltaStore):
    """A store whose first `failures` appends raise, as an unreachable object store would."""

    failures: int = 0
    calls: list[int] = field(default_factory=list)

    def append(self, table: str, frame: pl.DataFrame, **kwargs: object) -> int:  # type: ignore[override]
        self.calls.append(frame.height)
        if len(self.calls) <= self.failures:
            raise OSError("object store unreachable")
        return super().append(table, frame)


def test_failed_append_is_retried_then_kept_for_the_next_flush(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = FlakyStore(root=str(tmp_path / "lake"), failures=3)
    log = RequestLog(store, key_columns=KEYS, max_attempts=2, retry_backoff_s=0.001)
    log.record(_served("a", [1.0, None]))
    with caplog.at_level(logging.WARNING):
        assert log.flush() == 0  # two attempts, both fail
    assert "could not append 2 rows" in caplog.text
    assert log.stats()["pending_rows"] == 2 and log.stats()["failed_flushes"] == 1
    log.record(_served("b", [3.0]))
    assert log.flush() == 3  # third attempt fails, fourth succeeds with old and new rows
    assert store.calls == [2, 2, 3, 3]
    log.close()
    rows = store.read(FEATURE_LOG_TABLE)
    assert sorted(rows["request_id"].to_list()) == ["a", "a", "b"]
    assert rows.filter(pl.col("request_id") == "a")["value_json"].sort().to_list() == ["1.0", "null"]


def test_rows_that_cannot_be_written_are_reported_not_lost_silently(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    store = FlakyStore(root=str(tmp_path / "lake"), failures=1_000)
    log = RequestLog(store, key_columns=KEYS, max_attempts=1, retry_backoff_s=0, max_buffered_rows=3)
    log.record(_served("old", [1.0, 2.0]))
    with caplog.at_level(logging.ERROR):
        log.flush()
        log.record(_served("new", [3.0, 4.0]))
        log.flush()
    assert log.stats()["dropped_rows"] == 2  # over max_buffered_rows: the oldest go, loudly
    assert "DROPPED 2 rows" in caplog.text
    with pytest.raises(RequestLogError, match="2 rows could not be appended"):
        log.close()
    with pytest.raises(RequestLogError, match="closed"):
        log.record(_served("late", [5.0]))


def test_value_json_is_exact_and_valid_json() -> None:
    assert value_json(None) == "null"
    assert value_json(0.1 + 0.2) == "0.30000000000000004"
    assert value_json(-0.0) == "-0.0"
    assert [value_json(v) for v in (math.nan, math.inf, -math.inf)] == ['"NaN"', '"Infinity"', '"-Infinity"']
    assert value_json(2**62) == str(2**62)
    assert value_json("caf\u00e9") == json.dumps("caf\u00e9")
    assert value_json(T0) == '"2024-05-01T12:00:00+00:00"'
    assert value_json(True) == "true"


GATE = Entity("gate", ("gate_id",), description="A departure gate (a join key no catalog view has).")
GATE_WEATHER = dataclasses.replace(
    origin_weather, name="gate_weather", entity=GATE,
    features=(Feature("gate_temp_latest", "float64", aggregation=Aggregation.LATEST, window="6h",
                      null_policy=NullPolicy.KEEP, source_column="temp"),),
)
GROWN_VIEWS = {**FEATURE_VIEWS, GATE_WEATHER.name: GATE_WEATHER}
ROUTE_MEAN = "route_delay_stats:route_dep_delay_mean_24h"


def _serve_once(make_app: Callable[..., FastAPI], log: RequestLog, features: list[str],
                entities: dict[str, list[str]], **overrides: object) -> None:
    with TestClient(make_app(request_log=log, **overrides)) as client:
        response = client.post("/get-online-features", json={"features": features, "entities": entities})
        assert response.status_code == 200, response.text


def test_a_new_join_key_extends_an_existing_log(make_app: Callable[..., FastAPI], published: Published,
                                                redis_client: redis.Redis, tmp_path: Path) -> None:
    """A view with a join key the log has no column for: the running lake's log takes its rows (the
    column is added), earlier rows read back unchanged with null there, and a server still on the
    old catalog (a rolling deploy) keeps appending."""
    store = DeltaStore(root=str(tmp_path / "log-lake"))
    route = {"origin": ["JFK"], "dest": ["LAX"]}
    _serve_once(make_app, RequestLog(store, key_columns=KEYS), [ROUTE_MEAN], route)
    before = store.read(FEATURE_LOG_TABLE)
    assert before.schema == pl.Schema(log_schema(KEYS)) and "gate_id" not in before.columns

    publish(redis_client, OnlineTable.for_view(GATE_WEATHER, PREFIX), pl.DataFrame(
        {"gate_id": ["B22"], EVENT_TIMESTAMP: [published.now - timedelta(hours=1)], "gate_temp_latest": [61.5]},
        schema={"gate_id": pl.String, EVENT_TIMESTAMP: pl.Datetime("us", "UTC"), "gate_temp_latest": pl.Float64},
    ))
    grown = RequestLog(store, key_columns=key_columns_of(list(GROWN_VIEWS.values())))
    _serve_once(make_app, grown, ["gate_weather:gate_temp_latest", ROUTE_MEAN], {**route, "gate_id": ["B22"]},
                views=GROWN_VIEWS)
    assert grown.stats()["written_rows"] == 2 and grown.stats()["dropped_rows"] == 0
    _serve_once(make_app, RequestLog(store, key_columns=KEYS), [ROUTE_MEAN], route)  # the old catalog again

    rows = store.read(FEATURE_LOG_TABLE)
    assert rows.height == before.height + 2 + 1
    assert rows.schema["gate_id"] == pl.String
    gate = rows.filter(pl.col("view") == "gate_weather").row(0, named=True)
    assert (gate["gate_id"], gate["value_float"], gate["status"]) == ("B22", 61.5, "PRESENT")
    assert json.loads(gate["entity_key"]) == {"gate_id": "B22"}
    old = rows.filter(pl.col("request_id").is_in(before["request_id"].to_list()))
    assert old.select(before.columns).equals(before) and old["gate_id"].null_count() == old.height
    routes = rows.filter(pl.col("view") == "route_delay_stats")
    assert routes["value_float"].to_list() == [0.1 + 0.2] * 3 and routes["gate_id"].null_count() == 3
