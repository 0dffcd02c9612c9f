"""Command-line verbs: backfill, SQL over the lake, check summaries, the feature server, local Redis,
the stream consumer, model traffic, injected skew and the monitors."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import polars as pl
from dagster import DagsterInstance

from feature_pipelines.catalog.cli import add_catalog_parser
from feature_pipelines.lake_tables import lake_table_names
from feature_pipelines.monitoring.cli import add_monitoring_parsers
from feature_pipelines.orchestration.clock import parse_instant, read_clock
from feature_pipelines.plan.cli import add_plan_parser
from feature_pipelines.privacy.cli import add_forget_parser
from feature_pipelines.serving.cli import add_redis_parsers, add_serve_parser, redis_target_from_env
from feature_pipelines.streaming.cli import add_stream_parser

if TYPE_CHECKING:
    from dagster import Definitions

    from feature_pipelines.offline.delta_store import DeltaStore
    from feature_pipelines.orchestration.backfill_report import RunOutcome
    from feature_pipelines.orchestration.runs import PlannedRun, RangeRun

# The report modules import the quality gates (Great Expectations, seconds to load), so the
# verbs that need them import them when they run and the other verbs start fast.


QUIET_LOGGERS = ("dagster", "deltalake", "alembic")


@contextmanager
def _quiet_loggers(names: Sequence[str] = QUIET_LOGGERS, level: int = logging.WARNING) -> Iterator[None]:
    """Raise these Python loggers to `level` for the block, then restore them: the backfill's
    console is for the person, and the instance's event log keeps every event for the UI."""
    previous = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(level)
    try:
        yield
    finally:
        for name, old in previous.items():
            logging.getLogger(name).setLevel(old)


class _PlainRuns:
    """Without a terminal (CI, pipes): one plain line per finished run, no escape codes."""

    def __enter__(self) -> _PlainRuns:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def on_run(self, planned: PlannedRun, run: RangeRun) -> RunOutcome:
        from feature_pipelines.orchestration.backfill_report import outcome_of, run_line

        outcome = outcome_of(planned, run)
        print(f"  {run_line(outcome)}", flush=True)
        return outcome


class _ProgressBars:
    """On a terminal: one rich progress bar per job over its partitions, advanced per run."""

    def __init__(self, plan: Sequence[PlannedRun]) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from feature_pipelines.orchestration.backfill_report import partitions_by_job

        self._plan = list(plan)
        self._done = 0
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("partitions"),
            TimeElapsedColumn(), console=Console(file=sys.stdout),
        )
        # Each bar's clock starts with the job's first run, so the elapsed column is the job's own.
        self._tasks = {job: self._progress.add_task(job, total=total, start=False)
                       for job, total in partitions_by_job(self._plan).items()}
        self._held: dict[str, int] = {}

    def __enter__(self) -> _ProgressBars:
        self._progress.__enter__()
        if self._plan:
            self._progress.start_task(self._tasks[self._plan[0].job_name])
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(None, None, None)

    def on_run(self, planned: PlannedRun, run: RangeRun) -> RunOutcome:
        from feature_pipelines.orchestration.backfill_report import outcome_of

        outcome = outcome_of(planned, run)
        task = self._tasks[planned.job_name]
        self._progress.advance(task, planned.partitions)
        if not outcome.success:
            self._held[planned.job_name] = self._held.get(planned.job_name, 0) + max(1, len(outcome.held_back_partitions()))
            self._progress.update(task, description=f"{planned.job_name} [red]({self._held[planned.job_name]} held back or failed)[/red]")
        self._done += 1
        following = self._plan[self._done] if self._done < len(self._plan) else None
        if following is None or following.job_name != planned.job_name:
            self._progress.stop_task(task)
            if following is not None:
                self._progress.start_task(self._tasks[following.job_name])
        return outcome


