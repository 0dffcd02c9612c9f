"""RedisResource: secrets come from the environment at use time and never show in describe()."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import redis
from dagster import Definitions, asset, materialize

from feature_pipelines.online.client import RedisConfigError, redact_url
from feature_pipelines.online.errors import client_target
from feature_pipelines.online.local_server import LocalRedisServer
from feature_pipelines.resources import RedisResource

URL_VAR = "FEATURE_PIPELINES_REDIS_URL"
PASSWORD_VAR = "FEATURE_PIPELINES_REDIS_PASSWORD"
CA_VAR = "FEATURE_PIPELINES_REDIS_CA_CERTS"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (URL_VAR, PASSWORD_VAR, CA_VAR, "TEST_REDIS_CA"):
        monkeypatch.delenv(name, raising=False)


def test_unset_url_says_what_to_do() -> None:
    with pytest.raises(RedisConfigError, match=r"set FEATURE_PIPELINES_REDIS_URL .* `feature-pipelines redis-up`"):
        RedisResource(key_prefix="fp:test").client()
    assert "<FEATURE_PIPELINES_REDIS_URL not set>" in RedisResource(key_prefix="fp:test").describe()


def test_client_reaches_the_server_with_short_timeouts(
    redis_server: LocalRedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(URL_VAR, redis_server.url)
    resource = RedisResource(key_prefix="fp:test", socket_timeout_s=0.7, connect_timeout_s=0.3)
    client = resource.client()
    try:
        assert client.ping()
        kwargs = client.connection_pool.connection_kwargs
        assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (0.7, 0.3)
        assert kwargs["retry"].get_retries() == 1
    finally:
        client.close()
    assert resource.describe() == f"redis {redis_server.url}, prefix 'fp:test'"


def test_password_from_env_is_applied_and_never_described(
    redis_server: LocalRedisServer, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ACL user with a password, so the shared test server's default user stays open."""
    redis_client.execute_command("ACL", "SETUSER", "fp-reader", "on", ">p@ss w0rd", "~*", "+@all")
    try:
        monkeypatch.setenv(URL_VAR, f"redis://fp-reader@127.0.0.1:{redis_server.port}/0")
        monkeypatch.setenv(PASSWORD_VAR, "p@ss w0rd")
        resource = RedisResource(key_prefix="fp:test")
        client = resource.client()
        try:
            assert client.acl_whoami() in ("fp-reader", b"fp-reader")
        finally:
            client.close()
        described = resource.describe()
        assert "p@ss" not in described and "password from $FEATURE_PIPELINES_REDIS_PASSWORD" in described
        monkeypatch.setenv(PASSWORD_VAR, "wrong")
        client = resource.client()
        with pytest.raises(redis.AuthenticationError):
            client.ping()
        client.close()
        # A password inside the URL works too, and is redacted.
        monkeypatch.delenv(PASSWORD_VAR)
        monkeypatch.setenv(URL_VAR, f"redis://fp-reader:p%40ss%20w0rd@127.0.0.1:{redis_server.port}/0")
        client = resource.client()
        try:
            assert client.acl_whoami() in ("fp-reader", b"fp-reader")
        finally:
            client.close()
        assert "p%40ss" not in resource.describe() and "fp-reader:***@127.0.0.1" in resource.describe()
    finally:
        redis_client.execute_command("ACL", "DELUSER", "fp-reader")


def test_redact_url() -> None:
    assert redact_url("redis://:s3cret@h:6379/0") == "redis://:***@h:6379/0"
    assert redact_url("rediss://u:s3cret@[::1]:6380/1") == "rediss://u:***@[::1]:6380/1"
    assert redact_url("redis://h:6379/0?password=s3cret&db=2") == "redis://h:6379/0?password=***&db=2"
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"


