"""Command-line verbs: backfill, SQL over the lake, check summaries, the feature server, local Redis,
model traffic, injected skew and the monitors."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime

from dagster import DagsterInstance

from feature_pipelines.monitoring.cli import add_monitoring_parsers
from feature_pipelines.serving.cli import add_redis_parsers, add_serve_parser
from feature_pipelines.settings import Settings
from feature_pipelines.timeutil import require_utc, utc_now


def _parse_instant(text: str) -> datetime:
    return require_utc(datetime.fromisoformat(text), f"instant {text!r}")


def cmd_backfill(args: argparse.Namespace) -> int:
    from feature_pipelines.definitions import defs
    from feature_pipelines.orchestration.runs import default_demo_window, materialize_window
    from feature_pipelines.settings import load_settings

    settings = load_settings()
    start, end = default_demo_window(settings, utc_now(), args.days)
    if args.start:
        start = _parse_instant(args.start)
    if args.end:
        end = _parse_instant(args.end)
    print(f"backfilling [{start.isoformat()}, {end.isoformat()}) into {settings.lake_root}", flush=True)
    began = time.perf_counter()
    runs = materialize_window(defs, settings, start, end, instance=DagsterInstance.get(), raise_on_error=False)
    for run in runs:
        status = "ok" if run.result.success else "FAILED"
        scope = f"partitions {run.first_partition} .. {run.last_partition}" if run.first_partition else "whole tables"
        print(f"  {run.job_name}: {scope}: {status} (run {run.result.run_id})")
    print(f"backfill took {time.perf_counter() - began:.1f} s")
    return 0 if runs and all(run.result.success for run in runs) else 1


def cmd_sql(args: argparse.Namespace) -> int:
    from feature_pipelines.offline.sql import query_lake
    from feature_pipelines.orchestration.resources_by_env import lake_for
    from feature_pipelines.settings import load_settings

    settings = load_settings()
    print(query_lake(lake_for(settings).store(), args.query, lake_table_names(settings)))
    return 0


def lake_table_names(settings: Settings) -> list[str]:
    """Every table the platform writes: the assets' own tables and the internal ones."""
    from feature_pipelines.definitions import build_definitions
    from feature_pipelines.orchestration.monitoring_assets import MONITORING_TABLES
    from feature_pipelines.quality.ledger import LEDGER_TABLE
    from feature_pipelines.serving.request_log import FEATURE_LOG_TABLE

    assets = [spec.key.to_user_string() for spec in build_definitions(settings).resolve_all_asset_specs()]
    return [*assets, LEDGER_TABLE, FEATURE_LOG_TABLE, *MONITORING_TABLES]


def cmd_checks(args: argparse.Namespace) -> int:
    """Each table's last run's check outcomes from the quality ledger; exit 1 on a blocking failure."""
    import polars as pl

    from feature_pipelines.orchestration.resources_by_env import lake_for
    from feature_pipelines.quality.ledger import QualityLedger
    from feature_pipelines.settings import load_settings

    outcomes = QualityLedger(lake_for(load_settings()).store()).last_runs()
    if outcomes.height == 0:
        print("no check outcomes recorded yet")
        return 0
    summary = (
        outcomes.group_by("table", "run_id", "check_name", "blocking")
        .agg(pl.len().alias("partitions"), (~pl.col("passed")).sum().alias("failed"), pl.col("message").filter(~pl.col("passed")).first().alias("first_failure"))
        .sort("table", "check_name")
    )
    with pl.Config(tbl_rows=100, fmt_str_lengths=160, tbl_width_chars=240):
        print(summary)
    return 1 if summary.filter(pl.col("blocking") & (pl.col("failed") > 0)).height else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="feature-pipelines", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)
    backfill = verbs.add_parser("backfill", help="materialise raw and feature tables over a range, one run per grain")
    backfill.add_argument("--days", type=int, default=14, help="days before the last closed hour (default 14)")
    backfill.add_argument("--start", help="ISO instant with offset, e.g. 2013-01-01T00:00+00:00")
    backfill.add_argument("--end", help="ISO instant with offset (exclusive)")
    backfill.set_defaults(handler=cmd_backfill)
    sql = verbs.add_parser("sql", help="run SQL (DuckDB) over every Delta table in the lake")
    sql.add_argument("query")
    sql.set_defaults(handler=cmd_sql)
    checks = verbs.add_parser("checks", help="summarise each table's last checked run (exit 1 if a blocking check failed)")
    checks.set_defaults(handler=cmd_checks)
    add_serve_parser(verbs)
    add_redis_parsers(verbs)
    add_monitoring_parsers(verbs)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
