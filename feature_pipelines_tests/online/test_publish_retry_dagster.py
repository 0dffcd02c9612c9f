"""Redis stops in the middle of a publish inside a real Dagster run.

The daily job materialises `aircraft_utilisation` and its publish asset for one day, in replay
mode (the data lies in the present, so values are within their TTL), against a redis-server
owned by the test. The publish is shrunk to many small script calls and, at a fixed call, the
server is SIGKILLed (a crash: nothing flushed beyond the append-only file) while the publish has
calls in flight.

* Redis returns a few seconds later: the publish asset's own retry policy (exponential backoff)
  re-runs the step, the run succeeds, every entity's hash equals the newest offline snapshot
  field by field, no entity is stale or torn (also not in what the crash left behind), and the
  parity check passes.
* Redis never returns: the run fails after exactly the policy's retries, with an error naming
  the view and the redacted URL, and the password appears in no event of the run.

The cut is made deterministic by gating the client's packing of one script call: the test
thread waits there until the server is dead, then sends into the dead socket.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone

import polars as pl
import pytest
import redis
from dagster import DagsterEvent, DagsterEventType, Definitions, ExecuteInProcessResult, RetryPolicy, serialize_value

from feature_pipelines.definitions import build_definitions
from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.online import publish as publish_module
from feature_pipelines.online.encoding import FORMAT_VERSION_BYTES, encode_column
from feature_pipelines.online.keys import hash_keys
from feature_pipelines.online.local_server import LocalRedisServer
from feature_pipelines.online.publish import latest_per_entity
from feature_pipelines.orchestration import publish_assets
from feature_pipelines.orchestration.runs import RangeRun, materialize_range
from feature_pipelines.orchestration.schedules import DAILY_SNAPSHOT_JOB
from feature_pipelines_tests.conftest import step_failure_text
from feature_pipelines_tests.online.conftest import ReplayLake

VIEW = FEATURE_VIEWS["aircraft_utilisation"]
PUBLISH_STEP = "aircraft_utilisation_online"
PREFIX = "fp:local"
URL_VAR = "FEATURE_PIPELINES_REDIS_URL"
BATCH = 20  # entities per script call: a day's ~600 aircraft take ~30 calls
CUT_AT_CALL = 10  # the server dies while this call is being sent (earlier ones partly in flight)
OUTAGE_S = 2.5


@dataclass
class Cut:
    """The gate and the timeline of one fault."""

    reached: threading.Event = field(default_factory=threading.Event)
    server_down: threading.Event = field(default_factory=threading.Event)
    calls: int = 0
    times: dict[str, float] = field(default_factory=dict)


def gate_publish_calls(monkeypatch: pytest.MonkeyPatch, cut: Cut) -> None:
    """Small calls, two in flight; the CUT_AT_CALL-th packing waits until the server is dead."""
    monkeypatch.setattr(publish_module, "DEFAULT_BATCH_SIZE", BATCH)
    monkeypatch.setattr(publish_module, "DEFAULT_BATCHES_PER_PIPELINE", 2)
    real_pack = publish_module._pack_evalsha

    def pack(connection, keys, args):  # type: ignore[no-untyped-def]
        cut.calls += 1
        if cut.calls == CUT_AT_CALL:
            cut.reached.set()
            assert cut.server_down.wait(timeout=10), "the fault thread never stopped the server"
        return real_pack(connection, keys, args)

    monkeypatch.setattr(publish_module, "_pack_evalsha", pack)


class FaultThread(threading.Thread):
    """Kills the server when the publish reaches the cut, restarts it after OUTAGE_S (unless
    `comes_back` is off) and dumps what the crash left, then holds on until released.

    It stops the server itself on release: Linux ties the server's parent-death signal to the
    thread that started it, so the thread that restarts the server must outlive its use.
    """

    def __init__(self, server: LocalRedisServer, cut: Cut, *, comes_back: bool) -> None:
        super().__init__(daemon=True)
        self.server, self.cut, self.comes_back = server, cut, comes_back
        self.released = threading.Event()
        self.after_crash: dict[bytes, dict[bytes, bytes]] = {}
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            if not self.cut.reached.wait(timeout=60):
                raise AssertionError("the publish never reached the cut")
            self.server.kill()
            self.cut.times["killed"] = time.time()
            self.cut.server_down.set()
            if self.comes_back:
                time.sleep(OUTAGE_S)
                self.server.start()
                self.cut.times["restarted"] = time.time()
                self.after_crash = dump_view(self.server.client(socket_timeout=10))
        except BaseException as error:  # noqa: BLE001 - re-raised in the test thread
            self.error = error
            self.cut.server_down.set()
        finally:
            self.released.wait(timeout=120)
            self.server.stop()


@contextmanager
def fault_running(server: LocalRedisServer, cut: Cut, *, comes_back: bool) -> Iterator[FaultThread]:
    """The fault thread for the block; on exit it stops the server and any error it hit is raised."""
    fault = FaultThread(server, cut, comes_back=comes_back)
    fault.start()
    try:
        yield fault
    finally:
        fault.released.set()
        fault.join(timeout=30)
    assert not fault.is_alive(), "the fault thread did not finish"
    assert fault.error is None, fault.error


def dump_view(client: redis.Redis) -> dict[bytes, dict[bytes, bytes]]:
    """Every hash of the view, whole."""
    keys = sorted(client.scan_iter(match=f"{PREFIX}:{VIEW.name}:*", count=1000))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hgetall(key)
    dumped = dict(zip(keys, pipe.execute()))
    client.close()
    return dumped


def expected_hashes(frame: pl.DataFrame) -> dict[bytes, dict[bytes, bytes]]:
    """The exact hash of each entity row, from the offline rows and the publish's own encoder."""
    schema = VIEW.schema()
    keys = hash_keys(frame, prefix=PREFIX, view=VIEW.name, entity_keys=list(VIEW.entity_keys))
    columns = {name.encode(): encode_column(frame[name], dtype) for name, dtype in schema.items()}
    stamps = frame["event_timestamp"].dt.epoch("us").cast(pl.String).to_list()
    return {
        key: {b"__ts": stamps[i].encode(), b"__v": FORMAT_VERSION_BYTES, **{n: c[i] for n, c in columns.items()}}
        for i, key in enumerate(keys)
    }