def test_tls_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Settings only; the handshake itself is tested against a real TLS server in test_tls.py."""
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not checked until a connection is made\n")
    resource = RedisResource(key_prefix="fp:test", ssl_ca_certs_env_var="TEST_REDIS_CA")
    monkeypatch.setenv(URL_VAR, "rediss://127.0.0.1:6390/0")
    client = resource.client()  # unset: the system CA store, verification still required
    assert "ssl_ca_certs" not in client.connection_pool.connection_kwargs
    assert client.connection_pool.connection_kwargs.get("ssl_cert_reqs", "required") == "required"
    client.close()
    assert "CA bundle" not in resource.describe()
    monkeypatch.setenv("TEST_REDIS_CA", str(bundle))
    client = resource.client()
    assert client.connection_pool.connection_kwargs["ssl_ca_certs"] == str(bundle)
    assert client.connection_pool.connection_class.__name__ == "SSLConnection"
    client.close()
    assert "CA bundle from $TEST_REDIS_CA" in resource.describe()
    monkeypatch.setenv("TEST_REDIS_CA", str(tmp_path / "missing.pem"))
    with pytest.raises(RedisConfigError, match=r"CA bundle .*missing\.pem.* \(from TEST_REDIS_CA\) does not exist"):
        resource.client()
    monkeypatch.setenv("TEST_REDIS_CA", str(bundle))
    monkeypatch.setenv(URL_VAR, "redis://127.0.0.1:6390/0")
    with pytest.raises(RedisConfigError, match="not a rediss:// URL"):
        resource.client()
    monkeypatch.setenv(URL_VAR, "http://127.0.0.1:6390/0")
    with pytest.raises(RedisConfigError, match="scheme 'http'"):
        resource.client()


def test_ca_bundle_env_var_has_a_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("x\n")
    monkeypatch.setenv(URL_VAR, "rediss://127.0.0.1:6390/0")
    monkeypatch.setenv(CA_VAR, str(bundle))
    resource = RedisResource(key_prefix="fp:test")
    client = resource.client()
    assert client.connection_pool.connection_kwargs["ssl_ca_certs"] == str(bundle)
    client.close()
    assert resource.describe() == f"redis rediss://127.0.0.1:6390/0, prefix 'fp:test', CA bundle from ${CA_VAR}"


def test_bad_prefix_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(URL_VAR, "redis://127.0.0.1:6390/0")
    with pytest.raises(RedisConfigError, match="brace-free"):
        RedisResource(key_prefix="fp:{x}").client()


def test_unreachable_server_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv(URL_VAR, f"redis://127.0.0.1:{port}/0")
    client = RedisResource(key_prefix="fp:test").client()
    began = time.monotonic()
    with pytest.raises(redis.ConnectionError):
        client.ping()
    assert time.monotonic() - began < 0.5  # one retry after <= 100 ms, not redis-py's ten
    client.close()


def test_is_a_dagster_resource(redis_server: LocalRedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(URL_VAR, redis_server.url)

    @asset
    def pinged(online_store: RedisResource) -> str:
        client = online_store.client()
        try:
            client.ping()
        finally:
            client.close()
        return online_store.describe()

    defs = Definitions(assets=[pinged], resources={"online_store": RedisResource(key_prefix="fp:test")})
    result = materialize([pinged], resources=defs.resources)
    assert result.success
    assert result.output_for_node("pinged") == f"redis {redis_server.url}, prefix 'fp:test'"


def test_client_target_is_the_redacted_url_of_any_client() -> None:
    """What publish errors name: built from the client, so it holds whatever the URL held."""
    cases = {
        "redis://:s3cret@127.0.0.1:6390/2": "redis://:***@127.0.0.1:6390/2",
        "rediss://app:s3cret@cache.example:6380/0": "rediss://app:***@cache.example:6380/0",
        "redis://app@127.0.0.1:6390/0": "redis://app@127.0.0.1:6390/0",
        "unix:///run/redis.sock?db=3&password=s3cret": "unix://:***@/run/redis.sock?db=3",
    }
    for url, shown in cases.items():
        client = redis.Redis.from_url(url)
        assert client_target(client) == shown and "s3cret" not in client_target(client)
        client.close()
