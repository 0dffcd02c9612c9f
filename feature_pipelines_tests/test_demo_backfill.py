"""The demo's backfill as users run it: on a clock at HH:59:40, then again over the same lake and
instance a little later. Both must succeed with every job ok (real `feature-pipelines backfill`
runs, replay mode, the real first days of 2013, a Dagster instance on disk)."""

from __future__ import annotations

import shutil
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance

from feature_pipelines import cli
from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines_tests.conftest import write_small_landing
from feature_pipelines_tests.orchestration.ledger_view import judged_hours

DEPLOY_YAML = Path(__file__).resolve().parent.parent / "deploy" / "dagster.local.yaml"


def test_the_demo_backfill_runs_again_and_again(empty_online_store: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(DEPLOY_YAML, home / "dagster.yaml")  # the demo's instance, as scripts/demo.sh makes it
    now = datetime.now(timezone.utc)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("FEATURE_PIPELINES_LAKE_ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("FEATURE_PIPELINES_LANDING_ROOT", str(write_small_landing(tmp_path / "landing").root))
    monkeypatch.setenv("FEATURE_PIPELINES_REPLAY_START", date.fromordinal(now.date().toordinal() - 3).isoformat())
    first_clock = (now - timedelta(hours=2)).replace(minute=59, second=40, microsecond=0)
    monkeypatch.setenv("FEATURE_PIPELINES_NOW", first_clock.isoformat())
    assert cli.main(["backfill", "--days", "1"]) == 0, capsys.readouterr().out
    first = capsys.readouterr().out
    assert "held back" not in first.replace("0 held back", ""), first
    assert "DEBUG" not in first

    # A second run over the same lake and instance, an hour later: same data, same verdicts.
    monkeypatch.setenv("FEATURE_PIPELINES_NOW", (first_clock + timedelta(hours=1)).isoformat())
    assert cli.main(["backfill", "--days", "1"]) == 0, capsys.readouterr().out
    with DagsterInstance.get() as instance:
        days = instance.get_materialized_partitions(AssetKey("raw_flights"))
    # Raw tables are days judged hour by hour: the open day is there, and its last hour judged is
    # the second clock's last closed hour.
    last_hour = first_clock.replace(minute=0, second=0)
    assert max(days) == last_hour.strftime("%Y-%m-%d")
    assert max(judged_hours(DeltaStore(str(tmp_path / "lake")), "raw_flights")) == last_hour.strftime("%Y-%m-%d-%H:%M")
