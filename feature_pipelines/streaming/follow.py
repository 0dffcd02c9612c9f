"""Follow the replay live: push each event as its known-at instant passes, and time how long the
server takes to serve its effect (what `feature-pipelines traffic --live` shows).

For every push, the served value of one streaming feature is read for the pushed events' entities
just before the push, then polled until it differs: the time from the push to the first read that
differs is the event's freshness as a model sees it (push, consumer, tile write, server read),
which the view's `StreamingSpec.freshness_seconds` bounds. A value that has not changed within
`timeout` is reported as such (an event that is dead-lettered, or that another event leaving the
window at the same instant cancels, changes nothing), never dropped from the count.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import polars as pl
import redis

from feature_pipelines.features.spec import FeatureView
from feature_pipelines.settings import ReplayClock
from feature_pipelines.sources.landing import LandingZone
from feature_pipelines.streaming.keys import StreamKeys
from feature_pipelines.streaming.replay import next_event_at, pending_events, push_pending
from feature_pipelines.streaming.runner import stream_lag
from feature_pipelines.timeutil import utc_now

# Reads the served value of the followed feature for each row of entity keys, in order.
ServedRead = Callable[[pl.DataFrame], list[Any]]


@dataclass(frozen=True)
class ServedChange:
    """One entity's served value around one push: before, after, and the seconds until it changed
    (None: unchanged after the timeout)."""

    entity: tuple[Any, ...]
    known_at: datetime
    before: Any
    after: Any
    seconds: float | None

    def line(self, feature: str) -> str:
        entity = "/".join(str(v) for v in self.entity)
        if self.seconds is None:
            return f"{entity} known at {self.known_at:%H:%M:%S}: {feature} still {self.before!r} (unchanged)"
        return (f"{entity} known at {self.known_at:%H:%M:%S}: {feature} {self.before!r} -> {self.after!r}, "
                f"served {self.seconds * 1000:.0f} ms after the push")


@dataclass(frozen=True)
class FollowOptions:
    """How long to follow, how many events at most, and how to wait for a served change."""

    seconds: float
    max_events: int | None = None
    timeout: float = 5.0
    poll_seconds: float = 0.005


def follow_stream(
    client: redis.Redis,
    keys: StreamKeys,
    zone: LandingZone,
    clock: ReplayClock,
    view: FeatureView,
    feature: str,
    read: ServedRead,
    options: FollowOptions,
    *,
    horizon: timedelta,
    on_change: Callable[[ServedChange], None] = lambda _change: None,
    on_wait: Callable[[datetime | None, bool], None] = lambda _next, _waiting: None,
) -> list[ServedChange]:
    """Push `view`'s table's events as they become known for `options.seconds`, and time each
    pushed entity's served change of `feature` (see the module docstring). `on_wait` hears of the
    next event: waited for (True), or past the deadline (False; None when none is landed)."""
    table, known_at = view.source.asset, view.source.known_at_column
    keys_of = list(view.entity_keys)
    deadline = time.monotonic() + options.seconds
    changes: list[ServedChange] = []
    while time.monotonic() < deadline and (options.max_events is None or len(changes) < options.max_events):
        pending = pending_events(client, keys, zone, clock, table, until=utc_now(), horizon=horizon)
        rows = pending.frame.drop_nulls(keys_of) if pending.frame.height else pending.frame
        if rows.height == 0:
            push_pending(client, keys, pending)
            remaining = deadline - time.monotonic()
            upcoming = next_event_at(zone, clock, table, pending.end, timedelta(seconds=max(remaining, 0.0)))
            if upcoming is None:
                on_wait(next_event_at(zone, clock, table, pending.end, timedelta(days=7)), False)
                return changes  # no event becomes known before the deadline
            on_wait(upcoming, True)
            time.sleep(max(0.0, min((upcoming - utc_now()).total_seconds(), deadline - time.monotonic())) + 0.001)
            continue
        entities = rows.group_by(keys_of, maintain_order=True).agg(pl.col(known_at).max())
        before = read(entities.select(keys_of))
        push_pending(client, keys, pending)
        pushed = time.monotonic()
        after, seen = list(before), [None] * entities.height
        while any(s is None for s in seen) and time.monotonic() - pushed < options.timeout:
            time.sleep(options.poll_seconds)
            values = read(entities.select(keys_of))
            elapsed = time.monotonic() - pushed
            for i, value in enumerate(values):
                if seen[i] is None and value != before[i]:
                    seen[i], after[i] = elapsed, value
        for i, row in enumerate(entities.iter_rows(named=True)):
            change = ServedChange(tuple(row[k] for k in keys_of), row[known_at], before[i], after[i], seen[i])
            changes.append(change)
            on_change(change)
    return changes


class StreamNotConsumedError(RuntimeError):
    """The pushed events were not consumed in time: no stream consumer is running, or it is stuck."""


def wait_consumed(client: redis.Redis, keys: StreamKeys, table: str, *, timeout: float, stall: float = 5.0) -> None:
    """Return once the consumer group has delivered and acknowledged every entry of `table`'s stream.

    Raises:
        StreamNotConsumedError: nothing moved for `stall` seconds, or `timeout` passed.
    """
    started = last_move = time.monotonic()
    last = None
    while True:
        lag = stream_lag(client, keys, table)
        if lag.undelivered == 0 and lag.pending == 0:
            return
        now = time.monotonic()
        if (lag.undelivered, lag.pending) != last:
            last, last_move = (lag.undelivered, lag.pending), now
        if now - last_move > stall or now - started > timeout:
            raise StreamNotConsumedError(
                f"stream {keys.events(table)!r}: {lag.undelivered} entries undelivered and {lag.pending} pending "
                f"after {now - started:.0f} s; start the consumer with `feature-pipelines stream --background`"
            )
        time.sleep(0.05)