def snapshots_of(lake: ReplayLake, day: str) -> pl.DataFrame:
    """The offline rows of one daily partition's snapshot (latest per entity)."""
    frame = lake.view_frame(VIEW.name)
    day_start = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=timezone.utc)
    # A daily snapshot at the end of day D is stamped at D + 1 day 00:00 (closed="right").
    in_day = frame.filter(
        (pl.col("event_timestamp") > day_start) & (pl.col("event_timestamp") <= day_start + pl.duration(days=1))
    )
    return latest_per_entity(VIEW, in_day)


def run_day(lake: ReplayLake, day: str, defs: Definitions | None = None) -> RangeRun:
    """The daily job for one day, narrowed to the view and its publish asset."""
    return materialize_range(
        defs or lake.defs, DAILY_SNAPSHOT_JOB, day, day, instance=lake.instance, raise_on_error=False,
        assets=[VIEW.name, PUBLISH_STEP],
    )


def step_events(result: ExecuteInProcessResult, event_type: DagsterEventType) -> list[DagsterEvent]:
    return [e for e in result.all_events if e.event_type == event_type and e.step_key == PUBLISH_STEP]


def retry_timeline(lake: ReplayLake, result: ExecuteInProcessResult, cut: Cut) -> str:
    """When each fault and retry event happened, in seconds after the kill (for the report)."""
    killed = cut.times["killed"]
    wanted = {DagsterEventType.STEP_UP_FOR_RETRY, DagsterEventType.STEP_RESTARTED,
              DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE}
    moments = [(at - killed, name) for name, at in cut.times.items() if name != "killed"]
    for record in lake.instance.all_logs(result.run_id):
        event = record.dagster_event
        if event is not None and event.event_type in wanted and record.step_key == PUBLISH_STEP:
            moments.append((record.timestamp - killed, event.event_type.value))
    return "; ".join(f"{name} +{seconds:.2f}s" for seconds, name in sorted(moments))


@pytest.fixture
def own_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., LocalRedisServer]]:
    """A redis-server of the test's own; the run finds it through FEATURE_PIPELINES_REDIS_URL."""
    started: list[LocalRedisServer] = []

    def start(*, url: Callable[[LocalRedisServer], str] = lambda s: s.url, **kwargs: object) -> LocalRedisServer:
        server = LocalRedisServer(**kwargs).start()  # type: ignore[arg-type]
        started.append(server)
        monkeypatch.setenv(URL_VAR, url(server))
        return server

    yield start
    for server in started:
        if server.is_running:
            server.stop()


