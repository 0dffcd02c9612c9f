"""`feature-pipelines stream`: the standalone consumer's run (progress, summary by rule, lag), and
the background consumer the demo starts and stops (a real process against a real redis-server)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import redis

from feature_pipelines.features.flights import aircraft_utilisation
from feature_pipelines.online.local_server import LocalRedisServer
from feature_pipelines.streaming.events import STREAM_TABLES, encode_rows
from feature_pipelines.streaming.keys import stream_keys
from feature_pipelines.streaming.producer import push_events
from feature_pipelines.streaming.runner import StreamProgress, run_stream, stream_lag
from feature_pipelines_tests.streaming.conftest import replay_events

TABLE = "raw_flights"
PREFIX = "fp:test-cli"
KEYS = stream_keys(PREFIX)


def _bad_events() -> list[dict[str, object]]:
    """Two events of the day the good ones are not among: one out of range, one missing a column."""
    rows = encode_rows(STREAM_TABLES[TABLE], replay_events(TABLE, days=1).slice(600, 2))
    return [{**rows[0], "distance": -5}, {k: v for k, v in rows[1].items() if k != "tailnum"}]


def _wait(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    """Running (an exited child not yet reaped by whoever adopted it is a zombie: not running)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_run_reports_progress_and_a_summary_by_rule_until_stopped(stream_server: LocalRedisServer, stream_client: redis.Redis) -> None:
    day = replay_events(TABLE, days=1).filter(pl.col("tailnum").is_not_null()).head(200)
    push_events(stream_client, TABLE, day, keys=KEYS)
    assert stream_lag(stream_client, KEYS, TABLE).undelivered == day.height  # no group yet: all behind
    stop, lines = threading.Event(), []
    result: list[StreamProgress] = []

    def progress(report: StreamProgress) -> None:
        lines.append(report.line())

    runner = threading.Thread(target=lambda: result.append(run_stream(
        stream_server.client, {aircraft_utilisation.name: aircraft_utilisation}, keys=KEYS, stop=stop,
        progress_every=0.1, on_progress=progress, block_ms=50)))
    runner.start()
    _wait(lambda: int(stream_client.hget(KEYS.stats(TABLE), "applied") or 0) == day.height)
    push_events(stream_client, TABLE, _bad_events(), keys=KEYS)
    _wait(lambda: stream_client.xlen(KEYS.dead_letters(TABLE)) == 2)
    _wait(lambda: len(lines) >= 3)
    stop.set()
    runner.join(timeout=5)
    summary = result[0]
    assert (summary.entries, summary.applied) == (day.height + 2, day.height)
    assert summary.dead_letters == {"flights_values_in_range": 1, "flights_schema_matches": 1}
    assert summary.lag[TABLE].undelivered == 0 and summary.lag[TABLE].pending == 0
    text = summary.summary()
    assert f"{day.height} events applied, 2 dead-lettered" in text
    assert "flights_schema_matches: 1, flights_values_in_range: 1" in text and "lag at exit: raw_flights: 0 entries" in text
    assert all(line.startswith("stream ") and "applied" in line and "lag: raw_flights" in line for line in lines)


def test_background_consumer_starts_serves_and_stops_with_its_summary(
    stream_server: LocalRedisServer, stream_client: redis.Redis, tmp_path: Path
) -> None:
    env = {**os.environ, "FEATURE_PIPELINES_REDIS_URL": stream_server.url, "FEATURE_PIPELINES_REDIS_PREFIX": PREFIX}
    state = tmp_path / "stream"

    def verb(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "feature_pipelines.cli", "stream", *args, "--state-dir", str(state)],
                              check=False, env=env, capture_output=True, text=True, timeout=90)

    started = verb("--background", "--every", "0.2")
    assert started.returncode == 0, started.stderr
    assert "running in the background" in started.stdout
    pid = int((state / "stream.pid").read_text())
    assert "already running" in verb("--background").stdout  # a second start reuses it
    (state / "stream.identity").write_text("the code before an update\n")
    restarted = verb("--background", "--every", "0.2")  # a start after the code changed restarts it
    assert "restarting the consumer" in restarted.stdout and "running in the background" in restarted.stdout, restarted
    assert not _alive(pid)
    pid = int((state / "stream.pid").read_text())
    day = replay_events(TABLE, days=1).filter(pl.col("tailnum").is_not_null()).head(100)
    push_events(stream_client, TABLE, [*encode_rows(STREAM_TABLES[TABLE], day), *_bad_events()], keys=KEYS)
    _wait(lambda: stream_client.xlen(KEYS.dead_letters(TABLE)) == 2
          and int(stream_client.hget(KEYS.stats(TABLE), "applied") or 0) == day.height)
    stopped = verb("--stop")
    assert stopped.returncode == 0, stopped.stderr
    assert f"{day.height} events applied, 2 dead-lettered" in stopped.stdout, stopped.stdout
    assert not _alive(pid) and not (state / "stream.pid").exists()
    log = (state / "stream.log").read_text()
    assert "consuming fp:test-cli:stream:events:raw_flights" in log and "lag: raw_flights" in log
    assert verb("--stop").stdout.strip() == "no stream consumer was running"
