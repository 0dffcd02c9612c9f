"""Forward lineage in time: which snapshots of which feature views read a given slice of a table.

A feature row (entity, t) holds the aggregates of [t - window, t) of the events known before t
(`features.spec.FeatureView`); an event of a raw partition [a, b) is known in [a, b + lateness)
(`SourceSpec.max_lateness`). So a snapshot at t of a feature with window W reads that partition
exactly when a < t < b + lateness + W. A streamed value read at instant t obeys the same rule.
A feature table's own partition (s, e] holds the snapshots s < t <= e. The inverse direction,
snapshot instants to the raw hours they read, is `offline.historical.raw_hours_of`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import polars as pl

from feature_pipelines.features.spec import FeatureView
from feature_pipelines.names import EVENT_TIMESTAMP
from feature_pipelines.offline.historical import partitions_of
from feature_pipelines.timeutil import PartitionWindow, floor_to, require_utc

_US = timedelta(microseconds=1)
HOUR_KEY_LENGTH = len("2013-01-05-10:00")
DAY_KEY_LENGTH = len("2013-01-05")


class PartitionKeyError(ValueError):
    """A partition key that is neither a day ("2013-01-05") nor an hour ("2013-01-05-10:00")."""


def window_of_key(key: str) -> PartitionWindow:
    """The UTC window of a gate unit's key: an hour of a raw table, or a day (a raw day, a view's partition)."""
    try:
        if len(key) == HOUR_KEY_LENGTH:
            start = datetime.strptime(key, "%Y-%m-%d-%H:%M").replace(tzinfo=UTC)
            return PartitionWindow(key, start, start + timedelta(hours=1))
        if len(key) == DAY_KEY_LENGTH:
            start = datetime.strptime(key, "%Y-%m-%d").replace(tzinfo=UTC)
            return PartitionWindow(key, start, start + timedelta(days=1))
    except ValueError as error:
        raise PartitionKeyError(f"partition {key!r}: {error}") from error
    raise PartitionKeyError(f"partition {key!r}: expected a day 'YYYY-MM-DD' or an hour 'YYYY-MM-DD-HH:MM' (UTC)")


@dataclass(frozen=True)
class ReadSpan:
    """The snapshot instants t of one feature that read the slice: after < t < before (UTC)."""

    view: str
    feature: str
    after: datetime
    before: datetime

    def __post_init__(self) -> None:
        require_utc(self.after, f"{self.view}:{self.feature} span start")
        require_utc(self.before, f"{self.view}:{self.feature} span end")

    def contains(self, column: str = EVENT_TIMESTAMP) -> pl.Expr:
        return (pl.col(column) > self.after) & (pl.col(column) < self.before)


def spans_reading_source(view: FeatureView, window: PartitionWindow) -> tuple[ReadSpan, ...]:
    """Per feature of `view`, the snapshots that read the raw partition `window` of its source."""
    reach = window.end + view.source.max_lateness
    return tuple(ReadSpan(view.name, f.name, window.start, reach + f.window_timedelta) for f in view.features)


def spans_of_own_partition(view: FeatureView, window: PartitionWindow) -> tuple[ReadSpan, ...]:
    """Per feature, the snapshots a partition (start, end] of the view's own table holds."""
    return tuple(ReadSpan(view.name, name, window.start, window.end + _US) for name in view.feature_names)


def snapshot_instants(view: FeatureView, spans: tuple[ReadSpan, ...]) -> list[datetime]:
    """The view's batch snapshot instants (its cadence grid) inside any of the spans, in order."""
    if not spans:
        return []
    step = view.cadence.interval
    first = floor_to(min(s.after for s in spans), step) + step
    last = max(s.before for s in spans)
    instants = []
    t = first
    while t < last:
        if any(s.after < t < s.before for s in spans):
            instants.append(t)
        t += step
    return instants


def feature_partitions(view: FeatureView, instants: list[datetime]) -> list[str]:
    """The view's partition keys holding these snapshot instants."""
    if not instants:
        return []
    return partitions_of(view, pl.Series(EVENT_TIMESTAMP, instants, dtype=pl.Datetime("us", "UTC")))


def partition_window_of(view: FeatureView, instant: datetime) -> PartitionWindow:
    """The view partition (start, end] holding a snapshot instant, with its key."""
    key = feature_partitions(view, [instant])[0]
    start = floor_to(instant - _US, view.partitioning.interval)
    return PartitionWindow(key, start, start + view.partitioning.interval)
