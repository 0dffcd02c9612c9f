"""LocalRedisServer: a private redis-server on a free loopback port, restartable in place."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from feature_pipelines.online.local_server import LocalRedisServer, LocalRedisServerError, TlsFiles


def test_start_answers_and_stop_frees(redis_server: LocalRedisServer) -> None:
    assert redis_server.url.startswith("redis://127.0.0.1:")
    assert redis.Redis.from_url(redis_server.url).ping()


def test_restart_keeps_port_and_with_appendonly_the_data(tmp_path: Path) -> None:
    with LocalRedisServer(appendonly=True) as server:
        port, pid = server.port, server.pid
        client = server.client()
        client.set("k", "v")
        server.restart(crash=True)
        assert (server.port, server.is_running) == (port, True) and server.pid != pid
        assert client.get("k") == b"v"  # the client reconnects to the new process on the same port
        client.close()
    assert not server.is_running


def test_without_persistence_a_restart_starts_empty() -> None:
    with LocalRedisServer() as server:
        client = server.client()
        client.set("k", "v")
        server.restart()
        assert client.get("k") is None
        client.close()


def test_missing_binary_says_what_to_install() -> None:
    with pytest.raises(LocalRedisServerError, match=r"Debian package `redis-server`"):
        LocalRedisServer(binary="redis-server-that-does-not-exist").start()


def test_a_server_that_dies_on_start_reports_its_output(tmp_path: Path) -> None:
    fake = tmp_path / "fake-redis-server"
    fake.write_text("#!/bin/sh\necho 'FATAL: cannot start, testing' >&2\nexit 3\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    with pytest.raises(LocalRedisServerError, match=r"(?s)exited with code 3.*FATAL: cannot start"):
        LocalRedisServer(binary=str(fake), port=1).start()


def test_password_and_tls_arguments_are_checked_before_starting(tmp_path: Path) -> None:
    with pytest.raises(LocalRedisServerError, match="newline"):
        LocalRedisServer(password="two\nlines").start()
    with pytest.raises(LocalRedisServerError, match="non-empty"):
        LocalRedisServer(password="")
    with pytest.raises(LocalRedisServerError, match=r"TLS cert_file .*missing\.pem.* does not exist"):
        TlsFiles(cert_file=tmp_path / "missing.pem", key_file=tmp_path / "k", ca_file=tmp_path / "c")


def test_password_server_refuses_anonymous_clients_and_keeps_its_config_private() -> None:
    with LocalRedisServer(password="local pw") as server:
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        anonymous = redis.Redis(host="127.0.0.1", port=server.port, retry=Retry(NoBackoff(), 0))
        with pytest.raises(redis.AuthenticationError):
            anonymous.ping()
        anonymous.close()
        assert server.client().ping()
        [config] = list(Path(server.client().config_get("dir")["dir"]).glob("*.conf"))
        assert stat.S_IMODE(config.stat().st_mode) == 0o600
