"""The stream's parity as a Dagster asset check: a replayed day passes with zero mismatches over
thousands of random instants; one corrupted tile fails the blocking check, naming the features."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from dagster import DagsterInstance, materialize

from feature_pipelines.features.flights import aircraft_utilisation
from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.online.local_server import LocalRedisServer
from feature_pipelines.orchestration.streaming_parity import STREAM_PARITY_CHECK, build_stream_parity_asset
from feature_pipelines.quality.ledger import QualityLedger
from feature_pipelines.quality.outcome import CheckOutcome
from feature_pipelines.resources import LakeResource, RedisResource
from feature_pipelines.settings import ReplayClock, Settings
from feature_pipelines.streaming.consumer import StreamConsumer
from feature_pipelines.streaming.keys import stream_keys
from feature_pipelines.streaming.producer import push_events
from feature_pipelines_tests.streaming.conftest import REPLAY_DAY, drain, replay_events

PREFIX = "fp:test-parity"
KEYS = stream_keys(PREFIX)
TABLE = "raw_flights"


def _check(settings: Settings, url: str) -> tuple[bool, dict[str, object], str]:
    result = materialize(
        [build_stream_parity_asset(settings)], partition_key=REPLAY_DAY.strftime("%Y-%m-%d"),
        resources={"lake": LakeResource(root=settings.lake_root), "redis": RedisResource(key_prefix=PREFIX)},
        instance=DagsterInstance.ephemeral(), raise_on_error=False,
    )
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == STREAM_PARITY_CHECK]
    return evaluation.passed, {k: v.value for k, v in evaluation.metadata.items()}, evaluation.description or ""


def test_a_replayed_day_has_parity_and_a_corrupted_tile_fails_the_check(
    tmp_path: Path, stream_server: LocalRedisServer, stream_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEATURE_PIPELINES_REDIS_URL", stream_server.url)
    settings = Settings("local", str(tmp_path / "lake"), str(tmp_path / "landing"), ReplayClock(timedelta(0)))
    events = replay_events(TABLE)
    store = DeltaStore(settings.lake_root)
    store.write(TABLE, events, time_slice=None)
    # The raw gates judged the day's hours up to 20:00: later instants are not the lake's to know yet.
    judged = [CheckOutcome("test_gate", True, TABLE, f"{REPLAY_DAY + timedelta(hours=h):%Y-%m-%d-%H:00}", "ok") for h in range(20)]
    QualityLedger(store).record(judged, run_id="test", row_counts={})
    push_events(stream_client, TABLE, events, keys=KEYS)
    drain(StreamConsumer(stream_client, [aircraft_utilisation], table=TABLE, keys=KEYS, block_ms=1))

    passed, metadata, description = _check(settings, stream_server.url)
    assert passed, description
    assert "3000 instants, every value bit-identical" in description
    span = [REPLAY_DAY.isoformat(), (REPLAY_DAY + timedelta(hours=20)).isoformat()]
    assert metadata["compared_spans"] == {aircraft_utilisation.name: span}  # no replay coverage: the day, up to the lake's hours

    # One mile more in each tile of the day's noon hour: a sum no offline computation gives.
    noon = (REPLAY_DAY + timedelta(hours=12) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    tiles = list(stream_client.scan_iter(match=f"{KEYS.prefix}:tile:{aircraft_utilisation.name}:*:{noon}", count=1000))
    assert tiles
    for tile in tiles:
        stream_client.hincrby(tile, "i:distance", 1)
    passed, metadata, description = _check(settings, stream_server.url)
    mismatches = metadata["mismatches_by_feature"][aircraft_utilisation.name]  # type: ignore[index]
    assert not passed and mismatches["aircraft_distance_sum_24h"] > 0, description
    assert mismatches["aircraft_flights_count_24h"] == 0 and metadata["examples"]
