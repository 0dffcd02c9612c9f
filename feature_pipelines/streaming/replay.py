"""The landed 2013 events replayed onto the stream as they happen: what `feature-pipelines traffic`
pushes, so the stream's tiles hold what the batch raw tables hold, known at the same instants.

Events come from the landing zone (the source the raw assets read, moved to the present by the
replay clock), in known-at order, and every one is pushed unjudged: the consumer applies the
raw rules and dead-letters what they reject, as the batch gates quarantine it.

A cursor per table (`StreamKeys.replay_cursor`) holds the instant up to which events were pushed:
each call pushes the events known in [cursor, until) and moves the cursor to `until`, so a second
call, a second demo or a restart pushes nothing twice (the stream would dead-letter a copy as a
redelivery). Without a cursor, or with one older than the stream's horizon (a day away), the push
starts at `until - horizon`: the stream only serves windows that end at the read instant, so older
events would be folded into tiles that no read reaches. The cursor moves only after the whole push
was appended: a push that fails half way is pushed again, and the consumer recognises the copies.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl
import redis

from feature_pipelines.features.spec import FeatureView
from feature_pipelines.settings import ReplayClock
from feature_pipelines.sources.landing import LandingZone
from feature_pipelines.sources.landing_contract import SOURCE_FILE, SOURCE_ROW, read_landed
from feature_pipelines.sources.raw_tables import RAW_TABLES, declared_schema
from feature_pipelines.streaming.keys import StreamKeys
from feature_pipelines.streaming.producer import push_events
from feature_pipelines.timeutil import epoch_us, from_epoch_us, require_utc


@dataclass(frozen=True)
class ReplayedPush:
    """What one push did: the span of known-at instants it covered and the events it appended."""

    table: str
    start: datetime
    end: datetime
    events: int


def stream_horizon(views: list[FeatureView]) -> timedelta:
    """How far back a read at now reaches: the longest window of the streaming views, plus a tile."""
    streaming = [v for v in views if v.streaming is not None]
    if not streaming:
        return timedelta(0)
    return max(v.max_window + v.streaming.tile for v in streaming)  # type: ignore[union-attr]


def landed_events(zone: LandingZone, table: str, clock: ReplayClock, start: datetime, end: datetime) -> pl.DataFrame:
    """The landed rows of raw table `table` known in [start, end) (present time), moved to the
    present, with the raw table's columns, in known-at order (ties keep the landing order)."""
    raw = next((t for t in RAW_TABLES if t.name == table), None)
    if raw is None or raw.time_column is None:
        raise ValueError(f"table {table!r} is not a time-partitioned raw table; known: {[t.name for t in RAW_TABLES if t.time_column]}")
    window = (clock.to_source(require_utc(start, "start")), clock.to_source(require_utc(end, "end")))
    landed = read_landed(zone, raw.landing_table, declared_schema(raw), time_column=raw.time_column, window=window)
    rows = clock.frame_to_present(landed.rows.sort(raw.time_column, SOURCE_FILE, SOURCE_ROW, maintain_order=True))
    return rows.drop(SOURCE_FILE, SOURCE_ROW)


@dataclass(frozen=True)
class PendingEvents:
    """The events of a table known in [start, end) that the replay has not pushed yet; `resumes`
    when they follow the last push without a gap."""

    table: str
    start: datetime
    end: datetime
    frame: pl.DataFrame
    resumes: bool


def pending_events(
    client: redis.Redis, keys: StreamKeys, zone: LandingZone, clock: ReplayClock, table: str, *,
    until: datetime, horizon: timedelta,
) -> PendingEvents:
    """The landed events of `table` known in [cursor, until) (see the module docstring for where a
    replay without a cursor starts)."""
    until = require_utc(until, "until")
    cursor = client.get(keys.replay_cursor(table))
    earliest = until - horizon
    pushed_until = None if cursor is None else from_epoch_us(int(cursor))
    start = earliest if pushed_until is None else max(earliest, pushed_until)
    frame = landed_events(zone, table, clock, start, until) if start < until else pl.DataFrame()
    return PendingEvents(table, start, until, frame, resumes=pushed_until is not None and pushed_until >= start)


def push_pending(client: redis.Redis, keys: StreamKeys, pending: PendingEvents) -> ReplayedPush:
    """Append the pending events to their stream, then move the table's cursor to their end."""
    if pending.start >= pending.end:
        return ReplayedPush(pending.table, pending.start, pending.end, 0)
    entry_ids = push_events(client, pending.table, pending.frame, keys=keys) if pending.frame.height else []
    if not pending.resumes:
        client.set(keys.replay_start(pending.table), epoch_us(pending.start))
    client.set(keys.replay_cursor(pending.table), epoch_us(pending.end))
    return ReplayedPush(pending.table, pending.start, pending.end, len(entry_ids))


def push_replayed(
    client: redis.Redis, keys: StreamKeys, zone: LandingZone, clock: ReplayClock, table: str, *,
    until: datetime, horizon: timedelta,
) -> ReplayedPush:
    """Push the events of `table` known in [cursor, until) and move the cursor to `until`."""
    pending = pending_events(client, keys, zone, clock, table, until=until, horizon=horizon)
    return push_pending(client, keys, pending)


def replay_coverage(client: redis.Redis, keys: StreamKeys, table: str) -> tuple[datetime, datetime] | None:
    """[start, cursor): the known-at span in which the replay pushed every event of `table`, None
    when no replay fed it (events pushed by other producers have no recorded coverage)."""
    start, cursor = client.get(keys.replay_start(table)), client.get(keys.replay_cursor(table))
    if start is None or cursor is None:
        return None
    return from_epoch_us(int(start)), from_epoch_us(int(cursor))


def next_event_at(zone: LandingZone, clock: ReplayClock, table: str, after: datetime, within: timedelta) -> datetime | None:
    """The known-at instant of the first landed event of `table` at or after `after` (within
    `within` of it), None when there is none."""
    frame = landed_events(zone, table, clock, after, after + within)
    if frame.height == 0:
        return None
    column = next(t.time_column for t in RAW_TABLES if t.name == table)
    return frame[column].min()  # type: ignore[return-value]