def test_redis_restarting_mid_publish_is_retried_to_a_complete_untorn_state(
    replay_lake: ReplayLake, own_server: Callable[..., LocalRedisServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    older_day, day = replay_lake.days
    server = own_server(appendonly=True)
    first = run_day(replay_lake, older_day)  # the previous day, published normally
    assert first.result.success, step_failure_text(first.result)
    before = dump_view(server.client())
    older = snapshots_of(replay_lake, older_day)
    assert before == expected_hashes(older) and len(before) > 500

    cut = Cut()
    gate_publish_calls(monkeypatch, cut)
    port = server.port
    with fault_running(server, cut, comes_back=True) as fault:
        result = run_day(replay_lake, day).result
        assert fault.error is None, fault.error
        print(f"\nretry timeline (call {CUT_AT_CALL} cut, outage {OUTAGE_S}s): {retry_timeline(replay_lake, result, cut)}")
        assert result.success, step_failure_text(result)
        final = dump_view(server.client())

    # Retried by the asset's policy, and the first failure said what and where.
    retries = step_events(result, DagsterEventType.STEP_UP_FOR_RETRY)
    assert len(retries) >= 1 and len(step_events(result, DagsterEventType.STEP_RESTARTED)) == len(retries)
    first_error = retries[0].event_specific_data.error.to_string()
    assert "feature view 'aircraft_utilisation': publishing" in first_error
    assert f"against redis://127.0.0.1:{port}/0 failed" in first_error
    assert "entities were acknowledged before that" in first_error

    # What the crash left: each entity all old, all new, or (new entities) absent; never torn.
    newer = snapshots_of(replay_lake, day)
    old_hashes, new_hashes = expected_hashes(older), expected_hashes(newer)
    n_old = n_new = 0
    for key in old_hashes.keys() | new_hashes.keys():
        stored = fault.after_crash.get(key, {})
        if stored and stored == new_hashes.get(key):
            n_new += 1
        elif stored == old_hashes.get(key, {}):
            n_old += 1
        else:
            raise AssertionError(f"{key!r} torn after the crash: {stored!r}")
    print(f"after the crash: {n_new} entities fully new, {n_old} fully old or absent, 0 torn")
    assert n_new >= (CUT_AT_CALL - 3) * BATCH and n_old > 0, (n_old, n_new)  # really cut half-way

    # After the retried run: exactly the newest snapshot per entity, every field, nothing else.
    expected = expected_hashes(latest_per_entity(VIEW, pl.concat([older, newer])))
    assert final == expected
    published = result.get_asset_materialization_events()[-1].materialization.metadata
    assert published["entities_written"].value == newer.height

    [parity] = [c for c in result.get_asset_check_evaluations() if c.check_name == publish_assets.PARITY_CHECK]
    assert parity.passed and parity.metadata["entities_compared"].value == newer.height


def test_redis_never_returning_fails_the_run_after_its_retries_naming_view_and_redacted_url(
    replay_lake: ReplayLake, own_server: Callable[..., LocalRedisServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "n3ver-Returns pw"
    server = own_server(password=secret, url=lambda s: f"redis://:{secret.replace(' ', '%20')}@127.0.0.1:{s.port}/0")
    real_policy = RetryPolicy

    def quicker(**kwargs: object) -> RetryPolicy:
        # The asset's own count and backoff shape; delays / 10 (1+3+7+15 s would be 26 s of sleep).
        return real_policy(**{**kwargs, "delay": float(kwargs["delay"]) / 10})  # type: ignore[arg-type]

    monkeypatch.setattr(publish_assets, "RetryPolicy", quicker)
    defs = build_definitions(replay_lake.settings)
    policy = defs.resolve_assets_def(PUBLISH_STEP).op.retry_policy
    assert policy is not None and policy.max_retries == 4 and policy.delay == pytest.approx(0.1)

    cut = Cut()
    gate_publish_calls(monkeypatch, cut)
    port = server.port
    with fault_running(server, cut, comes_back=False):
        result = run_day(replay_lake, replay_lake.days[1], defs).result
    print(f"\nretry timeline (never back): {retry_timeline(replay_lake, result, cut)}")
    assert not result.success
    assert len(step_events(result, DagsterEventType.STEP_UP_FOR_RETRY)) == policy.max_retries
    failure = step_failure_text(result)
    assert "feature view 'aircraft_utilisation': publishing" in failure
    assert f"against redis://:***@127.0.0.1:{port}/0 failed" in failure
    assert "the server is unreachable" in failure and "0 of " in failure  # the last attempt wrote nothing
    logged = serialize_value(list(replay_lake.instance.all_logs(result.run_id)))
    assert "***@127.0.0.1" in logged
    assert secret not in logged and secret.replace(" ", "%20") not in logged
