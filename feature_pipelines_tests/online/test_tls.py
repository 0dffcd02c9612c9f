"""A single Redis with a password and TLS only, as managed deployments run it: the same publish
and read code works through `RedisResource` configured from environment variables, and a wrong
password or an untrusted certificate gives a clear error that never contains the password.

The server is a real redis-server (`--port 0 --tls-port ...`, `requirepass`) with a CA and
certificate made for this module in a tmp directory.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from dagster import serialize_value
from redis.backoff import NoBackoff
from redis.retry import Retry

from feature_pipelines.online.client import RedisConfigError
from feature_pipelines.online.errors import OnlineStoreUnavailableError
from feature_pipelines.online.local_server import LocalRedisServer, TlsFiles
from feature_pipelines.online.publish import PublishResult, publish
from feature_pipelines.online.read import read_online
from feature_pipelines.orchestration.runs import materialize_range
from feature_pipelines.orchestration.schedules import DAILY_SNAPSHOT_JOB
from feature_pipelines.resources import RedisResource
from feature_pipelines_tests.conftest import step_failure_text
from feature_pipelines_tests.online.conftest import (
    ENTITY_KEYS,
    FEATURES,
    PREFIX,
    TABLE,
    VIEW,
    ReplayLake,
    assert_frames_identical,
    now_utc,
    snapshot,
)
from feature_pipelines_tests.online.tls_certs import make_server_tls

URL_VAR = "FEATURE_PIPELINES_REDIS_URL"
PASSWORD_VAR = "FEATURE_PIPELINES_REDIS_PASSWORD"
CA_VAR = "FEATURE_PIPELINES_REDIS_CA_CERTS"
PASSWORD = "tls-S3cret pass\"word"  # a space and a quote: exercises the server config quoting
WRONG = "not-the-Pa55word"


def chain_text(error: BaseException) -> str:
    """The error and every cause, as a failure report or Dagster would show them."""
    parts: list[str] = []
    current: BaseException | None = error
    while current is not None:
        parts.append(f"{type(current).__name__}: {current}")
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_server_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_server(tls_files: TlsFiles) -> Iterator[LocalRedisServer]:
    with LocalRedisServer(password=PASSWORD, tls=tls_files) as server:
        yield server


@pytest.fixture
def tls_env(tls_server: LocalRedisServer, tls_files: TlsFiles, monkeypatch: pytest.MonkeyPatch) -> LocalRedisServer:
    """The deployment's configuration: a rediss:// URL, the password and CA path in their own vars."""
    monkeypatch.setenv(URL_VAR, tls_server.url)
    monkeypatch.setenv(PASSWORD_VAR, PASSWORD)
    monkeypatch.setenv(CA_VAR, str(tls_files.ca_file))
    admin = tls_server.client()
    admin.flushall()
    admin.close()
    return tls_server


