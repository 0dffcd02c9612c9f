"""A real `dagster dev` (webserver, daemon, code server) over a small real lake, shared by the UI tests.

One instance for the package: its own DAGSTER_HOME (SQLite storage, the queued run coordinator and
the backfill daemon, as `dagster dev` runs them by default), the project's workspace.yaml, the real
first days of 2013 with one busy flights hour emptied (2013-01-08 15:00: that hour fails its volume
check and the view's day that reads it is held back, the red partition the browser sees), and free
loopback ports. The raw hours are landed from this process, against the same instance, while the
server starts: the tests are about the feature view's backfill, and one in-process run per job is the
quickest way to what it reads (the instance takes writers from several processes, as under
`dagster dev`, where every run is one). The week's backfill itself goes through the webserver's
GraphQL, as the UI's dialog sends it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
from dagster import DagsterInstance

from feature_pipelines.definitions import build_definitions
from feature_pipelines.orchestration.runs import materialize_range
from feature_pipelines.orchestration.schedules import DAILY_SNAPSHOT_JOB, DIMENSIONS_JOB, RAW_HOURLY_JOB
from feature_pipelines.settings import REPO_ROOT, ReplayClock, Settings
from feature_pipelines.sources import nycflights
from feature_pipelines_tests.conftest import SMALL_END, SMALL_START, write_small_landing

VIEW = "route_delay_stats"
WEEK = [f"2013-01-{day:02d}" for day in range(1, 8)]
# The emptied hour: the day after the week (day D's one snapshot, at D+1 00:00, reads only events
# before it), so the week is clean and the view's next day, which reads it, is held back.
BAD_HOUR = datetime(2013, 1, 8, 15, tzinfo=timezone.utc)
BAD_HOUR_KEY = "2013-01-08-15:00"
HELD_BACK_DAY = "2013-01-08"
RAW_HOURS = ("2013-01-01-00:00", "2013-01-08-23:00")
STARTUP_TIMEOUT = 180.0  # s, the server and its code location on 2 shared cores
BACKFILL_TIMEOUT = 300.0  # s, for the daemon to finish the week's backfill

# The mutation and variables are the UI's own: LaunchAssetChoosePartitionsDialog sends this
# document for assets outside a named job (the hidden __ASSET_JOB), with no partition-set selector.
LAUNCH_PARTITION_BACKFILL = """
mutation LaunchPartitionBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId launchedRunIds }
    ... on PartitionSetNotFoundError { message }
    ... on PartitionKeysNotFoundError { message }
    ... on UnauthorizedError { message }
    ... on PythonError { message stack }
  }
}
"""

BACKFILL_STATUS = """
query BackfillStatus($backfillId: String!) {
  partitionBackfillOrError(backfillId: $backfillId) {
    __typename
    ... on PartitionBackfill {
      id
      status
      numPartitions
      partitionNames
      error { message }
      runs { runId status tags { key value } }
    }
    ... on PythonError { message }
  }
}
"""

DAEMON_HEALTH = """
query { instance { daemonHealth { allDaemonStatuses { daemonType healthy required } } } }
"""

LOCATION_LOADED = """
query { workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message } } } } } }
"""


@dataclass(frozen=True)
class DagsterDev:
    """A running `dagster dev`: where it listens and what it runs over."""

    url: str
    home: Path
    settings: Settings
    log: Path

    def graphql(self, query: str, variables: dict[str, Any] | None = None, *, timeout: float = 60.0) -> dict[str, Any]:
        """POST one GraphQL document, as the UI does; a transport or GraphQL error fails the test."""
        response = httpx.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=timeout
        )
        response.raise_for_status()
        body = response.json()
        assert not body.get("errors"), body["errors"]
        return body["data"]

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@dataclass(frozen=True)
class WeekBackfill:
    """The week's backfill of VIEW as launched through GraphQL, and its final state."""

    backfill_id: str
    status: str
    partition_names: list[str]
    runs: list[dict[str, Any]]
    seconds: float


def free_port() -> int:
    """A port the kernel picks at random among the free ones on loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _write_instance_yaml(home: Path) -> None:
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(
        f"""\
telemetry:
  enabled: false
# The demo's event log storage (deploy/dagster.local.yaml): the webserver and daemon read what it writes.
event_log_storage:
  module: feature_pipelines.orchestration.event_log_storage
  class: BatchedSqliteEventLogStorage
  config:
    base_dir: {home}/history/runs
# Runs launched from the UI (and a backfill's runs) queue here, as under `dagster dev` by default.
run_coordinator:
  module: dagster._core.run_coordinator.queued_run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 2
backfills:
  use_threads: true
# Nothing here reads freshness; its evaluation every 30 s would only take CPU from the runs.
freshness:
  enabled: false
"""
    )


def _land(settings: Settings, home: Path) -> None:
    """Dimensions, the raw hours of 2013-01-01..08 (the emptied one fails), and the view's day that
    reads the emptied hour (held back), each one run against the server's instance."""
    defs = build_definitions(settings)
    with DagsterInstance.from_config(str(home)) as instance:
        materialize_range(defs, DIMENSIONS_JOB, "", "", instance=instance, log_level="WARNING")
        raw = materialize_range(
            defs, RAW_HOURLY_JOB, *RAW_HOURS, instance=instance, raise_on_error=False, log_level="WARNING"
        )
        assert not raw.result.success, "the emptied hour should have failed its volume check"
        view = materialize_range(
            defs,
            DAILY_SNAPSHOT_JOB,
            HELD_BACK_DAY,
            HELD_BACK_DAY,
            instance=instance,
            raise_on_error=False,
            assets=[VIEW],
            log_level="WARNING",
        )
        assert not view.result.success, f"{HELD_BACK_DAY} reads {BAD_HOUR_KEY} and should have been held back"


