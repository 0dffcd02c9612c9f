"""Deploy fixtures: a real PostgreSQL server of our own, and a DAGSTER_HOME whose dagster.yaml is
`deploy/dagster.postgres.yaml` pointed at it through the environment variables it reads."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from feature_pipelines_tests.deploy.local_postgres import LocalPostgres, LocalPostgresError, find_bin_dir

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[LocalPostgres]:
    """Fails (never skips) without the binaries: CI must not pass without the PostgreSQL tests."""
    try:
        find_bin_dir()
    except LocalPostgresError as missing:
        pytest.fail(str(missing), pytrace=False)
    server = LocalPostgres.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass(frozen=True)
class PostgresHome:
    """A DAGSTER_HOME on the production instance config, with its own database."""

    home: Path
    server: LocalPostgres
    database: str


@pytest.fixture
def postgres_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postgres_server: LocalPostgres) -> PostgresHome:
    database = postgres_server.create_database(f"dagster_{uuid.uuid4().hex[:12]}")
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(DEPLOY / "dagster.postgres.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("DAGSTER_PG_HOST", postgres_server.host)
    monkeypatch.setenv("DAGSTER_PG_PORT", str(postgres_server.port))
    monkeypatch.setenv("DAGSTER_PG_USERNAME", postgres_server.user)
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", postgres_server.password)
    monkeypatch.setenv("DAGSTER_PG_DB", database)
    return PostgresHome(home=home, server=postgres_server, database=database)
