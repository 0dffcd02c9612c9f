"""A throwaway `redis-server` on a free loopback port, for the demo and the tests.

The demo needs an online store when no Redis URL is configured, and the tests need a real server
(fakes do not run Lua the way Redis does, nor expire keys, nor lose connections). The server never
touches a shared instance: it binds 127.0.0.1 only, on a port nobody else holds, with its own
working directory; it stops with `stop()` (or the `with` block), and on Linux also when the
process that started it dies.

It can also stand in for a production deployment: with `password` it requires AUTH, and with
`tls` it listens for TLS only (`--port 0 --tls-port <port>`), so the online store's password
and certificate handling is tested against a real server, not assumed.
"""

from __future__ import annotations

import ctypes
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

REDIS_SERVER_BINARY = "redis-server"


class LocalRedisServerError(RuntimeError):
    """The local redis-server could not be found, started, or reached."""


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for a TLS-only server: its certificate and key, and the CA clients trust.

    Clients are not asked for certificates (`tls-auth-clients no`): the online store
    authenticates with a password over TLS, as managed Redis services do.
    """

    cert_file: Path
    key_file: Path
    ca_file: Path

    def __post_init__(self) -> None:
        for label, path in (("cert_file", self.cert_file), ("key_file", self.key_file), ("ca_file", self.ca_file)):
            if not Path(path).is_file():
                raise LocalRedisServerError(f"TLS {label} {str(path)!r} does not exist")


def _config_string(value: str, what: str) -> str:
    """`value` as a double-quoted redis.conf string (the config parser's own escaping)."""
    if any(ch in value for ch in "\r\n\0"):
        raise LocalRedisServerError(f"{what} must not contain a newline or NUL character")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _die_with_parent() -> None:
    """In the child before exec: have Linux SIGTERM the server when its parent dies.

    A test run or demo killed hard would otherwise leave redis-server running on the shared
    machine. (Linux ties this to the thread that started the server: start it from a thread
    that outlives it, as the main thread does.)
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: stop() remains the only way out


def _free_loopback_port() -> int:
    # The kernel hands out an unused port; there is a small window before redis-server binds it,
    # which start() covers by retrying on "Address already in use".
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LocalRedisServer:
    """A `redis-server` subprocess on 127.0.0.1 with an ephemeral port and a private directory.

    Persistence is off by default (`--save "" --appendonly no`) because the demo and most tests
    want a clean, fast, disposable store. `appendonly=True` turns on the append-only file so that
    a crash test can kill the server and `restart()` it on the same port with its data reloaded,
    which is the only way to observe what a publish left behind when the server died mid-way.
    `extra_args` go to redis-server after the defaults (e.g. cluster mode for a cluster test).

    `password` sets `requirepass`; it is written to a 0600 config file in the private directory,
    never put on the command line, where `ps` would show it to every user of the machine.
    `tls` makes the server listen for TLS only, on the same kind of free port; `url` is then a
    `rediss://` URL. `url` never contains the password (see `password`).
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        directory: str | Path | None = None,
        appendonly: bool = False,
        startup_timeout_s: float = 10.0,
        binary: str = REDIS_SERVER_BINARY,
        extra_args: Sequence[str] = (),
        password: str | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        if password is not None and not password:
            raise LocalRedisServerError("password must be non-empty (or None for no password)")
        self._requested_port = port
        self._port: int | None = port
        self._appendonly = appendonly
        self._startup_timeout_s = startup_timeout_s
        self._binary = binary
        self._extra_args = list(extra_args)
        self._password = password
        self._tls = tls
        self._owned_dir: tempfile.TemporaryDirectory[str] | None = None
        self._directory = Path(directory) if directory is not None else None
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr_path: Path | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> LocalRedisServer:
        """Start the server and return once it answers PING; idempotent while it runs."""
        if self.is_running:
            return self
        executable = shutil.which(self._binary)
        if executable is None:
            raise LocalRedisServerError(
                f"`{self._binary}` was not found on PATH; install the Debian package "
                "`redis-server` (apt-get install redis-server) or configure a Redis URL"
            )
        if self._directory is None:
            self._owned_dir = tempfile.TemporaryDirectory(prefix="feature-pipelines-redis-")
            self._directory = Path(self._owned_dir.name)
        self._directory.mkdir(parents=True, exist_ok=True)
        # A port picked by us can be taken by someone else before redis-server binds it: retry
        # with a new one. A port the caller asked for (or a restart) must stay the same.
        attempts = 1 if self._port is not None else 5
        last_error: LocalRedisServerError | None = None
        for _ in range(attempts):
            port = self._port if self._port is not None else _free_loopback_port()
            try:
                self._spawn(executable, port)
                self._port = port
                return self
            except LocalRedisServerError as error:
                last_error = error
                if "Address already in use" not in str(error):
                    break
        assert last_error is not None
        if self._requested_port is None and not self.is_running:
            self._cleanup_directory()
        raise last_error

    def _spawn(self, executable: str, port: int) -> None:
        assert self._directory is not None
        self._stderr_path = self._directory / f"redis-{port}.log"
        command = [executable]
        if self._password is not None:
            # The config file must come first; later command-line options add to it.
            config = self._directory / f"redis-{port}.conf"
            config.touch(mode=0o600)
            config.chmod(0o600)
            config.write_text(f"requirepass {_config_string(self._password, 'password')}\n")
            command.append(str(config))
        if self._tls is not None:
            command += [
                "--port", "0",
                "--tls-port", str(port),
                "--tls-cert-file", str(self._tls.cert_file),
                "--tls-key-file", str(self._tls.key_file),
                "--tls-ca-cert-file", str(self._tls.ca_file),
                "--tls-auth-clients", "no",
            ]
        else:
            command += ["--port", str(port)]
        command += [
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "yes" if self._appendonly else "no",
            "--dir", str(self._directory),
            "--daemonize", "no",
            "--logfile", "",
        ]
        if self._appendonly:
            # `no`: the OS flushes; data written before a SIGKILL of the process survives, which
            # is what the crash tests need, without paying an fsync per write.
            command += ["--appendfsync", "no"]
        command += self._extra_args
        with open(self._stderr_path, "wb") as log:
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        deadline = time.monotonic() + self._startup_timeout_s
        # No client-side retries: this loop is the retry, and redis-py's default backoff would
        # turn "not listening yet" into seconds of sleeping.
        probe = redis.Redis(
            host="127.0.0.1", port=port, socket_connect_timeout=0.5, socket_timeout=0.5,
            retry=Retry(NoBackoff(), 0), **self._auth_kwargs(),
        )
        try:
            while True:
                if self._process.poll() is not None:
                    raise LocalRedisServerError(
                        f"redis-server exited with code {self._process.returncode} while starting "
                        f"on 127.0.0.1:{port}:\n{self._log_tail()}"
                    )
                try:
                    if probe.ping():
                        return
                except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                    pass
                if time.monotonic() > deadline:
                    self._terminate(signal.SIGKILL)
                    raise LocalRedisServerError(
                        f"redis-server did not answer PING on 127.0.0.1:{port} within "
                        f"{self._startup_timeout_s:.1f}s:\n{self._log_tail()}"
                    )
                time.sleep(0.02)
        finally:
            probe.close()

    def _log_tail(self, lines: int = 30) -> str:
        if self._stderr_path is None or not self._stderr_path.exists():
            return "(no server output)"
        text = self._stderr_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:]) or "(no server output)"

    def _terminate(self, sig: signal.Signals) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        self._process = None

    def kill(self) -> None:
        """SIGKILL the server, as a crash would: nothing is flushed or saved on the way out."""
        self._terminate(signal.SIGKILL)

    def stop(self) -> None:
        """Stop the server (SIGTERM) and remove the directory this object created."""
        self._terminate(signal.SIGTERM)
        self._cleanup_directory()
        if self._requested_port is None:
            self._port = None

    def _cleanup_directory(self) -> None:
        if self._owned_dir is not None:
            self._owned_dir.cleanup()
            self._owned_dir = None
            self._directory = None

    def restart(self, *, crash: bool = False) -> LocalRedisServer:
        """Stop (or with `crash`, SIGKILL) and start again on the same port and directory.

        The port stays so that clients holding the URL reconnect to the new process; the
        directory stays so that an append-only file, if enabled, is reloaded.
        """
        if self._port is None:
            raise LocalRedisServerError("restart() needs a server that has been started")
        self._terminate(signal.SIGKILL if crash else signal.SIGTERM)
        return self.start()

    # -- access --------------------------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def port(self) -> int:
        if self._port is None:
            raise LocalRedisServerError("the local redis-server has not been started")
        return self._port

    @property
    def pid(self) -> int:
        if self._process is None:
            raise LocalRedisServerError("the local redis-server is not running")
        return self._process.pid

    @property
    def url(self) -> str:
        """`redis://` or, with TLS, `rediss://` URL of database 0; never with the password."""
        scheme = "rediss" if self._tls is not None else "redis"
        return f"{scheme}://127.0.0.1:{self.port}/0"

    @property
    def password(self) -> str | None:
        return self._password

    @property
    def tls(self) -> TlsFiles | None:
        return self._tls

    def _auth_kwargs(self) -> dict[str, object]:
        kwargs: dict[str, object] = {}
        if self._password is not None:
            kwargs["password"] = self._password
        if self._tls is not None:
            kwargs.update(ssl=True, ssl_ca_certs=str(self._tls.ca_file))
        return kwargs

    def client(self, **kwargs: object) -> redis.Redis:
        """A client for this server (with its password and CA, if any); keyword arguments go to
        `redis.Redis` and override those."""
        return redis.Redis(host="127.0.0.1", port=self.port, **{**self._auth_kwargs(), **kwargs})  # type: ignore[arg-type]

    def __enter__(self) -> LocalRedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        extras = (", password" if self._password is not None else "") + (", tls" if self._tls is not None else "")
        return f"LocalRedisServer(port={self._port}{extras}, {state})"
