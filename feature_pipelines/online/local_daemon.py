"""A persistent local redis-server for the demo, for when no Redis URL is configured.

Unlike `LocalRedisServer` (a child process that dies with the tests that started it), this one
outlives the command that started it: the demo materialises, publishes and then serves from
separate processes, and they must all see the same store. Its state lives in one directory:

    state_dir/url          the URL, e.g. redis://127.0.0.1:40123 (what other commands read)
    state_dir/run_id       the server's INFO run_id, so that we only ever reuse or stop *our*
                           server, never another process that later took the same port
    state_dir/redis.pid    written by redis-server
    state_dir/redis.log    its log
    state_dir/lock         serialises concurrent `ensure_local_redis` calls

The server binds 127.0.0.1 only, on a free port, with persistence off (`--save ""
--appendonly no`): it is a cache of what the pipeline publishes and can always be rebuilt.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from feature_pipelines.online.local_server import REDIS_SERVER_BINARY, LocalRedisServerError, _free_loopback_port

logger = logging.getLogger(__name__)

URL_FILE = "url"
RUN_ID_FILE = "run_id"
PID_FILE = "redis.pid"
LOG_FILE = "redis.log"
LOCK_FILE = "lock"
STARTUP_TIMEOUT_S = 10.0


def _probe(url: str, timeout_s: float = 0.5) -> redis.Redis:
    # No client retries: the callers' loops are the retries, and redis-py's default backoff
    # would turn "nothing listens there" into seconds.
    return redis.Redis.from_url(
        url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s, retry=Retry(NoBackoff(), 0)
    )


def _server_info(url: str) -> dict[str, object] | None:
    """INFO server of whatever answers at `url`, or None if nothing answers."""
    client = _probe(url)
    try:
        return dict(client.info("server"))
    except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
        return None
    finally:
        client.close()


def _run_id(url: str) -> str | None:
    """The run_id of the server answering at `url`, or None if nothing answers."""
    info = _server_info(url)
    return None if info is None else str(info["run_id"])


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text + "\n")
    os.replace(tmp, path)


@contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    with open(state_dir / LOCK_FILE, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def running_url(state_dir: Path) -> str | None:
    """The URL of our server in `state_dir` if it is still the one answering there, else None."""
    url, expected = _read(state_dir / URL_FILE), _read(state_dir / RUN_ID_FILE)
    if url is None or expected is None:
        return None
    return url if _run_id(url) == expected else None


def _start(state_dir: Path, port: int) -> str:
    executable = shutil.which(REDIS_SERVER_BINARY)
    if executable is None:
        raise LocalRedisServerError(
            f"`{REDIS_SERVER_BINARY}` was not found on PATH; install the Debian package "
            "`redis-server` or set FEATURE_PIPELINES_REDIS_URL to an existing server"
        )
    log_path = state_dir / LOG_FILE
    pid_path = state_dir / PID_FILE
    pid_path.unlink(missing_ok=True)
    log_offset = log_path.stat().st_size if log_path.exists() else 0
    command = [
        executable,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--protected-mode", "yes",
        "--save", "",
        "--appendonly", "no",
        "--dir", str(state_dir),
        "--daemonize", "yes",
        "--pidfile", str(pid_path),
        "--logfile", str(log_path),
    ]
    # With --daemonize the command returns once the server has forked; it may still fail to bind.
    completed = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, timeout=30, check=False)
    if completed.returncode != 0:
        raise LocalRedisServerError(
            f"redis-server exited with code {completed.returncode}: "
            f"{(completed.stderr or completed.stdout).decode(errors='replace').strip()}"
        )
    url = f"redis://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        pid_text = _read(pid_path)
        info = _server_info(url)
        # Only a server whose process id is the one our redis-server wrote to the pidfile is
        # ours: another process may hold the port, and we must never record (and later stop) it.
        if info is not None and pid_text is not None and str(info.get("process_id")) == pid_text:
            _write_atomically(state_dir / RUN_ID_FILE, str(info["run_id"]))
            _write_atomically(state_dir / URL_FILE, url)
            return url
        with open(log_path, "rb") as log:
            log.seek(log_offset)
            new_output = log.read().decode(errors="replace")
        if "Address already in use" in new_output or (info is not None and pid_text is not None):
            _terminate_pid(pid_text)
            raise LocalRedisServerError(f"127.0.0.1:{port}: Address already in use")
        time.sleep(0.02)
    _terminate_pid(_read(pid_path))
    tail = log_path.read_text(errors="replace").splitlines()[-20:] if log_path.exists() else []
    raise LocalRedisServerError(
        f"redis-server did not answer on 127.0.0.1:{port} within {STARTUP_TIMEOUT_S:.0f}s:\n"
        + ("\n".join(tail) or "(no log output)")
    )


def _terminate_pid(pid_text: str | None) -> None:
    """SIGTERM the server we just started (from its own pidfile), so a failed start leaves nothing."""
    if pid_text is not None and pid_text.isdigit() and _pid_alive(int(pid_text)):
        os.kill(int(pid_text), signal.SIGTERM)


def ensure_local_redis(state_dir: Path) -> str:
    """The URL of a local redis-server recorded in `state_dir`, started if it is not running.

    Reused when the recorded server still answers with its recorded run_id; otherwise a new one
    is started on a free loopback port (retried on another port if that one was taken
    meanwhile). Concurrent callers are serialised by a file lock, so they share one server.
    """
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    with _locked(state_dir):
        url = running_url(state_dir)
        if url is not None:
            logger.info("no Redis URL configured: reusing local redis-server at %s", url)
            return url
        for name in (URL_FILE, RUN_ID_FILE):
            (state_dir / name).unlink(missing_ok=True)
        last_error: LocalRedisServerError | None = None
        for _ in range(5):
            port = _free_loopback_port()
            try:
                url = _start(state_dir, port)
            except LocalRedisServerError as error:
                last_error = error
                if "Address already in use" not in str(error):
                    raise
                continue
            message = f"no Redis URL configured: started local redis-server at {url}"
            logger.info(message)
            print(message, file=sys.stderr, flush=True)  # stderr: stdout is for the URL
            return url
        assert last_error is not None
        raise last_error


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_local_redis(state_dir: Path, timeout_s: float = 10.0) -> bool:
    """Stop the server recorded in `state_dir`; True if one was running and has stopped.

    The shutdown goes over the Redis protocol (SHUTDOWN NOSAVE), and only to a server whose
    run_id is the recorded one: a stale pid or port may by now belong to someone else's process.
    """
    state_dir = Path(state_dir)
    if not state_dir.exists():
        return False
    with _locked(state_dir):
        url = running_url(state_dir)
        stopped = False
        if url is not None:
            pid_text = _read(state_dir / PID_FILE)
            client = _probe(url, timeout_s=2.0)
            try:
                client.shutdown(nosave=True)
            except (redis.ConnectionError, redis.TimeoutError):
                pass  # the server closes the connection as it exits; checked below
            finally:
                client.close()
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                gone = _run_id(url) is None and (pid_text is None or not _pid_alive(int(pid_text)))
                if gone:
                    stopped = True
                    break
                time.sleep(0.05)
            if not stopped:
                raise LocalRedisServerError(f"local redis-server at {url} did not stop within {timeout_s:.0f}s")
            logger.info("stopped local redis-server at %s", url)
        for name in (URL_FILE, RUN_ID_FILE, PID_FILE):
            (state_dir / name).unlink(missing_ok=True)
        return stopped
