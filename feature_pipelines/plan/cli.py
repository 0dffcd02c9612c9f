"""The plan verb: what a change to the feature definitions does before it ships.

    feature-pipelines plan [--partitions N]   against the definitions that produced the lake's tables
    feature-pipelines plan --check            against features.lock.json, no lake (the test suite runs it)
    feature-pipelines plan --update-lock      rewrite the lock once every breaking change is declared

Exit 1 when a breaking change is not declared in features.breaking.toml; `--check` also when the
lock is out of date.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.features.spec import FeatureView
from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.plan.lock import DECLARATIONS_PATH, LOCK_PATH, read_declarations, read_lock, write_lock
from feature_pipelines.plan.planner import lake_baseline, lock_baseline, plan_definitions, with_lake_effects
from feature_pipelines.plan.record import records_of
from feature_pipelines.plan.report import plan_text

DEFAULT_PARTITIONS = 3


def working_views(catalog: str | None) -> dict[str, FeatureView]:
    """The working tree's views, with those of `catalog` ("module:attribute", a mapping of views by
    name such as the shadow candidates) put in their place."""
    views = dict(FEATURE_VIEWS)
    if catalog:
        module, _, attribute = catalog.partition(":")
        replacing: Mapping[str, FeatureView] = getattr(importlib.import_module(module), attribute)
        views.update(replacing)
    return views


def run_plan(
    *, check: bool = False, update_lock: bool = False, partitions: int = DEFAULT_PARTITIONS, catalog: str | None = None,
    lock_path: Path = LOCK_PATH, declarations_path: Path = DECLARATIONS_PATH, store: DeltaStore | None = None,
) -> int:
    """The verb's work; `store` (a DeltaStore) is the lake for a plan against it. Returns the exit code."""
    views = working_views(catalog)
    lock = read_lock(lock_path) if (check or lock_path.exists()) else {}
    declarations = read_declarations(declarations_path)
    if check or update_lock:
        plan = plan_definitions(lock_baseline(lock), views, declarations)
        print(plan_text(plan, against=f"the lock ({lock_path.name})"))
        if plan.undeclared:
            print(f"plan: {len(plan.undeclared)} breaking change(s) not declared in {declarations_path.name}")
            return 1
        if update_lock:
            write_lock(records_of(views), lock_path)
            print(f"plan: wrote {lock_path} ({len(views)} views)")
            return 0
        if plan.views:
            print(f"plan: {lock_path.name} is out of date; run `feature-pipelines plan --update-lock` and commit it")
            return 1
        return 0
    if store is None:
        raise ValueError("a plan against the lake needs its store")
    plan = plan_definitions(lake_baseline(store, lock, list(views)), views, declarations)
    plan = with_lake_effects(plan, store, views, partitions=partitions)
    print(plan_text(plan, against="the definitions that produced the lake's tables"))
    return 1 if plan.undeclared else 0


def cmd_plan(args: argparse.Namespace) -> int:
    store = None
    if not (args.check or args.update_lock):
        from feature_pipelines.orchestration.resources_by_env import lake_for
        from feature_pipelines.settings import load_settings

        store = lake_for(load_settings()).store()
    return run_plan(check=args.check, update_lock=args.update_lock, partitions=args.partitions, catalog=args.catalog,
                    lock_path=Path(args.lock), declarations_path=Path(args.declarations), store=store)


def add_plan_parser(verbs: Any) -> None:
    plan = verbs.add_parser("plan", help="what a change to the feature definitions does before it ships")
    mode = plan.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="compare with features.lock.json only (no lake); CI runs it")
    mode.add_argument("--update-lock", action="store_true", help="rewrite the lock (refused while a breaking change is undeclared)")
    plan.add_argument("--partitions", type=int, default=DEFAULT_PARTITIONS,
                      help=f"last partitions of each changed table to recompute (default {DEFAULT_PARTITIONS})")
    plan.add_argument("--catalog", help="plan these views instead of the working tree's, as module:attribute "
                      "(e.g. feature_pipelines.features.candidates:CANDIDATE_VIEWS)")
    plan.add_argument("--lock", default=str(LOCK_PATH), help="the lock file (default: features.lock.json at the repo root)")
    plan.add_argument("--declarations", default=str(DECLARATIONS_PATH), help="declared breaking changes (TOML)")
    plan.set_defaults(handler=cmd_plan)
