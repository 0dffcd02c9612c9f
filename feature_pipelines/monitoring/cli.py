"""Monitoring verbs: replay a day of model traffic, inject a skew scenario, run the day's monitors.

    feature-pipelines traffic [--hours 24]      the next departures through the feature server
    feature-pipelines inject-skew SCENARIO      write a faulty serving path's log for today
    feature-pipelines monitor [--day D]         skew, drift and shadow reports of a day (Dagster run)
"""

from __future__ import annotations

import argparse
import sys
import warnings
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import polars as pl
import redis

from feature_pipelines.monitoring.scenarios import SCENARIOS

if TYPE_CHECKING:  # the stream's modules import the raw rules and Great Expectations: only `traffic` pays for them
    from feature_pipelines.settings import Settings
    from feature_pipelines.streaming.traffic import StreamFeed
from feature_pipelines.timeutil import floor_to, require_utc, utc_now

DAY = timedelta(days=1)
LIVE_VIEW = "aircraft_utilisation"  # the streaming view `traffic --live` follows


ENTITY_COLUMNS = ["origin", "dest", "carrier", "tailnum"]
FLIGHT_COLUMNS = ["flight_number", "scheduled_departure_at"]  # --score: the outcome keys of each prediction


def upcoming_departures(flights: pl.LazyFrame, source_now: datetime, hours: int, *, with_flight: bool = False) -> pl.DataFrame:
    """Flights scheduled to leave in the next `hours` (source time): what a delay model is asked about
    (with `with_flight`, also which flight each row is: its number and scheduled departure)."""
    return (
        flights.filter(
            pl.col("scheduled_departure_at").is_between(source_now, source_now + timedelta(hours=hours), closed="left"),
            pl.col("tailnum").is_not_null(),
        )
        .select(*ENTITY_COLUMNS, *(FLIGHT_COLUMNS if with_flight else []))
        .collect()
    )


def _predict_body(batch: pl.DataFrame, service: str, offset: timedelta) -> dict[str, Any]:
    """A /predict body: the entity columns, and each flight's keys with its departure in lake (present) time."""
    departures = [(moment + offset).isoformat() for moment in batch["scheduled_departure_at"]]
    return {"feature_service": service, "entities": batch.select(ENTITY_COLUMNS).to_dict(as_series=False),
            "outcome_keys": {"flight_number": batch["flight_number"].to_list(), "scheduled_departure_at": departures}}


def cmd_traffic(args: argparse.Namespace) -> int:
    """Score the next departures through the real feature server app (in process, request log on)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
        from fastapi.testclient import TestClient

    from feature_pipelines.models.catalog import FLIGHT_DELAY_MODEL
    from feature_pipelines.names import PREDICTIONS_TABLE
    from feature_pipelines.resources import LandingResource
    from feature_pipelines.serving.cli import app_from_env
    from feature_pipelines.settings import load_settings
    from feature_pipelines.streaming.follow import StreamNotConsumedError
    from feature_pipelines.streaming.traffic import catch_up
    from feature_pipelines.training.spec import FLIGHT_DELAY_TRAINING_SET

    settings = load_settings()
    now = utc_now()
    flights = LandingResource(root=settings.landing_root).zone().scan("flights")
    entities = upcoming_departures(flights, settings.replay.to_source(now), args.hours, with_flight=args.score)
    feed = _stream_feed(settings)
    try:  # the server reads streaming views from the stream: feed it up to now first
        print(catch_up(feed, now), flush=True)
    except StreamNotConsumedError as error:
        print(f"traffic: {error}", file=sys.stderr)
        return 1
    sent = failed = 0
    score = args.score
    with TestClient(app_from_env()) as client:
        for start in range(0, entities.height, args.batch):
            # Departures that became known meanwhile are pushed first, as a live feed pushes them.
            catch_up(feed, utc_now())
            batch = entities.slice(start, args.batch)
            response = None
            if score:  # scored by the service's latest model; the vector is logged as by /get-online-features
                response = client.post("/predict", json=_predict_body(batch, FLIGHT_DELAY_MODEL.service.name, settings.replay.offset))
                if response.status_code == 503 and "no model" in response.text:
                    score = False
                    print(f"traffic: not scored: {response.json()['detail']}; serving the features alone", file=sys.stderr)
                    response = None
            if response is None:
                features = {"features": list(FLIGHT_DELAY_TRAINING_SET.features), "entities": batch.select(ENTITY_COLUMNS).to_dict(as_series=False)}
                response = client.post("/get-online-features", json=features)
            sent += 1
            if response.status_code != 200:
                failed += 1
                if failed == 1:
                    print(f"traffic: request {sent} got {response.status_code}: {response.text[:300]}", file=sys.stderr)
        if failed > 1:
            print(f"traffic: {failed} of {sent} requests failed (the first one above)", file=sys.stderr)
        print(f"traffic: {'scored' if score else 'served the features of'} {entities.height} departures of the next "
              f"{args.hours}h in {sent} requests ({failed} failed); served values logged to "
              f"{settings.lake_root}/_serving/feature_log"
              + (f", predictions to {settings.lake_root}/{PREDICTIONS_TABLE}" if score else ""), flush=True)
        if args.live > 0:
            _follow(feed, client, args)
    return 1 if failed else 0


def _stream_feed(settings: Settings) -> StreamFeed:
    from feature_pipelines.features.catalog import FEATURE_VIEWS
    from feature_pipelines.serving.cli import redis_target_from_env
    from feature_pipelines.streaming.keys import stream_keys
    from feature_pipelines.streaming.traffic import StreamFeed

    target = redis_target_from_env()
    return StreamFeed(target.client(), stream_keys(target.validated_prefix()), settings, FEATURE_VIEWS)


def _follow(feed: StreamFeed, client: Any, args: argparse.Namespace) -> None:
    """`--live`: push the aircraft view's departures as they happen and print each served change."""
    from feature_pipelines.streaming.follow import FollowOptions
    from feature_pipelines.streaming.traffic import follow_live, live_summary

    view = feed.views[LIVE_VIEW]
    feature = view.features[0].name
    names = list(view.entity_keys)

    def served(rows: pl.DataFrame) -> list[Any]:
        body = {"features": [f"{view.name}:{feature}"], "entities": rows.to_dict(as_series=False)}
        response = client.post("/get-online-features", json=body)
        response.raise_for_status()
        return response.json()["results"][len(names)]["values"]

    print(f"live: following {view.source.asset} for {args.live:g} s; each departure's {feature} as served", flush=True)
    options = FollowOptions(seconds=args.live, max_events=args.live_events)
    changes = follow_live(feed, view, feature, served, options, say=lambda line: print(line, flush=True))
    print(live_summary(changes, view), flush=True)


