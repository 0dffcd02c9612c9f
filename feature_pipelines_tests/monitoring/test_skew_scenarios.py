"""Each kind of skew the platform exists to catch, injected into a real replayed pipeline and caught
by the monitoring assets in real Dagster runs; the unmodified pipeline raises no alarm.

The fixture backfills three replayed days (2013 shifted onto the present) into a temporary lake,
publishes to the session's real Redis, then sends the next day's departures through the real
feature server (in process, request log on): that is the clean serving day. Each scenario clones
the lake and injects one fault:

- a serving path computing the carrier 24h mean over a window ending at midnight;
- a service layer imputing 0 for null features;
- a daily feature computed with a New York (local) day boundary instead of UTC;
- an online store whose publishing stopped 6 hours ago;
- an upstream switching `distance` to nautical miles (partition drift);
- a serving path reading delays in seconds instead of minutes (serving drift);
- a service rounding a delay mean to one decimal.

The server reads the streaming view from the stream's tiles, fed with the landed events up to
the lake's last raw hour. Each serving fault's root cause is named by the skew check.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import redis
from dagster import AssetKey, DagsterInstance, Definitions

from feature_pipelines.cli import main
from feature_pipelines.definitions import build_definitions
from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.features.drift_thresholds import DRIFT_THRESHOLDS
from feature_pipelines.features.on_demand import ON_DEMAND_FEATURES
from feature_pipelines.monitoring import scenarios
from feature_pipelines.monitoring.cli import upcoming_departures
from feature_pipelines.names import FEATURE_LOG_TABLE
from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.orchestration.monitoring_assets import (
    FEATURE_DRIFT_CHECK,
    MULTIVARIATE_CHECK,
    PARTITION_DRIFT_ASSET,
    SERVING_DRIFT_ASSET,
    SHADOW_ASSET,
    SKEW_ASSET,
    SKEW_CHECK,
    partition_drift_check,
    shadow_check,
)
from feature_pipelines.orchestration.runs import materialize_range
from feature_pipelines.orchestration.schedules import DAILY_SNAPSHOT_JOB, MONITORING_JOB, RAW_HOURLY_JOB
from feature_pipelines.serving.app import create_app
from feature_pipelines.serving.request_log import RequestLog, key_columns_of
from feature_pipelines.settings import ReplayClock, Settings
from feature_pipelines.sources import nycflights
from feature_pipelines.sources.landing import LandingZone
from feature_pipelines.sources.nycflights import DATA_START
from feature_pipelines.streaming.consumer import StreamConsumer
from feature_pipelines.streaming.keys import stream_keys
from feature_pipelines.streaming.replay import push_replayed, stream_horizon
from feature_pipelines.streaming.runner import streaming_tables
from feature_pipelines.timeutil import floor_to, utc_now
from feature_pipelines.training.spec import FLIGHT_DELAY_TRAINING_SET
from feature_pipelines_tests.conftest import SMALL_START, backfill_to_last_hour, write_small_landing
from feature_pipelines_tests.serving.conftest import TestClient

PREFIX = "fp:local"
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
KEY_COLUMNS = key_columns_of(list(FEATURE_VIEWS.values()))
LANDED = timedelta(days=21)


@dataclass
class Monitored:
    settings: Settings
    defs: Definitions
    instance: DagsterInstance
    store: DeltaStore
    now: datetime
    today: datetime
    tmp: Path
    redis_url: str
    upcoming: pl.DataFrame

    @property
    def yesterday(self) -> datetime:
        return self.today - DAY


def key(day: datetime) -> str:
    return day.strftime("%Y-%m-%d")


def feed_stream(url: str, prefix: str, settings: Settings, until: datetime) -> None:
    """The streaming views' landed events up to `until` pushed and consumed into the stream's tiles."""
    client = redis.Redis.from_url(url)
    keys = stream_keys(prefix)
    for table in streaming_tables(FEATURE_VIEWS):
        push_replayed(client, keys, LandingZone(settings.landing_root), settings.replay, table, until=until,
                      horizon=stream_horizon(list(FEATURE_VIEWS.values())))
        consumer = StreamConsumer(client, list(FEATURE_VIEWS.values()), table=table, keys=keys, block_ms=10)
        while consumer.run_once().entries:
            pass
    client.close()


def serve(url: str, prefix: str, store: DeltaStore, entities: pl.DataFrame, features: Sequence[str], now: Callable[[], datetime]) -> None:
    """Requests of 50 entity rows through the real feature server, its request log writing to `store`."""
    log = RequestLog(store, key_columns=KEY_COLUMNS, flush_interval_s=60)
    app = create_app(
        redis_client_factory=lambda: redis.Redis.from_url(url, socket_timeout=2),
        prefix=prefix, views=FEATURE_VIEWS, on_demand=ON_DEMAND_FEATURES, request_log=log, now=now,
    )
    with TestClient(app) as client:
        for start in range(0, entities.height, 50):
            batch = entities.slice(start, 50)
            response = client.post("/get-online-features", json={"features": list(features), "entities": batch.to_dict(as_series=False)})
            assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory, online_store_url: str) -> Monitored:
    now = utc_now()
    # Three weeks of 2013 landed, shifted so that they start 10-17 days ago: a week of history
    # and at least four days after now.
    offset = timedelta(weeks=(now - timedelta(days=10) - DATA_START) // timedelta(weeks=1))
    tmp = tmp_path_factory.mktemp("monitoring")
    flights = nycflights.flights().filter(pl.col("dep_known_at").is_between(SMALL_START, SMALL_START + LANDED, closed="left"))
    weather = nycflights.weather().filter(pl.col("observed_at").is_between(SMALL_START, SMALL_START + LANDED, closed="left"))
    write_small_landing(tmp / "landing", flights=flights, weather=weather)
    settings = Settings("local", str(tmp / "lake"), str(tmp / "landing"), ReplayClock(offset), reports_root=str(tmp / "reports"))
    defs = build_definitions(settings)
    instance = DagsterInstance.ephemeral()
    client = redis.Redis.from_url(online_store_url)
    for stale in client.scan_iter(match=f"{PREFIX}:*"):
        client.delete(stale)
    # Six whole days: daily snapshots from five days ago, training sets over four of them.
    now, _ = backfill_to_last_hour(defs, settings, lambda at: floor_to(at, DAY) - 6 * DAY, instance)
    store = DeltaStore(settings.lake_root)
    # The stream holds what the raw tables hold: events known before the last raw hour's end.
    feed_stream(online_store_url, PREFIX, settings, floor_to(now, HOUR))
    upcoming = upcoming_departures(pl.scan_parquet(tmp / "landing" / "flights" / "*.parquet"), settings.replay.to_source(now), 24)
    assert upcoming.height > 500
    serve(online_store_url, PREFIX, store, upcoming, FLIGHT_DELAY_TRAINING_SET.features, utc_now)
    return Monitored(settings, defs, instance, store, now, floor_to(now, DAY), tmp, online_store_url, upcoming)


def clone(monitored: Monitored, name: str, *, keep_log: bool = True, landing_root: Path | None = None) -> tuple[Settings, Definitions, DeltaStore]:
    """A copy of the monitored lake (optionally without the served log) with its own definitions."""
    root = monitored.tmp / name
    shutil.copytree(monitored.settings.lake_root, root / "lake")
    if not keep_log:
        shutil.rmtree(root / "lake" / FEATURE_LOG_TABLE)
    base = monitored.settings
    settings = Settings("local", str(root / "lake"), str(landing_root or base.landing_root), base.replay, reports_root=str(root / "reports"))
    return settings, build_definitions(settings), DeltaStore(settings.lake_root)


def run_monitoring(defs: Definitions, day: datetime, *assets: str) -> dict[str, Any]:
    """Materialize monitoring assets for one day in a real run; their check evaluations by name."""
    result = defs.resolve_job_def(MONITORING_JOB).execute_in_process(
        partition_key=key(day), instance=DagsterInstance.ephemeral(), asset_selection=[AssetKey(a) for a in assets], raise_on_error=False,
    )
    return {check.check_name: check for check in result.get_asset_check_evaluations()}


def failing_features(check: Any) -> list[str]:
    return list(check.metadata["failing_features"].value)


def causes(check: Any) -> dict[str, str | None]:
    """The candidate fault the check names for each feature with mismatches (None: none explains them)."""
    return {ref: cause["cause"] for ref, cause in check.metadata["root_causes"].value.items()}


def failed_drift(check: Any) -> list[str]:
    """Features whose drift reached its fail threshold (warnings left out)."""
    return [figure["feature"] for figure in check.metadata["figures"].value if figure["severity"] == "fail"]


# -- the clean pipeline -------------------------------------------------------------------------


def test_clean_serving_day_raises_no_alarm(monitored: Monitored) -> None:
    checks = run_monitoring(monitored.defs, monitored.today, SKEW_ASSET, SERVING_DRIFT_ASSET)
    skew = checks[SKEW_CHECK]
    assert skew.passed, skew.description
    assert skew.metadata["log_rows"].value == monitored.upcoming.height * len(FLIGHT_DELAY_TRAINING_SET.features)
    # The weather is warn-only by declaration (features/drift_thresholds.py): this burst of
    # requests at one instant sees the three airports' current weather only, which may warn.
    drift = checks[FEATURE_DRIFT_CHECK]
    warn_only = {name for name, t in DRIFT_THRESHOLDS.items() if t.ks_fail > 1}
    assert drift.passed or (drift.severity.value == "WARN" and set(drift.metadata["drifting_features"].value) <= warn_only), drift.description
    joint = checks[MULTIVARIATE_CHECK]
    assert joint.passed, joint.description
    report = Path(monitored.settings.reports_dir) / SKEW_ASSET / f"{key(monitored.today)}.md"
    assert report.exists() and (report.parent / f"{key(monitored.today)}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_clean_feature_tables_do_not_drift_and_the_candidate_is_reported(monitored: Monitored) -> None:
    checks = run_monitoring(monitored.defs, monitored.yesterday, PARTITION_DRIFT_ASSET, SHADOW_ASSET)
    for view in ("route_delay_stats", "aircraft_utilisation"):
        assert checks[partition_drift_check(view)].passed, checks[partition_drift_check(view)].description
    shadow = checks[shadow_check("route_delay_stats")]
    # The candidate propagates nulls: it must differ on the 24h mean, and on nothing else.
    assert not shadow.passed and shadow.severity.value == "WARN"
    changed = {f["feature"] for f in shadow.metadata["features"].value if f["discrepancies"]}
    assert changed == {"route_dep_delay_mean_24h"}


# -- injected skew ------------------------------------------------------------------------------


def test_a_24h_window_ending_at_midnight_instead_of_the_request_is_caught(monitored: Monitored) -> None:
    _, defs, store = clone(monitored, "midnight", keep_log=False)
    scenarios.append_requests(store, scenarios.midnight_window(store, monitored.yesterday), KEY_COLUMNS)
    skew = run_monitoring(defs, monitored.yesterday, SKEW_ASSET)[SKEW_CHECK]
    assert not skew.passed and failing_features(skew) == ["carrier_delay_stats:carrier_dep_delay_mean_24h"]
    assert "carrier_dep_delay_mean_24h" in skew.description and skew.metadata["examples"].value
    assert causes(skew)["carrier_delay_stats:carrier_dep_delay_mean_24h"] == "window ends at midnight (UTC)"
    assert "100% of mismatches" in skew.description and "*window ends at midnight (UTC)*" in skew.description


def test_zero_imputation_instead_of_the_null_policy_is_caught(monitored: Monitored) -> None:
    _, defs, store = clone(monitored, "imputed")
    log = store.read(FEATURE_LOG_TABLE)
    had_nulls = sorted(set(log.filter(pl.col("value_float").is_null())
                           .select(pl.format("{}:{}", "view", "feature")).to_series().to_list()))
    assert had_nulls, "the clean day served no null; this scenario needs one"
    scenarios.rewrite_log(store, scenarios.zero_imputation, monitored.today, monitored.today + DAY)
    skew = run_monitoring(defs, monitored.today, SKEW_ASSET)[SKEW_CHECK]
    assert not skew.passed and failing_features(skew) == had_nulls
    assert all(example["reason"] == "null" and example["served"] == 0.0
               for examples in skew.metadata["examples"].value.values() for example in examples)
    assert {ref: causes(skew)[ref] for ref in had_nulls} == dict.fromkeys(had_nulls, "nulls imputed as 0")
    assert skew.metadata["three_way"].value[had_nulls[0]]["serving_bug"] > 0


def test_a_local_time_day_boundary_instead_of_utc_is_caught(monitored: Monitored) -> None:
    _, defs, store = clone(monitored, "local_day", keep_log=False)
    scenarios.append_requests(store, scenarios.local_day_boundary(store, monitored.yesterday), KEY_COLUMNS)
    skew = run_monitoring(defs, monitored.yesterday, SKEW_ASSET)[SKEW_CHECK]
    assert not skew.passed and failing_features(skew) == ["route_delay_stats:route_dep_delay_mean_24h"]
    assert causes(skew)["route_delay_stats:route_dep_delay_mean_24h"] == "window ends at local midnight (America/New_York)"


def test_an_online_store_left_stale_for_six_hours_is_caught(monitored: Monitored) -> None:
    _, defs, store = clone(monitored, "stale", keep_log=False)
    stale_prefix = "fp:stale"
    cutoff = floor_to(monitored.now, HOUR) - 6 * HOUR  # the last publish that ran
    scenarios.publish_stale(redis.Redis.from_url(monitored.redis_url), stale_prefix, store, FEATURE_VIEWS, cutoff)
    feed_stream(monitored.redis_url, stale_prefix, monitored.settings, floor_to(monitored.now, HOUR))  # the stream runs on
    serve(monitored.redis_url, stale_prefix, store, monitored.upcoming, FLIGHT_DELAY_TRAINING_SET.features, utc_now)
    skew = run_monitoring(defs, monitored.today, SKEW_ASSET)[SKEW_CHECK]
    hourly = {f"{v.name}:{f}" for v in FEATURE_VIEWS.values() if v.ttl < 6 * HOUR for f in v.feature_names}
    expired = {ref for ref in FLIGHT_DELAY_TRAINING_SET.features if ref in hourly}
    # Every feature of an hourly view is caught (its 6h-old values are past their 3h TTL, so the
    # store serves nothing where training has values); a daily view is caught too when its
    # last publish predates today's snapshot and misses entities.
    assert not skew.passed and expired <= set(failing_features(skew))
    assert all(example["reason"] in ("null", "stale") for examples in skew.metadata["examples"].value.values() for example in examples)
    named = causes(skew)
    assert all((named[ref] or "").startswith("publish lag of") for ref in expired), named


# -- injected drift -----------------------------------------------------------------------------


def test_an_upstream_switch_to_nautical_miles_is_caught_as_partition_drift(monitored: Monitored, tmp_path: Path) -> None:
    day_source = (monitored.settings.replay.to_source(monitored.yesterday), monitored.settings.replay.to_source(monitored.today))
    flights = pl.read_parquet(Path(monitored.settings.landing_root) / "flights" / "*.parquet")
    shifted = flights.with_columns(
        pl.when(pl.col("dep_known_at").is_between(*day_source, closed="left"))
        .then((pl.col("distance") * 0.869).round().cast(pl.Int64)).otherwise(pl.col("distance")).alias("distance")
    )
    weather = pl.read_parquet(Path(monitored.settings.landing_root) / "weather" / "*.parquet")
    write_small_landing(tmp_path / "landing", flights=shifted, weather=weather)
    _, defs, _ = clone(monitored, "nautical", keep_log=False, landing_root=tmp_path / "landing")
    instance = monitored.instance  # it knows which raw partitions the cloned lake holds
    hours = (monitored.yesterday.strftime("%Y-%m-%d-%H:%M"), (monitored.today - HOUR).strftime("%Y-%m-%d-%H:%M"))
    assert materialize_range(defs, RAW_HOURLY_JOB, *hours, instance=instance).result.success
    # Daily partition D holds the snapshot at the end of D, computed from D's events.
    assert materialize_range(defs, DAILY_SNAPSHOT_JOB, key(monitored.yesterday), key(monitored.yesterday), instance=instance).result.success
    checks = run_monitoring(defs, monitored.yesterday, PARTITION_DRIFT_ASSET)
    aircraft = checks[partition_drift_check("aircraft_utilisation")]
    # A 13% rescale of every distance: PSI ~0.17 and KS ~0.13 against 2013's day-to-day maxima of
    # 0.049 and 0.092 -- past the warn thresholds, short of the fail ones (0.25 / 0.2).
    assert not aircraft.passed and aircraft.severity.value in ("WARN", "ERROR")
    assert aircraft.metadata["drifting_features"].value == ["aircraft_distance_sum_24h"]
    assert checks[partition_drift_check("route_delay_stats")].passed


def test_delays_served_in_seconds_are_caught_as_serving_drift(monitored: Monitored) -> None:
    _, defs, store = clone(monitored, "seconds")
    scenarios.rewrite_log(store, scenarios.delays_in_seconds, monitored.today, monitored.today + DAY)
    checks = run_monitoring(defs, monitored.today, SKEW_ASSET, SERVING_DRIFT_ASSET)
    drift = checks[FEATURE_DRIFT_CHECK]
    assert not drift.passed and drift.severity.value == "ERROR" and failed_drift(drift) == ["route_dep_delay_mean_24h"]
    assert failing_features(checks[SKEW_CHECK]) == ["route_delay_stats:route_dep_delay_mean_24h"]
    assert causes(checks[SKEW_CHECK])["route_delay_stats:route_dep_delay_mean_24h"] == "units x60"


def test_values_rounded_by_the_service_are_caught_and_named(monitored: Monitored) -> None:
    _, defs, store = clone(monitored, "rounded")
    scenarios.rewrite_log(store, scenarios.rounded_values, monitored.today, monitored.today + DAY)
    skew = run_monitoring(defs, monitored.today, SKEW_ASSET)[SKEW_CHECK]
    assert failing_features(skew) == ["carrier_delay_stats:carrier_dep_delay_mean_24h"]
    assert causes(skew) == {"carrier_delay_stats:carrier_dep_delay_mean_24h": "rounded to 1 decimal"}


def test_the_demo_verbs_score_traffic_inject_a_fault_and_monitor(
    monitored: Monitored, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings, _, store = clone(monitored, "demo_verbs", keep_log=False)
    monkeypatch.setenv("FEATURE_PIPELINES_LAKE_ROOT", settings.lake_root)
    monkeypatch.setenv("FEATURE_PIPELINES_LANDING_ROOT", settings.landing_root)
    monkeypatch.setenv("FEATURE_PIPELINES_REPORTS_ROOT", str(tmp_path / "reports"))
    monkeypatch.setenv("FEATURE_PIPELINES_REPLAY_START", settings.data_start.date().isoformat())
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    (tmp_path / "dagster_home").mkdir()
    # `traffic` feeds the stream first and waits for its consumer: one runs beside it, as `stream --background` would.
    stop = threading.Event()
    client = redis.Redis.from_url(monitored.redis_url)
    consumers = [StreamConsumer(client, list(FEATURE_VIEWS.values()), table=table, keys=stream_keys(PREFIX), block_ms=50)
                 for table in streaming_tables(FEATURE_VIEWS)]

    def consume() -> None:
        while not stop.is_set():
            for consumer in consumers:
                consumer.run_once()

    runner = threading.Thread(target=consume)
    runner.start()
    try:
        assert main(["traffic", "--hours", "24"]) == 0
    finally:
        stop.set()
        runner.join()
        client.close()
    assert store.read(FEATURE_LOG_TABLE).height == monitored.upcoming.height * len(FLIGHT_DELAY_TRAINING_SET.features)
    capsys.readouterr()
    assert main(["sql", "select count(*) as served, count(distinct request_id) as requests from serving_feature_log"]) == 0
    printed = capsys.readouterr().out
    assert str(monitored.upcoming.height * len(FLIGHT_DELAY_TRAINING_SET.features)) in printed
    assert main(["sql", "select count(*) as n from raw_flights join carrier_delay_stats using (carrier)"]) == 0
    assert main(["monitor"]) == 0
    assert main(["inject-skew", "zero-imputation"]) == 0
    assert main(["monitor"]) == 1
    assert (tmp_path / "reports" / SKEW_ASSET / f"{key(monitored.today)}.md").exists()
