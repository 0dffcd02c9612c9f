"""The stream's parity, as a daily asset with a blocking check: after a day has streamed (or been
replayed through the stream), the values the stream serves at a few thousand random instants of
the day equal, bit for bit, those `features_at` computes offline from the day's raw events."""

import os
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import redis
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    MaterializeResult,
    MetadataValue,
    TimeWindowPartitionsDefinition,
    asset,
)

from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.features.spec import FeatureView, Partitioning
from feature_pipelines.json_values import json_value
from feature_pipelines.offline.delta_store import DeltaStore, TimeSlice
from feature_pipelines.orchestration.monitoring_assets import MONITORING_GROUP
from feature_pipelines.orchestration.partitions import hours_of, partition_window, partitions_for
from feature_pipelines.quality.ledger import QualityLedger
from feature_pipelines.resources import LakeResource, RedisResource
from feature_pipelines.settings import Settings
from feature_pipelines.streaming.keys import StreamKeys, stream_keys
from feature_pipelines.streaming.parity import StreamParityReport, random_instants, streaming_parity
from feature_pipelines.streaming.replay import replay_coverage
from feature_pipelines.timeutil import PartitionWindow

STREAM_PARITY_ASSET = "stream_parity"
STREAM_PARITY_CHECK = "stream_matches_offline_at_instants"
INSTANTS_ENV = "FEATURE_PIPELINES_STREAM_PARITY_INSTANTS"  # instants per view and day
DEFAULT_INSTANTS = 3000

def build_stream_parity_asset(settings: Settings) -> AssetsDefinition:
    """One daily asset for every streaming view of the catalog (its check fails on any mismatch)."""
    views = [view for view in FEATURE_VIEWS.values() if view.streaming is not None]
    days = partitions_for(Partitioning.DAILY, settings, in_progress=True)  # today's open day too, as the monitors

    @asset(
        name=STREAM_PARITY_ASSET,
        description="Per day, the streaming views' values read from the stream's tiles in Redis at "
        "random instants of the day (a tenth on the hour) and the same values computed offline by "
        "`features_at` from the day's raw events in the lake: zero mismatches, floats bitwise equal. "
        "Materialise it after the day has streamed or been replayed through `feature-pipelines stream`.",
        group_name=MONITORING_GROUP,  # judged with the day's other monitors (`monitor`, the daily schedule)
        partitions_def=days,
        deps=sorted({AssetKey(view.source.asset) for view in views}),
        check_specs=[AssetCheckSpec(STREAM_PARITY_CHECK, asset=STREAM_PARITY_ASSET, blocking=True,
                                    description="Online streaming reads equal features_at offline, bit for bit.")],
        kinds={"redis", "polars"},  # reads the tiles and the lake's raw events; writes neither
    )
    def _stream_parity(context: AssetExecutionContext, lake: LakeResource, redis: RedisResource) -> Iterator[Any]:
        window = partition_window(days, context.partition_key)
        store, client = lake.store(), redis.client()
        keys = stream_keys(redis.key_prefix)
        n = int(os.environ.get(INSTANTS_ENV, DEFAULT_INSTANTS))
        reports = []
        spans = {}
        for index, view in enumerate(views):
            known_at = view.source.known_at_column
            start, end = spans[view.name] = comparable_span(client, keys, store, view, window, days)
            if start >= end:
                reports.append(StreamParityReport(view.name, 0))
                continue
            events = store.read(view.source.asset, time_slice=TimeSlice(known_at, start - view.max_window, end))
            day = events.filter(events[known_at] >= start)
            rows = random_instants(view, day, start=start, end=end, n=n, seed=index)
            reports.append(streaming_parity(client, view, events, rows, keys=keys))
        client.close()
        passed = all(r.passed for r in reports)
        # Nothing comparable (the stream was not fed that day, or the lake has none of its hours
        # yet) warns; any mismatch on what both sides know is an error.
        mismatched = any(r.rows and not r.passed for r in reports)
        compared = MetadataValue.json({v: [a.isoformat(), b.isoformat()] for v, (a, b) in spans.items()})
        yield MaterializeResult(metadata={
            "compared_spans": compared,
            "instants": sum(r.rows for r in reports),
            "mismatches": sum(sum(r.mismatches.values()) for r in reports),
        })
        yield AssetCheckResult(
            check_name=STREAM_PARITY_CHECK,
            passed=passed,
            severity=AssetCheckSeverity.ERROR if mismatched or passed else AssetCheckSeverity.WARN,
            description="; ".join(r.message() for r in reports) or "no streaming view",
            metadata={
                "compared_spans": compared,
                "mismatches_by_feature": MetadataValue.json({r.view: r.mismatches for r in reports}),
                "examples": MetadataValue.json(json_value([e for r in reports for e in r.examples])),
            },
        )

    return _stream_parity


def comparable_span(client: redis.Redis, keys: StreamKeys, store: DeltaStore, view: FeatureView, window: PartitionWindow,
                    days: TimeWindowPartitionsDefinition) -> tuple[datetime, datetime]:
    """The instants of the day both sides know completely: the stream, since the replay pushed
    every event from its coverage's start for a whole window (the whole day when no replay's
    coverage is recorded: events pushed by other producers), up to its cursor; and the lake,
    up to the end of the last raw hour of the day its gates judged (an open hour is not there yet)."""
    start, end = window.start, window.end
    coverage = replay_coverage(client, keys, view.source.asset)
    if coverage is not None:
        start, end = max(start, coverage[0] + view.max_window), min(end, coverage[1])
    hours = hours_of(days, [window.key], end)
    judged = QualityLedger(store).judged_partitions(view.source.asset, [h.key for h in hours])
    complete = start
    for hour in hours:
        if hour.key not in judged:
            break
        complete = hour.end
    return start, min(end, complete)

