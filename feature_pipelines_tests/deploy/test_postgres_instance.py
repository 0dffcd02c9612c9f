"""The production instance config (`deploy/dagster.postgres.yaml`) on a real PostgreSQL server:
it loads as Postgres storage, a real run of this project lands in PostgreSQL, it reads back, and
the concurrency pools are enforced through it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import yaml
from dagster import AssetKey, DagsterInstance, DagsterRunStatus
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

from feature_pipelines.orchestration.concurrency import LAKE_WRITES_POOL, POOL_LIMITS, apply_pool_limits
from feature_pipelines.orchestration.runs import materialize_range
from feature_pipelines.orchestration.schedules import DIMENSIONS_JOB
from feature_pipelines_tests.conftest import make_pipeline
from feature_pipelines_tests.deploy.conftest import DEPLOY, PostgresHome

DIMENSIONS = ("raw_airlines", "raw_airports", "raw_planes")


def test_connection_settings_come_only_from_the_environment() -> None:
    config = yaml.safe_load((DEPLOY / "dagster.postgres.yaml").read_text())
    settings = config["storage"]["postgres"]["postgres_db"]
    assert settings.pop("scheme") == "postgresql+psycopg2"  # the driver dagster-postgres installs
    assert set(settings) == {"hostname", "port", "username", "password", "db_name"}
    for name, value in settings.items():
        assert isinstance(value, dict) and set(value) == {"env"}, f"{name} must be read from an env var, got {value!r}"
        assert value["env"].startswith("DAGSTER_PG_"), name


def test_the_instance_is_postgres_not_sqlite(postgres_home: PostgresHome) -> None:
    with DagsterInstance.get() as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert not isinstance(instance.event_log_storage, SqliteEventLogStorage)
        assert instance.event_log_storage.supports_global_concurrency_limits
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
    # The tables were created in the database the environment named, not elsewhere.
    rows = postgres_home.server.query(
        postgres_home.database, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
    )
    tables = {row[0] for row in rows}
    assert {"runs", "event_logs", "asset_keys", "concurrency_limits"} <= tables


def test_a_real_run_is_stored_in_postgres_and_reads_back(
    postgres_home: PostgresHome, tmp_path: Path, small_landing_root: Path
) -> None:
    pipeline = make_pipeline(tmp_path, small_landing_root)
    with DagsterInstance.get() as instance:
        run = materialize_range(pipeline.defs, DIMENSIONS_JOB, "", "", instance=instance)
    assert run.result.success
    run_id = run.result.run_id

    server, database = postgres_home.server, postgres_home.database
    assert server.query(database, "SELECT pipeline_name, status FROM runs WHERE run_id = %s", (run_id,)) == [
        (DIMENSIONS_JOB, "SUCCESS")
    ]
    rows = server.query(
        database,
        "SELECT asset_key FROM event_logs WHERE run_id = %s AND dagster_event_type = 'ASSET_MATERIALIZATION'",
        (run_id,),
    )
    assert sorted(AssetKey.from_db_string(str(row[0])).to_user_string() for row in rows) == sorted(DIMENSIONS)

    # A second instance from the same config (what the webserver or another pod does) sees it all.
    with DagsterInstance.get() as reader:
        stored = reader.get_run_by_id(run_id)
        assert stored is not None and stored.status == DagsterRunStatus.SUCCESS
        for name in DIMENSIONS:
            latest = reader.get_latest_materialization_event(AssetKey(name))
            assert latest is not None and latest.run_id == run_id, name
    assert pipeline.store.read("raw_airlines").height > 0


def test_pool_limits_are_stored_in_postgres(postgres_home: PostgresHome) -> None:
    with DagsterInstance.get() as instance:
        stored = apply_pool_limits(instance)
        again = apply_pool_limits(instance)  # idempotent: a redeploy sets the same limits
    assert stored == again == {limit.pool: limit.limit for limit in POOL_LIMITS}
    rows = postgres_home.server.query(postgres_home.database, 'SELECT concurrency_key, "limit" FROM concurrency_limits')
    assert dict(rows) == stored


def test_a_full_lake_pool_holds_a_run_until_a_slot_frees(
    postgres_home: PostgresHome, tmp_path: Path, small_landing_root: Path
) -> None:
    """The lake pool at 1 with its slot held by another run: our run waits (no write), then runs."""
    pipeline = make_pipeline(tmp_path, small_landing_root)
    holder = "another-backfill-run"
    seen_blocked: list[str] = []

    with DagsterInstance.get() as instance:
        storage = instance.event_log_storage
        storage.set_concurrency_slots(LAKE_WRITES_POOL, 1)
        assert storage.claim_concurrency_slot(LAKE_WRITES_POOL, holder, "raw_flights").is_claimed

        def release_when_blocked() -> None:
            # Whatever happens, the slot is freed so the run cannot hang the suite.
            deadline = time.monotonic() + 60
            try:
                while time.monotonic() < deadline and not seen_blocked:
                    for record in instance.get_run_records():
                        for entry in instance.all_logs(record.dagster_run.run_id):
                            if entry.user_message.startswith(f"Step blocked by limit for pool {LAKE_WRITES_POOL}"):
                                # Nothing may have been written while the slot was held elsewhere.
                                written = instance.all_logs(record.dagster_run.run_id)
                                if not any(e.dagster_event and e.dagster_event.is_step_materialization for e in written):
                                    seen_blocked.append(entry.step_key or "")
                    time.sleep(0.2)
            finally:
                storage.free_concurrency_slots_for_run(holder)

        releaser = threading.Thread(target=release_when_blocked)
        releaser.start()
        try:
            run = materialize_range(pipeline.defs, DIMENSIONS_JOB, "", "", instance=instance)
        finally:
            releaser.join()
        assert seen_blocked, "the run never reported waiting for the lake_writes pool"
        assert run.result.success
        assert storage.get_concurrency_info(LAKE_WRITES_POOL).active_slot_count == 0  # all slots returned
