"""The plan verb on the real catalog and lock (the CI check), and on a small real lake: the 2013
departures of Jan 1-8 in a raw Delta table, `route_delay_stats` written by the real compute code
with its definition recorded in the commit, and a training set read from it."""

from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

from feature_pipelines.compute.snapshots import snapshot_features
from feature_pipelines.features.candidates import CANDIDATE_VIEWS
from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.features.spec import FeatureView, NullPolicy
from feature_pipelines.names import EVENT_TIMESTAMP
from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.plan.cli import run_plan
from feature_pipelines.plan.diff import ChangeKind
from feature_pipelines.plan.lock import LOCK_PATH, read_declarations, read_lock
from feature_pipelines.plan.planner import Plan, lake_baseline, plan_definitions, recorded_definition, with_lake_effects
from feature_pipelines.plan.record import ViewRecord, commit_metadata_of, definition_metadata
from feature_pipelines.sources import nycflights
from feature_pipelines.training.spec import FLIGHT_DELAY_TRAINING_SET, PREDICTION_TIMESTAMP
from feature_pipelines_tests.conftest import utc

ROUTES = FEATURE_VIEWS["route_delay_stats"]
RAW_START, SNAPSHOTS_START, END = utc(2013, 1, 1), utc(2013, 1, 2), utc(2013, 1, 8)
KEYS = [*ROUTES.entity_keys, EVENT_TIMESTAMP]


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> DeltaStore:
    store = DeltaStore(root=str(tmp_path_factory.mktemp("plan") / "lake"))
    flights = nycflights.flights().filter(pl.col("dep_known_at").is_between(RAW_START, END, closed="left"))
    store.write("raw_flights", flights, time_slice=None)
    table = snapshot_features(flights, ROUTES, start=SNAPSHOTS_START, end=END)
    # The commit metadata the feature asset's writers record (orchestration/feature_assets.py).
    store.write(ROUTES.name, table, time_slice=None, commit_metadata=commit_metadata_of(definition_metadata(ROUTES)))
    training = table.filter(pl.col(EVENT_TIMESTAMP) < utc(2013, 1, 6)).rename({EVENT_TIMESTAMP: PREDICTION_TIMESTAMP})
    store.write(FLIGHT_DELAY_TRAINING_SET.name, training, time_slice=None)
    return store


def _views(route_view: FeatureView) -> dict[str, FeatureView]:
    return {**FEATURE_VIEWS, ROUTES.name: route_view}


def _plan(store: DeltaStore, route_view: FeatureView, declarations_path: Path | None = None) -> Plan:
    views = _views(route_view)
    declarations = read_declarations(declarations_path) if declarations_path else []
    plan = plan_definitions(lake_baseline(store, read_lock(), list(views)), views, declarations)
    return with_lake_effects(plan, store, views, partitions=2)


def _with_feature(view: FeatureView, feature: str, /, **changes: object) -> FeatureView:
    return replace(view, features=tuple(replace(f, **changes) if f.name == feature else f for f in view.features))


def _window_values(store: DeltaStore, rows: pl.DataFrame, window: timedelta) -> pl.DataFrame:
    """Per stored row, independently of compute/: the non-null delays and the null ones of the
    route's departures known in [t - window, t)."""
    events = store.read("raw_flights").select("origin", "dest", "dep_known_at", "dep_delay")
    return (
        rows.select(KEYS).join(events, on=["origin", "dest"], how="left")
        .filter((pl.col("dep_known_at") >= pl.col(EVENT_TIMESTAMP) - window) & (pl.col("dep_known_at") < pl.col(EVENT_TIMESTAMP)))
        .group_by(KEYS).agg(pl.col("dep_delay").mean().alias("mean"), pl.col("dep_delay").null_count().alias("nulls"))
    )


def test_the_working_tree_matches_the_committed_lock() -> None:
    """What CI enforces: `plan --check` passes on the real catalog, lock and declarations."""
    assert run_plan(check=True) == 0


def test_the_table_records_the_definition_that_produced_it(lake: DeltaStore) -> None:
    record, version = recorded_definition(lake, ROUTES.name)  # type: ignore[misc]
    assert record == ViewRecord.of(ROUTES) and version == 1
    assert record.fingerprint == read_lock()[ROUTES.name].fingerprint
    assert _plan(lake, ROUTES).views == ()