def cmd_backfill(args: argparse.Namespace) -> int:
    """Backfill the window on one clock, showing progress per job, then say what was written,
    what was held back and why, and where to look; exit 1 when any run failed."""
    from feature_pipelines.definitions import build_definitions
    from feature_pipelines.orchestration.backfill_report import summary_text
    from feature_pipelines.orchestration.concurrency import release_slots_of_ended_runs
    from feature_pipelines.orchestration.resources_by_env import lake_for
    from feature_pipelines.orchestration.runs import default_demo_window, materialize_window, plan_window
    from feature_pipelines.quality.quarantine import Quarantine
    from feature_pipelines.settings import load_settings

    settings = load_settings()
    defs = build_definitions(settings)
    clock = read_clock()  # once: every run of the backfill computes up to this same instant
    start, end = default_demo_window(settings, clock, args.days)
    try:
        start = parse_instant(args.start, "--start") if args.start else start
        end = parse_instant(args.end, "--end") if args.end else end
    except ValueError as error:
        print(f"feature-pipelines backfill: {error}", file=sys.stderr)
        return 2
    chunk = args.chunk if args.chunk > 0 else None
    released = release_slots_of_ended_runs(DagsterInstance.get())
    if released:
        print(f"released the pool slots of {len(released)} run(s) that ended without freeing them "
              f"(killed mid-step): {', '.join(r[:8] for r in released)}", flush=True)
    plan = plan_window(settings, start, end, chunk=chunk, now=clock)
    print(f"backfilling ({start.isoformat()}, {end.isoformat()}] into {settings.lake_root}: "
          f"{len(plan)} runs of at most {chunk or 'all'} partitions", flush=True)
    display = _ProgressBars(plan) if sys.stdout.isatty() else _PlainRuns()
    outcomes: list[RunOutcome] = []
    began = time.perf_counter()
    with _quiet_loggers(), display:
        materialize_window(
            defs, settings, start, end, instance=DagsterInstance.get(), now=clock, raise_on_error=False,
            chunk=chunk, log_level="CRITICAL", on_run=lambda planned, run: outcomes.append(display.on_run(planned, run)),
        )
    elapsed = time.perf_counter() - began
    store = lake_for(settings).store()
    quarantine = Quarantine(store)
    print(summary_text(plan, outcomes, quarantine.summary(lake_table_names()), quarantine.files(),
                       elapsed_seconds=elapsed), flush=True)
    fitted = _fit_unfitted_statistics(defs, store)
    ok = outcomes and all(o.success for o in outcomes) and len(outcomes) == len(plan)
    return 0 if ok and fitted else 1


def _fit_unfitted_statistics(defs: Definitions, store: DeltaStore) -> bool:
    """Fit the statistics a feature service pins where that version does not exist yet (the first
    backfill, a changed service), so the server can serve it; one line each. False if a fit failed."""
    from dagster import materialize

    from feature_pipelines.features.services import FEATURE_SERVICES
    from feature_pipelines.orchestration.statistics_assets import statistics_asset_name, unfitted_services
    from feature_pipelines.training.spec import FLIGHT_DELAY_TRAINING_SET

    if not store.exists(FLIGHT_DELAY_TRAINING_SET.name):
        return True
    ok = True
    for service in unfitted_services(store, FEATURE_SERVICES.values()):
        name = statistics_asset_name(service)
        with _quiet_loggers():
            result = materialize([defs.resolve_assets_def(name)], instance=DagsterInstance.get(), raise_on_error=False,
                                 run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}})
        if result.success:
            print(f"fitted statistics version {service.statistics_version} of feature service {service.name!r} "
                  f"(version {service.version}) on {FLIGHT_DELAY_TRAINING_SET.name!r}", flush=True)
            continue
        ok = False
        failure = next((e for e in result.all_events if e.event_type_value == "STEP_FAILURE"), None)
        reason = failure.event_specific_data.error.message.strip().splitlines()[-1] if failure else "the run failed"
        print(f"could not fit the statistics of feature service {service.name!r}: {reason}", flush=True)
    return ok


