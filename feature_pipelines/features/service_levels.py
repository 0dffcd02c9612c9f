"""The service levels this catalog's views share: who owns them, how fresh and how long valid."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from feature_pipelines.features.spec import FreshnessSLA, Lifecycle, Partitioning

HOURLY_OPERATIONS: dict[str, Any] = dict(
    partitioning=Partitioning.DAILY,
    snapshot_every=Partitioning.HOURLY,
    ttl=timedelta(hours=3),
    owner="ops-data@feature-pipelines.example",
    freshness=FreshnessSLA(warn_after=timedelta(hours=2), fail_after=timedelta(hours=3)),
    lifecycle=Lifecycle.PRODUCTION,
)
"""The operations team's hourly views (airline delays, airport weather): a snapshot at the end of
every hour in daily partitions; a value older than 3 hours no longer describes the airport or the
airline's day, so it expires and the freshness SLA fails at the same age."""

DAILY_SNAPSHOTS: dict[str, Any] = dict(
    partitioning=Partitioning.DAILY,
    ttl=timedelta(days=2),
    freshness=FreshnessSLA(warn_after=timedelta(hours=26), fail_after=timedelta(hours=30)),
)
"""Views snapshotted once a day at midnight UTC: the day's snapshot lands within about 2 hours of
the day's end (warn at 26h), and a model may use it until the next one is a day late (TTL 2 days)."""
