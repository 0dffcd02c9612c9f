"""The stream's part of `feature-pipelines traffic`: catch the stream up with the replay before
the requests, and, with `--live`, push events as they happen and show each served change.

The server reads streaming views from the stream's tiles, so the requests that `traffic` sends
are only as fresh as what the consumer has applied: `catch_up` pushes the events known since the
replay's cursor (at most the stream's horizon) and waits until the consumer group has applied
them, or says in one line how to start the consumer.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

import redis

from feature_pipelines.features.spec import FeatureView
from feature_pipelines.settings import Settings
from feature_pipelines.sources.landing import LandingZone
from feature_pipelines.streaming.follow import FollowOptions, ServedChange, ServedRead, follow_stream, wait_consumed
from feature_pipelines.streaming.keys import StreamKeys
from feature_pipelines.streaming.replay import push_replayed, stream_horizon
from feature_pipelines.streaming.runner import streaming_tables

CATCH_UP_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class StreamFeed:
    """Where the replay pushes: the online store's client and stream keys, the landing zone and clock."""

    client: redis.Redis
    keys: StreamKeys
    settings: Settings
    views: Mapping[str, FeatureView]

    @property
    def zone(self) -> LandingZone:
        return LandingZone(self.settings.landing_root)


def catch_up(feed: StreamFeed, until: datetime) -> str:
    """Push every streaming table's events known up to `until`, wait until they are consumed;
    returns the summary line.

    Raises:
        StreamNotConsumedError: the consumer did not apply them (not running, or stuck).
    """
    horizon = stream_horizon(list(feed.views.values()))
    parts = []
    for table in streaming_tables(feed.views):
        pushed = push_replayed(feed.client, feed.keys, feed.zone, feed.settings.replay, table, until=until, horizon=horizon)
        wait_consumed(feed.client, feed.keys, table, timeout=CATCH_UP_TIMEOUT_S)
        parts.append(f"{pushed.events} {table} events known {pushed.start:%m-%d %H:%M}..{pushed.end:%H:%M:%S} UTC")
    return "stream: pushed and consumed " + ", ".join(parts)


def follow_live(
    feed: StreamFeed, view: FeatureView, feature: str, read: ServedRead, options: FollowOptions,
    *, say: Callable[[str], None],
) -> list[ServedChange]:
    """Push `view`'s events as they happen for `options.seconds`, printing each served change."""
    return follow_stream(
        feed.client, feed.keys, feed.zone, feed.settings.replay, view, feature, read, options,
        horizon=stream_horizon(list(feed.views.values())),
        on_change=lambda change: say("  " + change.line(feature)),
        on_wait=lambda upcoming, waiting: say(_waiting_line(view, upcoming, waiting)),
    )


def _waiting_line(view: FeatureView, upcoming: datetime | None, waiting: bool) -> str:
    table = view.source.asset
    if upcoming is None:
        return f"  no {table} event is landed for the coming week: nothing more to follow"
    if waiting:
        return f"  waiting for the next {table} event, known at {upcoming:%H:%M:%S} UTC"
    return (f"  the next {table} event is known at {upcoming:%Y-%m-%d %H:%M:%S} UTC, after this follow ends; "
            "follow longer with `feature-pipelines traffic --hours 0 --live SECONDS`")


def live_summary(changes: list[ServedChange], view: FeatureView) -> str:
    """One line: how many served values changed, and how fast against the view's freshness SLA."""
    seen = sorted(c.seconds for c in changes if c.seconds is not None)
    if not changes:
        return "live: no event became known while following"
    sla = view.streaming.freshness_seconds if view.streaming is not None else float("nan")
    if not seen:
        return f"live: {len(changes)} entities pushed, none served a changed value (is the consumer running?)"
    within = sum(1 for s in seen if s <= sla)
    return (f"live: {len(seen)} of {len(changes)} pushed entities served a changed value; median "
            f"{statistics.median(seen) * 1000:.0f} ms, max {seen[-1] * 1000:.0f} ms after the push; "
            f"{within} within the {sla:g} s freshness SLA of {view.name!r}")