def test_a_changed_null_policy_shows_its_share_of_changed_values_and_breaks_a_pinned_service(
    lake: DeltaStore, tmp_path: Path,
) -> None:
    candidate = _with_feature(CANDIDATE_VIEWS[ROUTES.name], "route_dep_delay_p90_24h", null_policy=NullPolicy.PROPAGATE)
    plan = _plan(lake, candidate)
    mean = plan.feature("route_delay_stats:route_dep_delay_mean_24h")
    assert mean.change.kinds == {ChangeKind.NULL_POLICY}
    start, end = plan.compared[ROUTES.name]
    assert (start, end) == (utc(2013, 1, 6), END)
    stored = lake.read(ROUTES.name).filter(pl.col(EVENT_TIMESTAMP) > start)
    truth = _window_values(lake, stored, timedelta(hours=24))
    # A propagating mean is null exactly where the window holds a cancelled departure and the stored mean was not null.
    expected = truth.filter((pl.col("nulls") > 0) & pl.col("mean").is_not_null()).height
    assert expected > 0
    impact = mean.impact
    assert impact is not None
    assert (impact.changed, impact.null_changes, impact.rows, impact.max_abs_diff) == (expected, expected, stored.height, None)
    assert impact.share_changed == pytest.approx(expected / stored.height)
    assert mean.drift is not None and mean.drift.training_set == FLIGHT_DELAY_TRAINING_SET.name
    assert mean.drift.recomputed.null_share_current > mean.drift.stored.null_share_current
    assert mean.consumers.services == ("flight_delay_v1", "flight_delay_v2")
    assert mean.breaking and "flight_delay_v2" in mean.breaking[0] and mean.undeclared
    # The same change to a feature no pinned service reads is not breaking, yet its values move.
    p90 = plan.feature("route_delay_stats:route_dep_delay_p90_24h")
    assert p90.breaking == () and p90.impact is not None and p90.impact.changed > 0
    declarations = tmp_path / "breaking.toml"
    declarations.write_text(
        f'[[breaking]]\nfeature = "route_delay_stats:route_dep_delay_mean_24h"\nfrom = "{mean.from_fingerprint}"\n'
        'reason = "propagate cancellations"\ndeclared_by = "pricing-ml"\n'
    )
    assert _plan(lake, candidate, declarations).undeclared == ()


def test_a_changed_window_is_a_rename_with_the_values_of_the_new_window(lake: DeltaStore) -> None:
    wider = _with_feature(ROUTES, "route_dep_delay_mean_24h", name="route_dep_delay_mean_2d", window="2d")
    plan = _plan(lake, wider)
    change = plan.feature("route_delay_stats:route_dep_delay_mean_2d")
    assert change.change.kinds == {ChangeKind.RENAMED, ChangeKind.WINDOW}
    assert change.change.old_name == "route_dep_delay_mean_24h"
    stored = lake.read(ROUTES.name).filter(pl.col(EVENT_TIMESTAMP) > plan.compared[ROUTES.name][0])
    day = _window_values(lake, stored, timedelta(hours=24)).rename({"mean": "day"})
    two = _window_values(lake, stored, timedelta(hours=48)).rename({"mean": "two"})
    both = two.join(day.select(*KEYS, "day"), on=KEYS, how="left")
    expected = both.filter(
        (pl.col("day").is_null() != pl.col("two").is_null()) | ((pl.col("day") - pl.col("two")).abs() > 1e-9)
    )
    impact = change.impact
    assert impact is not None and impact.changed == expected.height > 0
    assert impact.share_changed == pytest.approx(expected.height / stored.height)
    assert impact.max_abs_diff == pytest.approx((expected["day"] - expected["two"]).abs().max())
    assert change.breaking and "renamed from 'route_dep_delay_mean_24h'" in change.breaking[0]


def test_a_renamed_feature_keeps_its_values_and_breaks_its_readers(lake: DeltaStore, tmp_path: Path) -> None:
    renamed = _with_feature(ROUTES, "route_cancel_rate_7d", name="route_cancelled_share_7d")
    plan = _plan(lake, renamed)
    change = plan.feature("route_delay_stats:route_cancelled_share_7d")
    assert change.change.kinds == {ChangeKind.RENAMED}
    assert change.impact is not None and (change.impact.changed, change.impact.share_changed) == (0, 0.0)
    assert change.consumers.services == ("flight_delay_v1", "flight_delay_v2") and change.undeclared
    assert [f.change.reference for f in plan.features] == ["route_delay_stats:route_cancelled_share_7d"]


def test_check_fails_on_an_undeclared_breaking_change_and_the_lock_moves_once_declared(tmp_path: Path) -> None:
    lock = tmp_path / "features.lock.json"
    shutil.copy(LOCK_PATH, lock)
    declarations = tmp_path / "features.breaking.toml"
    catalog = "feature_pipelines.features.candidates:CANDIDATE_VIEWS"
    options = {"catalog": catalog, "lock_path": lock, "declarations_path": declarations}
    assert run_plan(check=True, **options) == 1
    assert run_plan(update_lock=True, **options) == 1 and lock.read_text() == LOCK_PATH.read_text()
    fingerprint = read_lock(lock)[ROUTES.name].fingerprint
    declarations.write_text(f'[[breaking]]\nfeature = "route_delay_stats:route_dep_delay_mean_24h"\nfrom = "{fingerprint}"\n'
                            'reason = "propagate cancellations"\ndeclared_by = "pricing-ml"\n')
    assert run_plan(check=True, **options) == 1  # declared, but the lock is out of date
    assert run_plan(update_lock=True, **options) == 0
    assert run_plan(check=True, **options) == 0
    assert read_lock(lock)[ROUTES.name] == ViewRecord.of(CANDIDATE_VIEWS[ROUTES.name])
