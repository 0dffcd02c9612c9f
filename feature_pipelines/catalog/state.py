"""What the lake says of a feature: its table's last materialization against the SLA, the last quality
run's outcome, the latest drift and skew results. Each read from the table that records it; a table that is
absent, or holds nothing for the feature, gives UNKNOWN saying so, never a guessed verdict."""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl

from feature_pipelines.catalog.entries import Freshness, Signal, State, unknown, worst_state
from feature_pipelines.features.spec import FeatureView
from feature_pipelines.monitoring.tables import COMPARISON_COLUMN, DAY_COLUMN
from feature_pipelines.names import CREATED_TIMESTAMP, PARTITION_DRIFT_TABLE, SERVING_DRIFT_TABLE, SKEW_TABLE
from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.quality.ledger import QualityLedger
from feature_pipelines.timeutil import require_utc

DRIFT_TABLES = (SERVING_DRIFT_TABLE, PARTITION_DRIFT_TABLE)


def age_text(age: timedelta) -> str:
    minutes = int(age.total_seconds() // 60)
    days, rest = divmod(abs(minutes), 24 * 60)
    hours, mins = divmod(rest, 60)
    text = (f"{days}d" if days else "") + (f"{hours}h" if hours or days else "") + f"{mins:02d}m"
    return text if minutes >= 0 else f"-{text}"


def freshness_of(view: FeatureView, last: datetime | None, now: datetime) -> Freshness:
    """The view's state at `now` from its last materialization (Dagster's time-window freshness)."""
    sla = view.freshness
    bounds = f"SLA warn {age_text(sla.warn_after)} / fail {age_text(sla.fail_after)}"
    if last is None:
        return Freshness(sla, None, None, Signal(State.UNKNOWN, f"table {view.name!r} never materialized; {bounds}"))
    age = now - last
    state = State.FAIL if age > sla.fail_after else State.WARN if age > sla.warn_after else State.PASS
    return Freshness(sla, last, age, Signal(state, f"last written {age_text(age)} ago; {bounds}", last))


def _day(value: datetime) -> str:
    return value.date().isoformat()


class LakeState:
    """The result tables of one lake, read once, answering per view and feature at the clock `now`."""

    def __init__(self, store: DeltaStore, now: datetime) -> None:
        self.store = store
        self.now = require_utc(now, "catalog clock")
        self._written: dict[str, datetime | None] = {}
        self._ledger = QualityLedger(store).last_runs()
        self._drift = {table: store.read(table) for table in DRIFT_TABLES if store.exists(table)}
        self._skew = store.read(SKEW_TABLE) if store.exists(SKEW_TABLE) else None

    def last_materialized(self, view: FeatureView) -> datetime | None:
        """When the view's table was last written: the latest `created_timestamp` among its rows."""
        if view.name not in self._written:
            last = None
            if self.store.exists(view.name):
                last = self.store.scan(view.name).select(pl.col(CREATED_TIMESTAMP).max()).collect().item()
            self._written[view.name] = last
        return self._written[view.name]

    def freshness(self, view: FeatureView) -> Freshness:
        return freshness_of(view, self.last_materialized(view), self.now)

    def quality(self, view: FeatureView, feature: str) -> Signal:
        """The last checked run of the view's table: failed outcomes that name the feature, or name no feature
        of the view (a table-wide rule: schema, volume, keys, upstream), count against it."""
        run = self._ledger.filter(pl.col("table") == view.name)
        if run.height == 0:
            return unknown(f"no check recorded for table {view.name!r}")
        when = run["evaluated_at"].max()
        text = pl.col("message") + pl.col("metadata_json").fill_null("")
        names_another = pl.any_horizontal([text.str.contains(name, literal=True) for name in view.feature_names])
        failed = run.filter(~pl.col("passed"), text.str.contains(feature, literal=True) | ~names_another)
        partitions = run["partition"].n_unique()
        if failed.height == 0:
            others = int((~run["passed"]).sum())
            passed = f"all {run.height}" if others == 0 else f"{run.height - others} of {run.height}"
            tail = "" if others == 0 else f"; the {others} failed concern other features"
            return Signal(State.PASS, f"{passed} check outcomes on {partitions} partition(s) passed in the last run "
                          f"({_day(when)}){tail}", when)
        state = State.FAIL if failed["blocking"].any() else State.WARN
        first = failed.sort("partition").row(0, named=True)
        return Signal(state, f"{failed.height} of {run.height} outcomes failed in the last run; first: partition "
                      f"{first['partition']} {first['check_name']}: {first['message']}", when)

    def drift(self, feature: str) -> Signal:
        """The latest day of each drift table holding the feature, worst severity first."""
        if not self._drift:
            return unknown(f"no drift results ({' and '.join(DRIFT_TABLES)} absent)")
        states, parts, days = [], [], []
        for frame in self._drift.values():
            rows = frame.filter(pl.col("feature") == feature)
            if rows.height == 0:
                continue
            latest = rows.filter(pl.col(DAY_COLUMN) == rows[DAY_COLUMN].max())
            for row in latest.sort(COMPARISON_COLUMN).iter_rows(named=True):
                states.append(State(row["severity"]))
                psi = "n/a" if row["psi"] is None else f"{row['psi']:.3f}"
                parts.append(f"{row[COMPARISON_COLUMN]} {row['severity']} (psi {psi}, {_day(row[DAY_COLUMN])})")
                days.append(row[DAY_COLUMN])
        if not states:
            return unknown("not in the drift results (not monitored)")
        return Signal(worst_state(states), "; ".join(parts), max(days))

    def skew(self, feature: str) -> Signal:
        """The latest day's serving skew of the feature: pass when every comparison that day passed."""
        if self._skew is None:
            return unknown(f"no skew results ({SKEW_TABLE} absent)")
        rows = self._skew.filter(pl.col("feature") == feature)
        if rows.height == 0:
            return unknown("not in the skew results (not served, or not monitored)")
        day = rows[DAY_COLUMN].max()
        latest = rows.filter(pl.col(DAY_COLUMN) == day)
        state = State.PASS if latest["passed"].all() else State.FAIL
        compared, mismatches = int(latest["compared"].sum()), int(latest["mismatches"].sum())
        share = f"{mismatches / compared:.2%}" if compared else "n/a"
        return Signal(state, f"{mismatches} of {compared} served values differ from offline ({share}, {_day(day)})",
                      day)
