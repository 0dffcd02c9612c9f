"""`serve` as a real uvicorn process on loopback, and `redis-up` / `redis-down`."""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import polars as pl
import pytest
import redis

from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.names import EVENT_TIMESTAMP, FEATURE_LOG_TABLE, online_key_prefix
from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.online.local_daemon import _start, ensure_local_redis, running_url, stop_local_redis
from feature_pipelines.online.local_server import LocalRedisServer, LocalRedisServerError
from feature_pipelines.online.publish import publish
from feature_pipelines.online.table import OnlineTable
from feature_pipelines.serving.cli import add_redis_parsers, add_serve_parser
from feature_pipelines.settings import ENVIRONMENTS
from feature_pipelines_tests.serving.conftest import PREFIX, Published
from feature_pipelines_tests.serving.serve_process import serve_process


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    verbs = parser.add_subparsers(dest="verb", required=True)
    add_serve_parser(verbs)
    add_redis_parsers(verbs)
    return parser


def test_serve_defaults_to_loopback_and_one_worker() -> None:
    args = _parser().parse_args(["serve"])
    assert (args.host, args.workers, args.max_entities) == ("127.0.0.1", 1, 1000)


def test_serve_without_a_redis_url_says_what_to_do(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("FEATURE_PIPELINES_REDIS_URL", raising=False)
    args = _parser().parse_args(["serve"])
    assert args.handler(args) == 2
    error = capsys.readouterr().err
    assert "FEATURE_PIPELINES_REDIS_URL" in error and "feature-pipelines redis-up" in error


def test_uvicorn_server_with_two_workers_serves_and_logs(published: Published, tmp_path: Path) -> None:
    lake = tmp_path / "serve-lake"
    env = {
        "FEATURE_PIPELINES_REDIS_URL": published.server.url,
        "FEATURE_PIPELINES_REDIS_PREFIX": PREFIX,
        "FEATURE_PIPELINES_LAKE_ROOT": str(lake),
        "FEATURE_PIPELINES_API_KEY": "k-123",
    }
    with serve_process(env, ["--workers", "2"]) as served:
        base = served.base
        body = {"features": ["route_delay_stats:route_dep_delay_mean_24h", "on_demand:route_dep_delay_ratio_24h_7d"],
                "entities": {"origin": ["EWR"], "dest": ["ORD"]}}
        assert httpx.post(f"{base}/get-online-features", json=body, timeout=5).status_code == 401
        for _ in range(4):  # spread over both workers
            response = httpx.post(f"{base}/get-online-features", json=body, headers={"X-API-Key": "k-123"}, timeout=5)
            assert response.status_code == 200, response.text
            assert [r["values"] for r in response.json()["results"][2:]] == [[-7.25], [-7.25 / 2.5]]
        assert httpx.get(f"{base}/openapi.json", timeout=5).status_code == 200
    assert served.returncode == 0, served.output
    assert f"on http://127.0.0.1:{served.port} with 2 worker(s)" in served.output
    # Each worker flushed its request log on shutdown.
    rows = DeltaStore(root=str(lake)).read(FEATURE_LOG_TABLE)
    assert rows.height == 4 * 2
    assert rows.filter(pl.col("feature") == "route_dep_delay_mean_24h")["value_float"].to_list() == [-7.25] * 4


def test_redis_up_reuses_and_redis_down_stops(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    parser = _parser()
    up = parser.parse_args(["redis-up", "--state-dir", str(state)])
    down = parser.parse_args(["redis-down", "--state-dir", str(state)])
    try:
        assert up.handler(up) == 0
        captured = capsys.readouterr()
        url = captured.out.strip()
        assert url.startswith("redis://127.0.0.1:") and url == (state / "url").read_text().strip()
        assert f"no Redis URL configured: started local redis-server at {url}" in captured.err
        client = redis.Redis.from_url(url)
        try:
            client.set("k", "v")
            assert ensure_local_redis(state) == url  # reused, with its data
            assert client.get("k") == b"v"
            assert client.config_get("save") == {"save": ""}
            assert client.config_get("appendonly") == {"appendonly": "no"}
            assert client.config_get("bind") == {"bind": "127.0.0.1"}
        finally:
            client.close()
        # A server on the recorded port that is not ours (another run_id) is never reused.
        ours = (state / "run_id").read_text()
        (state / "run_id").write_text("someone-else\n")
        assert running_url(state) is None
        (state / "run_id").write_text(ours)
        assert running_url(state) == url
    finally:
        assert down.handler(down) == 0
    assert capsys.readouterr().out.strip() == "stopped local redis-server"
    assert running_url(state) is None and not (state / "url").exists()
    assert stop_local_redis(state) is False


def test_a_port_held_by_another_server_is_never_recorded_as_ours(
    redis_server: LocalRedisServer, tmp_path: Path
) -> None:
    """If the free port we picked is taken meanwhile, the server answering there is someone
    else's: it must not be recorded (redis-down would then shut it down)."""
    state = tmp_path / "state"
    state.mkdir()
    with pytest.raises(LocalRedisServerError, match="Address already in use"):
        _start(state, redis_server.port)
    assert running_url(state) is None and not (state / "url").exists()
    assert redis_server.client().ping()


def _publish_route_mean(client: redis.Redis, prefix: str, mean: float, at: datetime) -> None:
    """Publish one route's snapshot under `prefix`: every feature null but the 24h mean delay."""
    view = FEATURE_VIEWS["route_delay_stats"]
    frame = pl.DataFrame(
        {"origin": ["JFK"], "dest": ["SFO"], EVENT_TIMESTAMP: [at],
         **{name: [mean if name == "route_dep_delay_mean_24h" else None] for name in view.feature_names}},
        schema={"origin": pl.String, "dest": pl.String, EVENT_TIMESTAMP: pl.Datetime("us", "UTC"), **view.schema()},
    )
    publish(client, OnlineTable.for_view(view, prefix), frame)


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_serve_reads_its_own_environments_keys(
    environment: str, redis_server: LocalRedisServer, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Without FEATURE_PIPELINES_REDIS_PREFIX the server reads `fp:<env>`, where that environment's
    publish assets write, and never another environment's keys."""
    now = datetime.now(timezone.utc)
    own, other = online_key_prefix(environment), online_key_prefix("elsewhere")
    _publish_route_mean(redis_client, own, 11.5, now - timedelta(hours=1))
    _publish_route_mean(redis_client, other, 99.0, now - timedelta(minutes=30))
    env = {"FEATURE_PIPELINES_ENV": environment, "FEATURE_PIPELINES_REDIS_URL": redis_server.url,
           "FEATURE_PIPELINES_LAKE_ROOT": str(tmp_path / "lake")}
    if environment != "local":  # staging and prod name their lake and its options explicitly
        env["FEATURE_PIPELINES_STORAGE_OPTIONS"] = "{}"
    body = {"features": ["route_delay_stats:route_dep_delay_mean_24h"], "entities": {"origin": ["JFK"], "dest": ["SFO"]}}
    try:
        with serve_process(env) as served:
            response = httpx.post(f"{served.base}/get-online-features", json=body, timeout=5)
        assert response.status_code == 200, response.text
        assert response.json()["results"][2]["values"] == [11.5]
        assert f"prefix {own!r}" in served.output
    finally:
        for prefix in (own, other):
            for key in redis_client.scan_iter(match=f"{prefix}:*"):
                redis_client.delete(key)