def _wait_until_ready(server: subprocess.Popen[bytes], dev: DagsterDev) -> None:
    """Until the code location is loaded and the backfill daemon reports healthy."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    last = "nothing yet"
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"dagster dev exited with {server.returncode}:\n{dev.log_tail()}")
        try:
            entries = dev.graphql(LOCATION_LOADED, timeout=10)["workspaceOrError"]["locationEntries"]
            loaded = [e for e in entries if e["loadStatus"] == "LOADED"]
            errors = [
                e["locationOrLoadError"] for e in loaded if e["locationOrLoadError"]["__typename"] == "PythonError"
            ]
            if errors:
                raise RuntimeError(f"the code location failed to load: {errors[0]['message']}")
            statuses = dev.graphql(DAEMON_HEALTH, timeout=10)["instance"]["daemonHealth"]["allDaemonStatuses"]
            backfill_daemon = [s for s in statuses if s["daemonType"] == "BACKFILL"]
            if loaded and backfill_daemon and backfill_daemon[0]["healthy"]:
                return
            last = f"locations {entries}, daemons {statuses}"
        except (httpx.HTTPError, AssertionError) as error:
            last = repr(error)
        time.sleep(1.0)
    raise TimeoutError(f"dagster dev not ready after {STARTUP_TIMEOUT:.0f} s ({last}):\n{dev.log_tail()}")


def _stop(server: subprocess.Popen[bytes]) -> None:
    """The whole process group (webserver, daemon, code server, run workers): TERM, then KILL."""
    for sig, grace in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            return
        try:
            server.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; children may still be closing: make sure none outlives the test.
        try:
            os.killpg(server.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return


@pytest.fixture(scope="package")
def dagster_dev(tmp_path_factory: pytest.TempPathFactory, online_store_url: str) -> Iterator[DagsterDev]:
    root = tmp_path_factory.mktemp("dagster_dev")
    flights = nycflights.flights().filter(pl.col("dep_known_at").is_between(SMALL_START, SMALL_END, closed="left"))
    emptied = flights.filter(pl.col("dep_known_at").dt.truncate("1h") != BAD_HOUR)
    landing = write_small_landing(root / "landing", flights=emptied)
    settings = Settings(
        environment="local",
        lake_root=str(root / "lake"),
        landing_root=str(landing.root),
        replay=ReplayClock(timedelta(0)),
    )
    home = root / "dagster_home"
    _write_instance_yaml(home)
    with DagsterInstance.from_config(str(home)) as instance:
        # Create the SQLite databases (and stamp their schema) before two processes would race to.
        instance.get_runs_count()
        instance.all_instigator_state()
        instance.get_asset_keys()
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DAGSTER_", "FEATURE_PIPELINES_"))}
    env.update(
        DAGSTER_HOME=str(home),
        FEATURE_PIPELINES_ENV="local",
        FEATURE_PIPELINES_LAKE_ROOT=settings.lake_root,
        FEATURE_PIPELINES_LANDING_ROOT=settings.landing_root,
        FEATURE_PIPELINES_REDIS_URL=online_store_url,  # the session's own redis-server; nothing here publishes
    )
    log = root / "dagster_dev.log"
    dev = DagsterDev(url=f"http://127.0.0.1:{port}", home=home, settings=settings, log=log)
    with log.open("wb") as sink:
        server = subprocess.Popen(
            [str(REPO_ROOT / ".venv" / "bin" / "dagster"), "dev", "-w", str(REPO_ROOT / "workspace.yaml"),
             "-h", "127.0.0.1", "-p", str(port), "--log-level", "warning"],
            cwd=REPO_ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            # The server starts while the raw hours land: both take a while, and the one instance
            # takes writers from several processes (as under `dagster dev`, where every run is one).
            _land(settings, home)
            _wait_until_ready(server, dev)
            yield dev
        finally:
            _stop(server)


@pytest.fixture(scope="package")
def week_backfill(dagster_dev: DagsterDev) -> WeekBackfill:
    """The week of VIEW launched as the UI's backfill dialog launches it, waited for until the daemon
    reports it finished (or BACKFILL_TIMEOUT)."""
    began = time.monotonic()
    params = {
        "tags": [],
        "assetSelection": [{"path": [VIEW]}],
        "partitionNames": WEEK,
        "fromFailure": False,
    }
    launched = dagster_dev.graphql(LAUNCH_PARTITION_BACKFILL, {"backfillParams": params})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]
    deadline = time.monotonic() + BACKFILL_TIMEOUT
    while True:
        state = dagster_dev.graphql(BACKFILL_STATUS, {"backfillId": backfill_id})["partitionBackfillOrError"]
        assert state["__typename"] == "PartitionBackfill", state
        if state["status"] not in ("REQUESTED", "CANCELING", "FAILING"):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"backfill {backfill_id} still {state['status']} after {BACKFILL_TIMEOUT:.0f} s: "
                f"{state}\n{dagster_dev.log_tail()}"
            )
        time.sleep(2.0)
    return WeekBackfill(
        backfill_id=backfill_id,
        status=state["status"],
        partition_names=state["partitionNames"] or [],
        runs=state["runs"],
        seconds=time.monotonic() - began,
    )
