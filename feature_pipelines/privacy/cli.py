"""The `forget` verb: `feature-pipelines forget --entity tailnum=N14228`."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

from feature_pipelines.privacy.entity import UnknownEntityKeyError
from feature_pipelines.privacy.lake_erasure import DEFAULT_FORGET_RETENTION_HOURS


def add_forget_parser(subparsers: Any) -> None:
    forget = subparsers.add_parser(
        "forget",
        help="erase one entity from every table, training set, the request log, the quarantine and Redis, with proof",
        description="Delete an entity's rows (Delta DELETE, then VACUUM), its Redis keys and stream events, record it in "
        "the deletion ledger (_privacy/deletions) so no backfill brings it back, and report which pinned training-set "
        "versions can no longer be rebuilt. Run it while no backfill writes the lake.",
    )
    forget.add_argument("--entity", required=True, help="KEY=VALUE, KEY an entity key of the catalog, e.g. tailnum=N14228")
    forget.add_argument(
        "--retention-hours", type=int, default=DEFAULT_FORGET_RETENTION_HOURS,
        help="VACUUM retention (default 0: the deleted rows' files go now, and with them time travel to every "
        "version before the deletion; a longer retention keeps those versions, and the entity in them, until a later VACUUM)",
    )
    forget.add_argument("--no-redis", action="store_true", help="leave Redis alone (no online store configured)")
    forget.set_defaults(handler=cmd_forget)


def cmd_forget(args: argparse.Namespace) -> int:
    import redis

    from feature_pipelines.features.catalog import FEATURE_VIEWS
    from feature_pipelines.lake_tables import lake_table_names
    from feature_pipelines.online.client import RedisConfigError
    from feature_pipelines.orchestration.resources_by_env import lake_for
    from feature_pipelines.privacy.entity import ForgetTarget
    from feature_pipelines.privacy.forget import LakeScope, forget
    from feature_pipelines.serving.cli import redis_target_from_env
    from feature_pipelines.settings import load_settings
    from feature_pipelines.sources.raw_tables import RAW_TABLES
    from feature_pipelines.training.spec import FLIGHT_DELAY_TRAINING_SET, LABELS_TABLE

    try:
        target = ForgetTarget.parse(args.entity, FEATURE_VIEWS)
    except UnknownEntityKeyError as error:
        print(f"feature-pipelines forget: {error}", file=sys.stderr)
        return 2
    settings = load_settings()
    store = lake_for(settings).store()
    spec = FLIGHT_DELAY_TRAINING_SET
    views_read = [FEATURE_VIEWS[name] for name in spec.view_names]
    reads = {spec.name: [*spec.view_names, LABELS_TABLE, *dict.fromkeys(v.source.asset for v in views_read)]}
    client = None
    prefix = ""
    if not args.no_redis:
        redis_target = redis_target_from_env()
        try:
            client, prefix = redis_target.client(), redis_target.validated_prefix()
            client.ping()
        except (RedisConfigError, redis.RedisError) as error:
            print(f"feature-pipelines forget: the online store: {error} (pass --no-redis to leave Redis alone)", file=sys.stderr)
            return 2
    report = forget(
        store, target, views=FEATURE_VIEWS, scope=LakeScope.of(lake_table_names(), reads), now=datetime.now(UTC),
        retention_hours=args.retention_hours, redis_client=client, online_prefix=prefix,
        raw_stream_tables=tuple(t.name for t in RAW_TABLES if t.time_column),
    )
    print(report.summary())
    return 0 if report.proven else 1