def test_server_is_tls_only_and_keeps_the_password_off_its_command_line(tls_server: LocalRedisServer) -> None:
    assert tls_server.url == f"rediss://127.0.0.1:{tls_server.port}/0" and PASSWORD not in tls_server.url
    command_line = subprocess.run(
        ["ps", "-o", "args=", "-p", str(tls_server.pid)], capture_output=True, text=True, check=True
    ).stdout
    assert "pass" not in command_line and "redis-server" in command_line
    plain = redis.Redis(
        host="127.0.0.1", port=tls_server.port, password=PASSWORD, socket_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    with pytest.raises(redis.ConnectionError):  # a plaintext client cannot talk to it at all
        plain.ping()
    plain.close()
    assert tls_server.client().config_get("requirepass") == {"requirepass": PASSWORD}


def test_publish_and_read_round_trip_through_the_resource(tls_env: LocalRedisServer) -> None:
    resource = RedisResource(key_prefix=PREFIX)
    described = resource.check()
    assert described == (
        f"redis {tls_env.url}, prefix 'fp:test', password from ${PASSWORD_VAR}, CA bundle from ${CA_VAR}"
    )
    client = resource.client()
    try:
        assert client.connection_pool.connection_class is redis.SSLConnection
        now = now_utc()
        frame = snapshot(500, now, generation=3)
        assert publish(client, frame=frame, batch_size=64, table=TABLE) == PublishResult(VIEW, written=500)
        read = read_online(
            client, TABLE, entity_rows=frame.select(ENTITY_KEYS), features=FEATURES, now=now,
        )
        assert_frames_identical(read, frame.select(*ENTITY_KEYS, *FEATURES))
        assert read["route_top_carrier_24h"].null_count() > 0  # nulls survived the trip too
    finally:
        client.close()


@pytest.mark.parametrize("where", ["env var", "url"])
def test_wrong_password_names_target_and_fix_never_the_password(
    tls_env: LocalRedisServer, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    if where == "url":
        monkeypatch.delenv(PASSWORD_VAR)
        monkeypatch.setenv(URL_VAR, tls_env.url.replace("rediss://", f"rediss://:{WRONG}@"))
    else:
        monkeypatch.setenv(PASSWORD_VAR, WRONG)
    resource = RedisResource(key_prefix="fp:test")
    target = f"rediss://:***@127.0.0.1:{tls_env.port}/0"
    with pytest.raises(OnlineStoreUnavailableError) as check_error:
        resource.check()
    text = chain_text(check_error.value)
    assert "refused the credentials" in text and f"Fix: set ${PASSWORD_VAR}" in text
    if where == "url":
        assert f"redis {target}" in text
    client = resource.client()
    with pytest.raises(OnlineStoreUnavailableError) as publish_error:
        publish(client, frame=snapshot(10, now_utc()), table=TABLE)
    client.close()
    published_text = chain_text(publish_error.value)
    assert f"feature view {VIEW!r}: publishing 10 entities against {target} failed" in published_text
    assert "0 of 10 entities were acknowledged" in published_text
    assert isinstance(publish_error.value, redis.ConnectionError)  # callers' handlers still apply
    for shown in (text, published_text, resource.describe()):
        assert WRONG not in shown and PASSWORD not in shown, shown


def test_missing_or_wrong_ca_fails_verification_clearly(
    tls_env: LocalRedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    resource = RedisResource(key_prefix="fp:test")
    other_ca = make_server_tls(tmp_path / "other", ca_name="some other CA").ca_file
    for ca in (None, other_ca):
        if ca is None:
            monkeypatch.delenv(CA_VAR)
        else:
            monkeypatch.setenv(CA_VAR, str(ca))
        with pytest.raises(OnlineStoreUnavailableError) as error:
            resource.check()
        text = chain_text(error.value)
        assert "TLS certificate could not be verified" in text and "CERTIFICATE_VERIFY_FAILED" in text
        assert f"set ${CA_VAR} to the path of the CA bundle" in text
        assert PASSWORD not in text
    monkeypatch.setenv(CA_VAR, str(tmp_path / "nowhere.pem"))
    with pytest.raises(RedisConfigError, match=rf"nowhere\.pem.*from {CA_VAR}\) does not exist") as config_error:
        resource.check()
    assert PASSWORD not in chain_text(config_error.value)


def test_a_plain_url_against_the_tls_server_is_refused_without_the_password(
    tls_env: LocalRedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(CA_VAR)
    monkeypatch.setenv(URL_VAR, f"redis://:{PASSWORD}@127.0.0.1:{tls_env.port}/0")
    resource = RedisResource(key_prefix="fp:test", socket_timeout_s=1.0)
    with pytest.raises(OnlineStoreUnavailableError) as error:
        resource.check()
    text = chain_text(error.value)
    assert f"redis://:***@127.0.0.1:{tls_env.port}/0" in text and PASSWORD not in text
    assert re.search("unreachable or closed the connection|did not answer", text), text


def test_real_publish_run_over_tls_passes_parity_and_never_records_the_password(
    tls_env: LocalRedisServer, replay_lake: ReplayLake
) -> None:
    """The daily job's publish asset, unchanged, against the TLS server: configuration is only
    the three environment variables, and nothing the run records (events, metadata, check
    results, logs) contains the password."""
    day = replay_lake.days[0]
    run = materialize_range(
        replay_lake.defs, DAILY_SNAPSHOT_JOB, day, day, instance=replay_lake.instance,
        assets=["aircraft_utilisation", "aircraft_utilisation_online"], raise_on_error=False,
    )
    assert run.result.success, step_failure_text(run.result)
    [published] = [
        e.materialization.metadata for e in run.result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == "aircraft_utilisation_online"
    ]
    assert published["entities_written"].value > 500
    assert published["online_store"].value == (
        f"redis {tls_env.url}, prefix 'fp:local', password from ${PASSWORD_VAR}, CA bundle from ${CA_VAR}"
    )
    [parity] = [c for c in run.result.get_asset_check_evaluations() if c.check_name == "online_matches_offline"]
    assert parity.passed and parity.metadata["entities_compared"].value == published["entities_written"].value
    logged = serialize_value(list(replay_lake.instance.all_logs(run.result.run_id)))
    assert tls_env.url in logged and PASSWORD not in logged
