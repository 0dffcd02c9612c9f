"""Injected training/serving skew, for the demo and the tests: the faults the monitors must catch.

Each scenario writes what a faulty serving path would have logged into the request log table
(`_serving/feature_log`), in the log's own format, so the `serving_skew` / `serving_drift`
assets judge it exactly as they judge the real server's log:

- `midnight_window`: a service computing the carrier 24h mean delay over the window ending at
  the last midnight instead of at the request time;
- `zero_imputation`: a service layer replacing null features by 0 instead of keeping the
  declared null policy;
- `local_day_boundary`: a daily route feature computed with New York midnights instead of UTC;
- `delays_in_seconds`: a service reading the route mean delay in seconds, not minutes;
- `rounded_values`: a service rounding the carrier 24h mean delay to one decimal;
- `stale_store` (`publish_stale`): an online store whose publishing stopped hours ago.

`SCENARIOS` names each one (as `feature-pipelines inject-skew NAME` takes it) with how it is
injected; the command's choices are its keys. The skew monitor names each one's root cause
(`root_cause.py`): the window ending at midnight, nulls imputed as 0, the local midnight, units
x60, rounding, and the stale store as a publish lag of k snapshots.

A rogue path logs no snapshot stamp (it bypasses the platform), so its values are judged
against the offline point-in-time value alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl
import redis

from feature_pipelines.features.spec import FeatureView
from feature_pipelines.names import EVENT_TIMESTAMP, FEATURE_LOG_TABLE
from feature_pipelines.offline.delta_store import DeltaStore, TimeSlice
from feature_pipelines.online.keys import key_head
from feature_pipelines.online.publish import latest_per_entity, publish
from feature_pipelines.online.table import OnlineTable
from feature_pipelines.serving.request_log import ServedFeature, ServedRequest, append_log_rows, requests_to_frame
from feature_pipelines.timeutil import floor_to

DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
NEW_YORK = ZoneInfo("America/New_York")


def rogue_request(request_id: str, at: datetime, view: str, keys: Mapping[str, list[Any]], feature: str, values: list[Any]) -> ServedRequest:
    """What a serving path that bypasses the platform logs: its values and no snapshot stamp."""
    n = len(values)
    return ServedRequest(request_id, at, dict(keys), [ServedFeature(view, feature, tuple(keys), values, ["PRESENT"] * n, [None] * n)])


def _window_mean(raw: pl.DataFrame, keys: Mapping[str, Any], low: datetime, high: datetime) -> float | None:
    rows = raw.filter(*[pl.col(k) == v for k, v in keys.items()], pl.col("dep_known_at") >= low, pl.col("dep_known_at") < high)
    return rows["dep_delay"].mean()  # type: ignore[return-value]


def midnight_window(store: DeltaStore, day: datetime) -> list[ServedRequest]:
    """carrier_dep_delay_mean_24h over [midnight - 24h, midnight) at requests through `day`."""
    raw = store.read("raw_flights")
    carriers = sorted(store.read("carrier_delay_stats")["carrier"].unique().to_list())
    return [
        rogue_request(f"midnight-window-{hour}", day + hour * HOUR, "carrier_delay_stats", {"carrier": carriers},
                      "carrier_dep_delay_mean_24h", [_window_mean(raw, {"carrier": c}, day - DAY, day) for c in carriers])
        for hour in range(4, 24, 3)
    ]


def local_day_boundary(store: DeltaStore, day: datetime) -> list[ServedRequest]:
    """route_dep_delay_mean_24h over the New York day before each request, not the UTC one."""
    raw = store.read("raw_flights")
    routes = store.read("route_delay_stats").filter(pl.col(EVENT_TIMESTAMP) == day).select("origin", "dest")
    requests = []
    for hour in range(6, 24, 4):
        at = day + hour * HOUR
        local_midnight = at.astimezone(NEW_YORK).replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)
        values = [_window_mean(raw, {"origin": o, "dest": d}, local_midnight - DAY, local_midnight) for o, d in routes.iter_rows()]
        requests.append(rogue_request(f"local-day-{hour}", at, "route_delay_stats", routes.to_dict(as_series=False),
                                      "route_dep_delay_mean_24h", values))
    return requests


def zero_imputation(log: pl.DataFrame) -> pl.DataFrame:
    """The served log as a service that imputes 0 for every null would have written it."""
    return log.with_columns(
        pl.col("value_float").fill_null(0.0),
        pl.when(pl.col("value_json") == "null").then(pl.lit("0.0")).otherwise(pl.col("value_json")).alias("value_json"),
    )


def delays_in_seconds(log: pl.DataFrame, feature: str = "route_dep_delay_mean_24h") -> pl.DataFrame:
    """The served log with one delay feature read in seconds instead of minutes."""
    scaled = pl.when(pl.col("feature") == feature)
    return log.with_columns(
        scaled.then(pl.col("value_float") * 60).otherwise(pl.col("value_float")).alias("value_float"),
        scaled.then((pl.col("value_float") * 60).cast(pl.String)).otherwise(pl.col("value_json")).fill_null("null").alias("value_json"),
    )


def rounded_values(log: pl.DataFrame, feature: str = "carrier_dep_delay_mean_24h", decimals: int = 1) -> pl.DataFrame:
    """The served log with one float feature rounded (a service formatting values for display)."""
    rounded = pl.col("value_float").round(decimals)
    chosen = pl.when(pl.col("feature") == feature)
    return log.with_columns(
        chosen.then(rounded).otherwise(pl.col("value_float")).alias("value_float"),
        chosen.then(rounded.cast(pl.String)).otherwise(pl.col("value_json")).fill_null("null").alias("value_json"),
    )


def publish_stale(client: redis.Redis, prefix: str, store: DeltaStore, views: Mapping[str, FeatureView], cutoff: datetime) -> None:
    """Fill an online store as it would be had publishing stopped at `cutoff`: each view's published
    keys replaced (the stream's tiles, fed by their own consumer, are left as they are)."""
    for view in views.values():
        for stale_key in client.scan_iter(match=f"{key_head(prefix, view.name)}*"):
            client.delete(stale_key)
    for view in views.values():
        snapshot = store.read(view.name).filter(pl.col(EVENT_TIMESTAMP) <= cutoff)
        publish(client, OnlineTable.for_view(view, prefix), latest_per_entity(view, snapshot))


def append_requests(store: DeltaStore, requests: list[ServedRequest], key_columns: Mapping[str, pl.DataType]) -> int:
    """Log rogue requests in the request log table, as the server's log would hold them."""
    return append_log_rows(store, requests_to_frame(requests, key_columns))


def rewrite_log(store: DeltaStore, transform: Callable[[pl.DataFrame], pl.DataFrame], start: datetime, end: datetime) -> int:
    """Apply a fault to the logged values of [start, end) (a new Delta version; the old stays readable)."""
    log = store.read(FEATURE_LOG_TABLE, time_slice=TimeSlice("request_time", start, end))
    return store.write(FEATURE_LOG_TABLE, transform(log), time_slice=TimeSlice("request_time", start, end))


STALE_HOURS = 6


@dataclass(frozen=True)
class InjectionTarget:
    """Where a scenario injects its fault: the lake, the catalog, the instant it runs, and the
    online store (opened only by the scenario that needs it)."""

    store: DeltaStore
    views: Mapping[str, FeatureView]
    key_columns: Mapping[str, pl.DataType]
    now: datetime
    online_store: Callable[[], tuple[redis.Redis, str]]

    @property
    def today(self) -> datetime:
        return floor_to(self.now, DAY)


@dataclass(frozen=True)
class Scenario:
    """A named fault: how it is injected, and what it tells the user to run next to see it caught."""

    name: str
    inject: Callable[[InjectionTarget], object]
    done: str | None = None

    @property
    def message(self) -> str:
        return self.done or (
            f"{self.name} written to today's serving log; run `feature-pipelines monitor` to see it caught"
        )


def _publish_stale_store(target: InjectionTarget) -> None:
    client, prefix = target.online_store()
    publish_stale(client, prefix, target.store, target.views, floor_to(target.now, HOUR) - STALE_HOURS * HOUR)


SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        Scenario("midnight-window",
                 lambda t: append_requests(t.store, midnight_window(t.store, t.today), t.key_columns)),
        Scenario("zero-imputation", lambda t: rewrite_log(t.store, zero_imputation, t.today, t.today + DAY)),
        Scenario("local-day-boundary",
                 lambda t: append_requests(t.store, local_day_boundary(t.store, t.today), t.key_columns)),
        Scenario("delays-in-seconds", lambda t: rewrite_log(t.store, delays_in_seconds, t.today, t.today + DAY)),
        Scenario("rounded-values", lambda t: rewrite_log(t.store, rounded_values, t.today, t.today + DAY)),
        # The online store as of 6 hours ago; the day's traffic against it is what the monitors judge.
        Scenario("stale-store", _publish_stale_store,
                 done=f"the online store now holds the snapshots of {STALE_HOURS} hours ago; run `feature-pipelines "
                 "traffic`, then `feature-pipelines monitor` (the next hourly publish repairs the store)"),
    )
}
"""Every injectable scenario by name, in the order the command lists them."""
