"""The lean path answers exactly as the full path does: the same response bytes and headers, the
same request-log rows, on many random requests against a real redis-server (unknown entities,
expired values, stored nulls, NaN and infinities, several views, keys that need escaping, both
naming modes, PII features left out of the log), and requests it must not answer (bad values,
on-demand features, unknown references) still get the full path's answers."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from fastapi import FastAPI

from feature_pipelines.features.access import ConsumerPolicy
from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.features.spec import FeatureView
from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.serving.auth import API_KEY_HEADER
from feature_pipelines.serving.consumers import ConsumerKey
from feature_pipelines.serving.request_log import FEATURE_LOG_TABLE, RequestLog, key_columns_of
from feature_pipelines_tests.serving.conftest import Published, TestClient

ROUTE = FEATURE_VIEWS["route_delay_stats"]
CARRIER = FEATURE_VIEWS["carrier_delay_stats"]
PII_FEATURE = "carrier_flights_count_24h"
PII_INPUT = "carrier_dep_delay_mean_7d"  # makes carrier_dep_delay_ratio_24h_7d PII-derived: served, never logged
ON_DEMAND = ["on_demand:route_dep_delay_ratio_24h_7d", "on_demand:carrier_dep_delay_ratio_24h_7d"]
ORIGINS = ["JFK", "EWR", "LGA", "XXX", "a|b", "{x}", "%7C", "é"]
DESTS = ["LAX", "ORD", "ATL", "BOS", "YYY", "ü}"]
CARRIERS = ["UA", "AA", "ZZ", "x|y"]
REQUESTS = 300


def _with_pii(view: FeatureView, *names: str) -> FeatureView:
    features = tuple(dataclasses.replace(f, pii=True) if f.name in names else f for f in view.features)
    return dataclasses.replace(view, features=features)


VIEWS = {**FEATURE_VIEWS, CARRIER.name: _with_pii(CARRIER, PII_FEATURE, PII_INPUT)}


def _valid_body(rng: random.Random) -> dict[str, Any]:
    views = rng.choice([[ROUTE], [CARRIER], [ROUTE, CARRIER], [CARRIER, ROUTE]])
    references = [f"{view.name}:{feature.name}" for view in views for feature in view.features]
    features = rng.sample(references, rng.randint(1, min(len(references), 12)))
    if rng.random() < 0.3:  # on-demand features, computed from inputs requested or not
        chosen = rng.sample(ON_DEMAND, rng.randint(1, 2))
        features = rng.sample(features, rng.randint(0, len(features))) + chosen
        rng.shuffle(features)
    rows = rng.choice([1, 1, 1, 2, 3, 7, 40])
    views_of = {"route_dep_delay_ratio_24h_7d": ROUTE.name, "carrier_dep_delay_ratio_24h_7d": CARRIER.name}
    columns = {key for reference in features
               for key in VIEWS[views_of.get(reference.split(":")[1], reference.split(":")[0])].entity_keys}
    pools = {"origin": ORIGINS, "dest": DESTS, "carrier": CARRIERS}
    names = list(columns)
    rng.shuffle(names)
    body: dict[str, Any] = {"features": features,
                            "entities": {name: [rng.choice(pools[name]) for _ in range(rows)] for name in names}}
    if rng.random() < 0.5:
        body["full_feature_names"] = rng.random() < 0.5
    return body


def _invalid_body(rng: random.Random) -> Any:
    body = _valid_body(rng)
    column = next(iter(body["entities"]))
    spoil = rng.choice(["int key", "null key", "extra column", "missing column", "unknown feature", "duplicate",
                        "on demand", "no rows", "ragged", "bad flag", "extra field", "not a list"])
    if spoil == "int key":
        body["entities"][column][0] = 5
    elif spoil == "null key":
        body["entities"][column][-1] = None
    elif spoil == "extra column":
        body["entities"]["tailnum"] = ["N1"] * len(body["entities"][column])
    elif spoil == "missing column":
        del body["entities"][column]
        body["entities"] = body["entities"] or {"nothing": []}
    elif spoil == "unknown feature":
        body["features"].append("route_delay_stats:no_such_feature")
    elif spoil == "duplicate":
        body["features"].append(body["features"][0])
    elif spoil == "on demand":  # one with a request column: the full path's to parse
        body = {"features": ["route_delay_stats:route_dep_delay_mean_24h", "on_demand:scheduled_departure_hour_utc"],
                "entities": {"origin": ["JFK", "EWR"], "dest": ["LAX", "BOS"],
                             "scheduled_departure": ["2024-05-01T14:30:00Z", "2024-05-01T23:59:59+02:00"]}}
    elif spoil == "no rows":
        body["entities"] = {name: [] for name in body["entities"]}
    elif spoil == "ragged":
        body["entities"][column] = body["entities"][column] + ["JFK"]
    elif spoil == "bad flag":
        body["full_feature_names"] = "yes"
    elif spoil == "extra field":
        body["project"] = "x"
    else:
        body["entities"][column] = "JFK"
    return body


def _answers(app: FastAPI, bodies: list[Any], keys: list[str | None] | None = None
             ) -> list[tuple[int, bytes, dict[str, str], str | None]]:
    answers = []
    with TestClient(app) as client:
        for body, key in zip(bodies, keys or [None] * len(bodies)):
            response = client.post("/get-online-features", json=body,
                                   headers={API_KEY_HEADER: key} if key is not None else None)
            headers = dict(response.headers)
            request_id = headers.pop("x-request-id", None)
            answers.append((response.status_code, response.content, headers, request_id))
    return answers


def _log_rows(store: DeltaStore, answers: list[tuple[int, bytes, dict[str, str], str | None]]) -> pl.DataFrame:
    """The log's rows in request order, each request's id replaced by its position."""
    order = {request_id: position for position, (_, _, _, request_id) in enumerate(answers) if request_id}
    rows = store.read(FEATURE_LOG_TABLE)
    assert set(rows["request_id"]) <= set(order)
    return (rows.with_columns(pl.col("request_id").replace_strict(order, return_dtype=pl.Int64))
            .sort("request_id", "entity_index", "view", "feature"))


@pytest.mark.parametrize("seed", [1, 2])
def test_lean_path_answers_and_logs_exactly_as_the_full_path(
    make_app: Callable[..., FastAPI], published: Published, tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    bodies = [_invalid_body(rng) if rng.random() < 0.15 else _valid_body(rng) for _ in range(REQUESTS)]
    results = {}
    for lean in (True, False):
        store = DeltaStore(root=str(tmp_path / f"log-{lean}"))
        log = RequestLog(store, key_columns=key_columns_of(list(VIEWS.values())), flush_interval_s=60)
        app = make_app(views=VIEWS, request_log=log, lean=lean)
        answers = _answers(app, bodies)
        results[lean] = (answers, _log_rows(store, answers))
        if lean:
            # Most requests were the lean path's; the spoiled ones and on-demand ones were not.
            assert app.lean.answered > REQUESTS * 0.7
    (lean_answers, lean_rows), (full_answers, full_rows) = results[True], results[False]
    statuses = {status for status, _, _, _ in full_answers}
    assert {200, 404, 422} <= statuses
    for body, lean_answer, full_answer in zip(bodies, lean_answers, full_answers):
        assert lean_answer[:3] == full_answer[:3], body
    assert lean_rows.height > REQUESTS
    assert PII_FEATURE not in set(lean_rows["feature"]) and "carrier_dep_delay_ratio_24h_7d" not in set(lean_rows["feature"])
    assert "route_dep_delay_ratio_24h_7d" in set(lean_rows["feature"])
    assert set(lean_rows["status"]) == {"PRESENT", "NOT_FOUND", "OUTSIDE_MAX_AGE"}
    assert lean_rows.equals(full_rows)


def test_lean_path_keeps_the_full_paths_keys_and_policies(make_app: Callable[..., FastAPI], tmp_path: Path) -> None:
    """With a full-access key and consumers (one kept from PII, one from the carrier view), every
    caller gets from the lean path what the full path gives it: 401 without a valid key, 403 for a
    refused feature, the features otherwise; and the log holds the same rows."""
    rng = random.Random(3)
    consumers = [ConsumerKey(ConsumerPolicy("no-pii"), "key-no-pii"),
                 ConsumerKey(ConsumerPolicy("routes-only", exclude_pii=False, allowed_views=(ROUTE.name,)), "key-routes")]
    bodies = [_valid_body(rng) for _ in range(120)]
    keys = [rng.choice(["admin-key", "key-no-pii", "key-routes", "wrong", None]) for _ in bodies]
    results = {}
    for lean in (True, False):
        store = DeltaStore(root=str(tmp_path / f"log-{lean}"))
        log = RequestLog(store, key_columns=key_columns_of(list(VIEWS.values())), flush_interval_s=60)
        app = make_app(views=VIEWS, request_log=log, lean=lean, api_key="admin-key", consumers=consumers)
        answers = _answers(app, bodies, keys)
        results[lean] = (answers, _log_rows(store, answers))
        if lean:
            assert app.lean.answered == sum(status == 200 for status, _, _, _ in answers)
    (lean_answers, lean_rows), (full_answers, full_rows) = results[True], results[False]
    assert {status for status, _, _, _ in full_answers} == {200, 401, 403}
    for body, key, lean_answer, full_answer in zip(bodies, keys, lean_answers, full_answers):
        assert lean_answer[:3] == full_answer[:3], (body, key)
    assert lean_rows.equals(full_rows)
