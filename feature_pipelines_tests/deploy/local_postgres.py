"""A throwaway PostgreSQL server for the deploy tests: own data directory, own loopback port.

The production Dagster instance stores runs and events in PostgreSQL, so its config is tested
against a real server. The system service on 5432 is never used: this server lives in a fresh
temporary directory, listens on 127.0.0.1 on a free port with its socket in that directory, and is
stopped and deleted afterwards. PostgreSQL refuses to run as root, so under root every server
command runs as the `postgres` system user, who owns the directory.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg2

SERVER_USER = "postgres"  # the system account Debian's package creates; used only under root
SUPERUSER = "feature_pipelines"
SETUP_HINT = "run `bash scripts/setup.sh` (it installs Debian's postgresql package)"


class LocalPostgresError(RuntimeError):
    """The PostgreSQL binaries are missing, or the server could not be initialised or started."""


def find_bin_dir() -> Path:
    """The newest `/usr/lib/postgresql/<major>/bin` that has both initdb and pg_ctl."""
    candidates = [
        Path(found).parent
        for found in glob.glob("/usr/lib/postgresql/*/bin/initdb")
        if (Path(found).parent / "pg_ctl").exists()
    ]
    if not candidates:
        raise LocalPostgresError(
            "PostgreSQL server binaries not found (no initdb/pg_ctl under /usr/lib/postgresql/*/bin); " + SETUP_HINT
        )
    return max(candidates, key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else -1)


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class LocalPostgres:
    """One initialised and started server; `stop()` shuts it down and deletes its directory."""

    bin_dir: Path
    root: Path
    port: int
    password: str
    host: str = "127.0.0.1"
    user: str = SUPERUSER

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @classmethod
    def start(cls) -> LocalPostgres:
        bin_dir = find_bin_dir()
        # Not under pytest's tmp dirs: those are 0700 root-owned, so `postgres` could not reach them.
        root = Path(tempfile.mkdtemp(prefix="fp-postgres-"))
        server = cls(bin_dir=bin_dir, root=root, port=_free_loopback_port(), password=secrets.token_hex(16))
        try:
            server._initdb()
            server._pg_ctl_start()
        except BaseException:
            server._remove_root()
            raise
        return server

    def _as_server_user(self, argv: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return argv
        return ["runuser", "-u", SERVER_USER, "--", *argv]

    def _run(self, argv: list[str], what: str) -> None:
        result = subprocess.run(self._as_server_user(argv), capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise LocalPostgresError(
                f"{what} failed (exit {result.returncode}): {result.stdout}{result.stderr}{tail}"
            )

    def _initdb(self) -> None:
        password_file = self.root / "superuser_password"
        password_file.write_text(self.password + "\n")
        if os.geteuid() == 0:
            account = pwd.getpwnam(SERVER_USER)
            for path in (self.root, password_file):
                os.chown(path, account.pw_uid, account.pw_gid)
        # Passwords are required over TCP (what Dagster uses), so the instance's password variable
        # is exercised; the unix socket in our own directory stays trusted for pg_ctl.
        self._run(
            [
                str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", self.user,
                f"--pwfile={password_file}", "--auth-host=scram-sha-256", "--auth-local=trust",
                "-E", "UTF8", "--locale=C", "--no-sync",
            ],
            "initdb",
        )
        password_file.unlink()

    def _pg_ctl_start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses={self.host} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.root / "server.log"),
             "-o", options, "-w", "-t", "60", "start"],
            "pg_ctl start",
        )

    def connect(self, database: str = "postgres") -> psycopg2.extensions.connection:
        return psycopg2.connect(
            host=self.host, port=self.port, user=self.user, password=self.password, dbname=database
        )

    def query(self, database: str, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        """All rows of one statement, on a connection closed afterwards."""
        connection = self.connect(database)
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                return list(cursor.fetchall())
        finally:
            connection.close()

    def create_database(self, name: str) -> str:
        connection = self.connect()
        try:
            connection.autocommit = True  # CREATE DATABASE cannot run inside a transaction
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()
        return name

    def stop(self) -> None:
        try:
            if (self.data_dir / "postmaster.pid").exists():
                self._run([str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"], "pg_ctl stop")
        finally:
            self._remove_root()

    def _remove_root(self) -> None:
        shutil.rmtree(self.root, ignore_errors=False)