def cmd_quarantine(args: argparse.Namespace) -> int:
    """List what the gates hold back: rows by table, partition and rule with examples, and the
    rejected landing files. Informational: exit 0 whatever it holds."""
    from feature_pipelines.orchestration.backfill_report import PARTITIONS_SHOWN, quarantine_text
    from feature_pipelines.orchestration.resources_by_env import lake_for
    from feature_pipelines.quality.quarantine import Quarantine
    from feature_pipelines.settings import load_settings

    settings = load_settings()
    quarantine = Quarantine(lake_for(settings).store())
    tables = [args.table] if args.table else lake_table_names()
    summary = quarantine.summary(tables)
    held = {table: quarantine.rows(table) for table in dict.fromkeys(summary["table"].to_list())} if args.examples > 0 else {}
    files = quarantine.files()
    if args.table:
        # Landing files are recorded under their landing table ("flights"), raw tables are "raw_flights".
        files = files.filter(pl.col("table").is_in([args.table, args.table.removeprefix("raw_")]))
    print(quarantine_text(summary, held, files, examples=args.examples, partitions_shown=None if args.table else PARTITIONS_SHOWN))
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    from feature_pipelines.offline.sql import query_lake
    from feature_pipelines.orchestration.resources_by_env import lake_for
    from feature_pipelines.settings import load_settings

    settings = load_settings()
    print(query_lake(lake_for(settings).store(), args.query, lake_table_names()))
    return 0


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


def cmd_blast_radius(args: argparse.Namespace) -> int:
    """Walk a bad partition (or a day's failed gates and restatements) forward to the feature snapshots,
    publishes, served requests and models it touched; informational: exit 0 whatever it finds."""
    from feature_pipelines.features.catalog import FEATURE_VIEWS
    from feature_pipelines.monitoring.lineage import window_of_key
    from feature_pipelines.orchestration.blast_radius_assets import blast_radius_of
    from feature_pipelines.orchestration.resources_by_env import lake_for
    from feature_pipelines.settings import load_settings

    if (args.table is None) != (args.partition is None) or (args.day is None) == (args.table is None):
        print("feature-pipelines blast-radius: pass --table and --partition, or --day", file=sys.stderr)
        return 2
    day = window_of_key(args.day) if args.day else None
    radius = blast_radius_of(DagsterInstance.get(), lake_for(load_settings()).store(), FEATURE_VIEWS,
                             day=(day.start, day.end) if day else None, table=args.table, partition=args.partition)
    print(radius.to_json() if args.json else radius.summary())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="feature-pipelines", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)
    backfill = verbs.add_parser("backfill", help="materialise raw and feature tables over a range, one run per grain")
    backfill.add_argument("--days", type=int, default=14, help="days before the last closed hour (default 14)")
    backfill.add_argument("--start", help="ISO instant with offset, e.g. 2013-01-01T00:00+00:00")
    backfill.add_argument("--end", help="ISO instant with offset (exclusive)")
    backfill.add_argument("--chunk", type=int, default=48,
                          help="partitions (days) per run (default 48); 0 runs each job's range at once")
    backfill.set_defaults(handler=cmd_backfill)
    quarantine = verbs.add_parser("quarantine", help="list the rows and landing files the quality gates hold back, and why")
    quarantine.add_argument("--table", help="one table (e.g. raw_flights); lists every partition")
    quarantine.add_argument("--examples", type=int, default=3, help="example rows per table and rule (default 3)")
    quarantine.set_defaults(handler=cmd_quarantine)
    sql = verbs.add_parser("sql", help="run SQL (DuckDB) over every Delta table in the lake")
    sql.add_argument("query")
    sql.set_defaults(handler=cmd_sql)
    checks = verbs.add_parser("checks", help="summarise each table's last checked run (exit 1 if a blocking check failed)")
    checks.set_defaults(handler=cmd_checks)
    blast = verbs.add_parser("blast-radius", help="from a bad partition to the served requests and models it touched")
    blast.add_argument("--table", help="a raw or feature table, e.g. raw_flights")
    blast.add_argument("--partition", help="its hour (2013-01-05-10:00) or day (2013-01-05)")
    blast.add_argument("--day", help="every failed gate and restatement of the day's partitions (YYYY-MM-DD)")
    blast.add_argument("--json", action="store_true", help="the whole walk as JSON")
    blast.set_defaults(handler=cmd_blast_radius)
    add_serve_parser(verbs)
    add_redis_parsers(verbs)
    add_stream_parser(verbs, redis_target_from_env)
    add_monitoring_parsers(verbs)
    add_plan_parser(verbs)
    add_catalog_parser(verbs)
    add_forget_parser(verbs)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