def cmd_inject_skew(args: argparse.Namespace) -> int:
    """Inject one scenario's fault for today (the log's old versions stay readable in Delta)."""
    from feature_pipelines.features.catalog import FEATURE_VIEWS
    from feature_pipelines.monitoring.scenarios import SCENARIOS, InjectionTarget
    from feature_pipelines.orchestration.resources_by_env import lake_for
    from feature_pipelines.serving.cli import redis_target_from_env
    from feature_pipelines.serving.request_log import key_columns_of
    from feature_pipelines.settings import load_settings

    def online_store() -> tuple[redis.Redis, str]:
        target = redis_target_from_env()
        return target.client(), target.validated_prefix()

    settings = load_settings()
    scenario = SCENARIOS[args.scenario]
    key_columns = key_columns_of(list(FEATURE_VIEWS.values()))
    scenario.inject(InjectionTarget(lake_for(settings).store(), FEATURE_VIEWS, key_columns, utc_now(), online_store))
    print(f"inject-skew: {scenario.message}")
    return 0


def check_line(name: str, passed: bool, severity: str, description: str | None) -> str:
    """One check as `monitor` prints it: the whole description (a skew failure names every feature)."""
    state = "passed" if passed else f"FAILED ({severity})"
    return f"  {name}: {state}: {description or ''}"


def cmd_monitor(args: argparse.Namespace) -> int:
    """Run the monitoring job for one day in this Dagster instance; print its checks; 1 on a failure."""
    from dagster import DagsterInstance

    from feature_pipelines.definitions import build_definitions
    from feature_pipelines.orchestration.schedules import MONITORING_JOB
    from feature_pipelines.settings import load_settings

    defs = build_definitions(load_settings())
    day = require_utc(datetime.fromisoformat(args.day), "--day") if args.day else floor_to(utc_now(), DAY)
    result = defs.resolve_job_def(MONITORING_JOB).execute_in_process(
        partition_key=day.strftime("%Y-%m-%d"), instance=DagsterInstance.get(), raise_on_error=False,
        # The event log stays in the instance for the UI; the console gets the checks below.
        run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
    )
    failed = False
    for check in result.get_asset_check_evaluations():
        failed |= not check.passed and check.severity.value == "ERROR"
        print(check_line(f"{check.asset_key.to_user_string()}:{check.check_name}", check.passed, check.severity.value,
                         check.description))
    print(f"monitor: run {result.run_id} for {day:%Y-%m-%d}; reports under the lake's reports directory")
    return 1 if failed or not result.success else 0


def add_monitoring_parsers(verbs: Any) -> None:
    traffic = verbs.add_parser("traffic", help="score the next departures through the feature server (logs served values)")
    traffic.add_argument("--hours", type=int, default=24, help="departures of the next N hours (default 24)")
    traffic.add_argument("--batch", type=int, default=50, help="entity rows per request (default 50)")
    traffic.add_argument("--score", action="store_true",
                         help="POST /predict instead: score each departure with the latest flight_delay_model (predictions logged)")
    traffic.add_argument("--live", type=float, default=0.0, metavar="SECONDS",
                         help="then push departures as they happen for SECONDS, showing each served change")
    traffic.add_argument("--live-events", type=int, default=None, metavar="N", help="stop --live after N entities changed")
    traffic.set_defaults(handler=cmd_traffic)
    inject = verbs.add_parser("inject-skew", help="write a faulty serving path's log for today (demo of the monitors)")
    inject.add_argument("scenario", choices=list(SCENARIOS))
    inject.set_defaults(handler=cmd_inject_skew)
    monitor = verbs.add_parser("monitor", help="run today's (or --day's) skew, drift and shadow reports; exit 1 on an ERROR")
    monitor.add_argument("--day", help="YYYY-MM-DDT00:00+00:00 (default: today, UTC)")
    monitor.set_defaults(handler=cmd_monitor)
