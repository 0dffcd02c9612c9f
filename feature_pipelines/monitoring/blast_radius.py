"""From a bad partition to the served requests and models it touched (the blast radius).

An incident is a gate unit (a raw hour, a feature partition) whose latest blocking check failed
(the quality ledger) or whose rows were replaced by different ones after they were first written
(a restatement, found in the table's Delta versions). The walk goes forward, from recorded facts:

1. the feature views that read it (a raw table's views through their windows and lateness, a
   feature table itself) and, per feature, the snapshot instants whose window reads it
   (`monitoring.lineage`), hence the feature partitions;
2. the request-log rows whose served snapshot (`view`, `feature`, `event_timestamp`) is one of
   those, narrowed to the entities of the rows in question when they are known (entity
   precision: the quarantined and stored rows of a failed unit, the changed rows of a restated
   one), else every entity (partition precision). A restatement only taints what was served
   before its corrected values reached Redis: rows served after the first publish covering the
   partition that follows a rewrite of that feature partition after the restatement are left out;
3. the publish that pushed each snapshot: the view's latest recorded publish at or before the
   request covering the snapshot's partition (Dagster's materializations of `<view>_online`,
   passed in as `PublishRecord`s: this module knows nothing of Dagster);
4. the models that scored those requests (`_serving/predictions`), with the request ids.

On-demand features are not walked separately: they are computed in the request from the served
views' values, so their requests are already among the affected ones.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import polars as pl

from feature_pipelines.features.spec import FeatureView
from feature_pipelines.json_values import json_value
from feature_pipelines.monitoring.lineage import (
    ReadSpan,
    feature_partitions,
    snapshot_instants,
    spans_of_own_partition,
    spans_reading_source,
    window_of_key,
)
from feature_pipelines.monitoring.restatement import TableHistory
from feature_pipelines.names import (
    CREATED_TIMESTAMP,
    EVENT_TIMESTAMP,
    FEATURE_LOG_TABLE,
    PREDICTIONS_TABLE,
    QUALITY_LEDGER_TABLE,
)
from feature_pipelines.offline.delta_store import DeltaStore, TableMissingError
from feature_pipelines.quality.ledger import QualityLedger
from feature_pipelines.quality.quarantine import PARTITION, QUARANTINE_COLUMNS, Quarantine
from feature_pipelines.sources.raw_tables import RAW_TABLES
from feature_pipelines.timeutil import PartitionWindow, require_utc

IncidentKind = Literal["gate_failed", "restated", "named"]
Precision = Literal["entity", "partition"]
_HOUR = timedelta(hours=1)
_LOG_COLUMNS = ("request_id", "entity_index", "request_time", "view", "feature", EVENT_TIMESTAMP, "entity_key")
_UTC_US = pl.Datetime("us", "UTC")


@dataclass(frozen=True)
class GatedTable:
    """A table the gates judge unit by unit: its time column, how its units close, their length."""

    name: str
    time_column: str
    closed: Literal["left", "right"]  # raw events [start, end); feature snapshots (start, end]
    unit: timedelta

    def contains(self, window: PartitionWindow) -> pl.Expr:
        column = pl.col(self.time_column)
        if self.closed == "left":
            return (column >= window.start) & (column < window.end)
        return (column > window.start) & (column <= window.end)

    def units(self, start: datetime, end: datetime) -> list[PartitionWindow]:
        """The units starting in [start, end), keyed like the ledger keys them."""
        fmt = "%Y-%m-%d-%H:%M" if self.unit < timedelta(days=1) else "%Y-%m-%d"
        units, at = [], require_utc(start, "start")
        while at < end:
            units.append(PartitionWindow(at.strftime(fmt), at, at + self.unit))
            at += self.unit
        return units


def gated_tables(views: Mapping[str, FeatureView]) -> dict[str, GatedTable]:
    """The raw tables the views read (judged by the hour) and the views' own tables (by partition)."""
    sources = {view.source.asset for view in views.values()}
    raw = {t.name: GatedTable(t.name, t.time_column, "left", _HOUR) for t in RAW_TABLES if t.time_column and t.name in sources}
    own = {v.name: GatedTable(v.name, EVENT_TIMESTAMP, "right", v.partitioning.interval) for v in views.values()}
    return {**raw, **own}


@dataclass(frozen=True)
class Incident:
    """One bad unit of a table: why (a failed gate, a restatement) and the rows in question, whose
    entity columns narrow the walk to their entities (None: unknown, every entity)."""

    table: str
    window: PartitionWindow
    kind: IncidentKind
    reason: str
    found_at: datetime | None
    run_id: str
    delta_version: int | None = None
    rows: pl.DataFrame | None = field(default=None, compare=False, repr=False)

    @property
    def partition(self) -> str:
        return self.window.key

    @property
    def label(self) -> str:
        return f"{self.table}/{self.partition} ({self.kind})"


@dataclass(frozen=True)
class PublishRecord:
    """One recorded publish of a view to the online store: its run, instant and feature partitions."""

    view: str
    run_id: str
    published_at: datetime
    first_partition: str
    last_partition: str


@dataclass(frozen=True)
class FeatureWrite:
    """One recorded materialization of a view's feature partition."""

    view: str
    partition: str
    written_at: datetime


# --- finding the incidents -------------------------------------------------------------------


def gate_failures(store: DeltaStore, table: GatedTable, units: Sequence[PartitionWindow]) -> list[Incident]:
    """The units whose latest blocking check failed, each with the rows in question: those the
    quarantine holds for it and those the table still holds (an earlier version, served before)."""
    by_key = {u.key: u for u in units}
    failed = QualityLedger(store).failed_partitions(table.name, list(by_key))
    if not failed.height:
        return []
    recorded = (
        store.scan(QUALITY_LEDGER_TABLE)
        .filter(pl.col("table") == table.name, pl.col("partition").is_in(failed["partition"].unique().to_list()))
        .sort("evaluated_at").group_by("partition").agg(pl.col("run_id").last(), pl.col("evaluated_at").last())
        .collect()
    )
    when = {row["partition"]: row for row in recorded.iter_rows(named=True)}
    held = Quarantine(store).rows(table.name)
    incidents = []
    for key, checks in failed.group_by("partition", maintain_order=True):
        window = by_key[str(key[0])]
        quarantined = held.filter(pl.col(PARTITION) == window.key).drop(QUARANTINE_COLUMNS, strict=False)
        stored = store.scan(table.name).filter(table.contains(window)).collect() if store.exists(table.name) else quarantined.head(0)
        rows = pl.concat([stored, quarantined], how="diagonal_relaxed") if quarantined.width else stored
        reason = "; ".join(f"{c}: {m}" for c, m in zip(checks["check_name"], checks["message"]))
        incidents.append(Incident(table.name, window, "gate_failed", reason, when[window.key]["evaluated_at"],
                                  when[window.key]["run_id"], rows=rows))
    return incidents


def _unit_rows(store: DeltaStore, table: GatedTable, version: int, units: Sequence[PartitionWindow]) -> pl.DataFrame:
    """The rows of the units at a version, with the unit's index; `created_timestamp` left out (a
    recomputation stamps it anew, and an identical recomputation is no restatement)."""
    span = PartitionWindow("span", units[0].start, units[-1].end)
    frame = store.scan(table.name, version=version).filter(table.contains(span)).collect()
    frame = frame.drop(CREATED_TIMESTAMP, strict=False)
    index = pl.lit(None, dtype=pl.Int64)
    for i, unit in enumerate(units):
        index = pl.when(table.contains(unit)).then(pl.lit(i, dtype=pl.Int64)).otherwise(index)
    return frame.with_columns(index.alias("__unit"))


def _fingerprints(rows: pl.DataFrame) -> dict[int, list[int]]:
    """Per unit, its rows' hashes sorted: equal exactly when the unit holds the same rows."""
    if not rows.height:
        return {}
    hashed = rows.select("__unit", rows.drop("__unit").hash_rows(seed=0).alias("__hash"))
    grouped = hashed.group_by("__unit").agg(pl.col("__hash").sort())
    return dict(zip(grouped["__unit"].to_list(), grouped["__hash"].to_list()))


def _changed_rows(before: pl.DataFrame, after: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The rows the rewrite removed (or changed) and the rows it added."""
    columns = [c for c in before.columns if c in after.columns]
    gone = before.select(columns).join(after.select(columns), on=columns, how="anti", nulls_equal=True)
    came = after.select(columns).join(before.select(columns), on=columns, how="anti", nulls_equal=True)
    return gone, came


def restatements(store: DeltaStore, table: GatedTable, units: Sequence[PartitionWindow]) -> list[Incident]:
    """The units overwritten with other rows after they were first written, one incident per
    restating version (`restatement.TableHistory`: its commit time and run), with the rows it changed. A raw unit is restated by any change (an added
    event changes every window that reads it); a feature partition only when a snapshot row it
    held is gone or changed (an open partition gains new snapshots every hour). Reads the units
    at every overwrite of the table: the cost grows with the table's history."""
    if not units or not store.exists(table.name):
        return []
    last: dict[int, tuple[int, list[int]]] = {}
    incidents = []
    for commit in TableHistory.read(store, table.name).commits.iter_rows(named=True):
        version = int(commit["version"])
        rows = _unit_rows(store, table, version, units)
        prints = _fingerprints(rows)
        for i in set(prints) | {i for i, (_, p) in last.items() if p}:
            now = prints.get(i, [])
            if i in last and last[i][1] and last[i][1] != now:
                before = _unit_rows(store, table, last[i][0], units).filter(pl.col("__unit") == i).drop("__unit")
                gone, came = _changed_rows(before, rows.filter(pl.col("__unit") == i).drop("__unit"))
                if not gone.height and table.closed == "right":
                    last[i] = (version, now)
                    continue
                changed = pl.concat([gone, came])
                found_at = datetime.fromtimestamp(commit["commit_ms"] / 1000, tz=UTC)
                incidents.append(Incident(
                    table.name, units[i], "restated",
                    f"version {version} replaced {len(last[i][1])} row(s) of version {last[i][0]} with {len(now)} "
                    f"({changed.height} changed)", found_at, commit["run_id"] or "", version, changed,
                ))
            last[i] = (version, now)
    return incidents


def find_incidents(store: DeltaStore, views: Mapping[str, FeatureView], start: datetime, end: datetime) -> list[Incident]:
    """Every failed gate and restatement of the units in [start, end) of the views' tables and sources."""
    incidents: list[Incident] = []
    for table in gated_tables(views).values():
        units = table.units(start, end)
        incidents += gate_failures(store, table, units)
        incidents += restatements(store, table, units)
    return incidents


def incidents_of(store: DeltaStore, views: Mapping[str, FeatureView], table: str, partition: str) -> list[Incident]:
    """The recorded incidents of one partition (a raw hour or day, a feature partition); when none
    is recorded, the partition as named, at partition precision."""
    tables = gated_tables(views)
    if table not in tables:
        raise ValueError(f"table {table!r} is not read by any feature view; known: {sorted(tables)}")
    gated = tables[table]
    window = window_of_key(partition)
    units = gated.units(window.start, window.end)
    found = gate_failures(store, gated, units) + restatements(store, gated, units)
    return found or [Incident(table, window, "named", "named on the command line; no failed gate or restatement recorded",
                              None, "")]


# --- walking forward -------------------------------------------------------------------------


@dataclass(frozen=True)
class ViewImpact:
    """What of one view an incident reaches: snapshots, partitions and the precision used."""

    incident: str
    view: str
    snapshots: int
    first_snapshot: datetime | None
    last_snapshot: datetime | None
    partitions: tuple[str, ...]
    precision: Precision
    entities: int | None
    served_rows: int
    requests: int


def _spans(incident: Incident, views: Mapping[str, FeatureView]) -> dict[str, tuple[ReadSpan, ...]]:
    if incident.table in views:
        return {incident.table: spans_of_own_partition(views[incident.table], incident.window)}
    return {v.name: spans_reading_source(v, incident.window) for v in views.values() if v.source.asset == incident.table}


def read_log(store: DeltaStore, start: datetime | None = None, end: datetime | None = None) -> pl.DataFrame:
    """The request log's served rows (request_time in [start, end) when given) with a snapshot stamp."""
    try:
        lazy = store.scan(FEATURE_LOG_TABLE)
    except TableMissingError:
        return pl.DataFrame(schema={"request_id": pl.String, "entity_index": pl.Int64, "request_time": _UTC_US,
                                    "view": pl.String, "feature": pl.String, EVENT_TIMESTAMP: _UTC_US, "entity_key": pl.String})
    if start is not None:
        lazy = lazy.filter(pl.col("request_time") >= start)
    if end is not None:
        lazy = lazy.filter(pl.col("request_time") < end)
    return lazy.filter(pl.col(EVENT_TIMESTAMP).is_not_null()).collect()


def _partition_of(view: FeatureView, stamps: pl.Series) -> pl.Series:
    """Each snapshot stamp's feature partition key (`lineage.feature_partitions`, one per distinct stamp)."""
    keys = {t: feature_partitions(view, [t])[0] for t in stamps.unique().to_list()}
    if not keys:  # replace_strict with no mapping hands the column back unchanged
        return pl.Series(stamps.name, [], dtype=pl.String)
    return stamps.replace_strict(keys, return_dtype=pl.String)


def _corrected_at(view: str, partition: str, restated_at: datetime, publishes: Sequence[PublishRecord],
                  writes: Sequence[FeatureWrite]) -> datetime | None:
    """When corrected values of a feature partition reached Redis: the first publish covering it
    after a rewrite of that partition after the restatement; None while that has not happened."""
    rewritten = [w.written_at for w in writes if w.view == view and w.partition == partition and w.written_at > restated_at]
    if not rewritten:
        return None
    after = min(rewritten)
    covering = [p.published_at for p in publishes
                if p.view == view and p.first_partition <= partition <= p.last_partition and p.published_at >= after]
    return min(covering) if covering else None


def _with_publish(rows: pl.DataFrame, view: str, publishes: Sequence[PublishRecord]) -> pl.DataFrame:
    """Each served row with the publish that pushed its snapshot: the view's latest recorded
    publish at or before the request that covers the snapshot's partition (null: none recorded)."""
    recorded = pl.DataFrame(
        [{"publish_run_id": p.run_id, "published_at": p.published_at, "first": p.first_partition, "last": p.last_partition}
         for p in publishes if p.view == view],
        schema={"publish_run_id": pl.String, "published_at": _UTC_US, "first": pl.String, "last": pl.String},
    )
    keyed = rows.with_row_index("__row")
    matched = (
        keyed.select("__row", "feature_partition", "request_time").join(recorded, how="cross")
        .filter(pl.col("feature_partition").is_between(pl.col("first"), pl.col("last")),
                pl.col("published_at") <= pl.col("request_time"))
        .sort("published_at").group_by("__row").agg(pl.col("publish_run_id", "published_at").last())
    )
    return keyed.join(matched, on="__row", how="left").drop("__row")


def _walk_view(incident: Incident, view: FeatureView, spans: tuple[ReadSpan, ...], log: pl.DataFrame,
               publishes: Sequence[PublishRecord], writes: Sequence[FeatureWrite]) -> tuple[ViewImpact, pl.DataFrame]:
    instants = snapshot_instants(view, spans)
    keys = list(view.entity_keys)
    precise = incident.rows is not None and all(k in incident.rows.columns for k in keys)
    rows = log.filter(pl.col("view") == view.name)
    rows = rows.filter(pl.any_horizontal([(pl.col("feature") == s.feature) & s.contains() for s in spans] or [pl.lit(False)]))
    entities = None
    if precise and incident.rows is not None:
        touched = incident.rows.select(keys).unique()
        entities = touched.height
        rows = rows.join(touched, on=keys, how="semi", nulls_equal=True)
    rows = rows.select(*_LOG_COLUMNS).with_columns(_partition_of(view, rows[EVENT_TIMESTAMP]).alias("feature_partition"))
    if incident.kind == "restated" and incident.found_at is not None and rows.height:
        cut = {p: _corrected_at(view.name, p, incident.found_at, publishes, writes) for p in rows["feature_partition"].unique()}
        until = rows["feature_partition"].replace_strict(cut, return_dtype=_UTC_US)
        rows = rows.filter(until.is_null() | (pl.col("request_time") < until))
    rows = _with_publish(rows, view.name, publishes).with_columns(pl.lit(incident.label).alias("incident"))
    impact = ViewImpact(
        incident.label, view.name, len(instants), instants[0] if instants else None, instants[-1] if instants else None,
        tuple(feature_partitions(view, instants)), "entity" if precise else "partition", entities,
        rows.height, rows["request_id"].n_unique(),
    )
    return impact, rows


@dataclass(frozen=True)
class BlastRadius:
    """The walk's result: incidents, what each reached per view, the served rows, publishes and models."""

    incidents: tuple[Incident, ...]
    impacts: tuple[ViewImpact, ...]
    served: pl.DataFrame  # one row per affected served value
    models: pl.DataFrame | None  # None: no predictions table, no model scored anything

    @property
    def request_ids(self) -> list[str]:
        return sorted(set(self.served["request_id"].to_list()))

    def publishes(self) -> pl.DataFrame:
        """Per publish that pushed an affected snapshot: its view, run, instant and the rows it served."""
        return (
            self.served.filter(pl.col("publish_run_id").is_not_null())
            .group_by("view", "publish_run_id", "published_at")
            .agg(pl.len().alias("served_rows"), pl.col("request_id").n_unique().alias("requests"))
            .sort("published_at", "view")
        )

    def to_dict(self, *, sample: int | None = None) -> dict[str, Any]:
        ids = self.request_ids
        return json_value({
            "incidents": [{"table": i.table, "partition": i.partition, "kind": i.kind, "reason": i.reason,
                           "found_at": i.found_at, "run_id": i.run_id, "delta_version": i.delta_version} for i in self.incidents],
            "views": [impact.__dict__ for impact in self.impacts],
            "publishes": self.publishes().to_dicts(),
            "affected_served_values": self.served.height,
            "affected_requests": len(ids),
            "request_ids": ids if sample is None else ids[:sample],
            "models": None if self.models is None else self.models.to_dicts(),
        })  # type: ignore[return-value]

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def summary(self) -> str:
        """A few lines for a person: incidents, per view what was reached, publishes, models, request ids."""
        if not self.incidents:
            return "no failed gate or restated partition found"
        lines = [f"{len(self.incidents)} incident(s):"]
        lines += [f"  {i.label}: {i.reason}" for i in self.incidents]
        for impact in self.impacts:
            where = f"{impact.partitions[0]}..{impact.partitions[-1]}" if impact.partitions else "no batch snapshot"
            scope = f"entity precision, {impact.entities} entities" if impact.precision == "entity" else "partition precision"
            lines.append(f"  -> {impact.view}: {impact.snapshots} snapshot(s) in partitions {where} ({scope}); "
                         f"{impact.served_rows} served value(s) in {impact.requests} request(s)")
        published = self.publishes()
        lines.append(f"publishes that pushed them: {published.height}" + "".join(
            f"\n  {r['view']} run {r['publish_run_id']} at {r['published_at']:%Y-%m-%d %H:%M} UTC: {r['served_rows']} value(s)"
            for r in published.iter_rows(named=True)))
        if self.models is None:
            lines.append(f"models: no predictions table ({PREDICTIONS_TABLE}), so no model scored these requests")
        else:
            lines += [f"model {r['model_name']} {r['model_version']}: {r['requests']} affected request(s)" for r in self.models.iter_rows(named=True)]
            if not self.models.height:
                lines.append("models: none of the affected requests was scored")
        ids = self.request_ids
        lines.append(f"affected requests: {len(ids)}" + (f": {', '.join(ids[:20])}{', ...' if len(ids) > 20 else ''}" if ids else ""))
        return "\n".join(lines)

    def markdown(self) -> str:
        """The per-view table for the UI."""
        head = "| incident | view | snapshots | partitions | precision | served values | requests |\n| --- | --- | --- | --- | --- | --- | --- |"
        body = [
            f"| {i.incident} | {i.view} | {i.snapshots} | {', '.join(i.partitions) or '-'} | "
            f"{i.precision}{f' ({i.entities} entities)' if i.entities is not None else ''} | {i.served_rows} | {i.requests} |"
            for i in self.impacts
        ]
        return "\n".join([head, *body]) if body else "No failed gate or restated partition: nothing served was touched."


def models_scoring(store: DeltaStore, served: pl.DataFrame) -> pl.DataFrame | None:
    """Per model and version, the affected requests it scored; None without a predictions table."""
    if not store.exists(PREDICTIONS_TABLE):
        return None
    touched = served.select("request_id", "entity_index").unique()
    return (
        store.scan(PREDICTIONS_TABLE).collect().join(touched, on=["request_id", "entity_index"], how="semi")
        .group_by("model_name", "model_version")
        .agg(pl.col("request_id").n_unique().alias("requests"), pl.col("request_id").unique().sort().alias("request_ids"))
        .sort("model_name", "model_version")
    )


def walk(
    store: DeltaStore,
    views: Mapping[str, FeatureView],
    incidents: Sequence[Incident],
    *,
    publishes: Sequence[PublishRecord] = (),
    writes: Sequence[FeatureWrite] = (),
    served_from: datetime | None = None,
    served_until: datetime | None = None,
) -> BlastRadius:
    """Walk every incident forward to the served values, publishes and models it reached (see the
    module docstring); `served_from`/`served_until` bound the requests searched (default: all)."""
    log = read_log(store, served_from, served_until) if incidents else read_log(store).head(0)
    impacts, parts = [], []
    for incident in incidents:
        for name, spans in _spans(incident, views).items():
            impact, rows = _walk_view(incident, views[name], spans, log, publishes, writes)
            impacts.append(impact)
            parts.append(rows)
    served = pl.concat(parts, how="vertical_relaxed") if parts else pl.DataFrame(
        schema={**{c: log.schema[c] for c in _LOG_COLUMNS if c in log.schema}, "feature_partition": pl.String,
                "publish_run_id": pl.String, "published_at": _UTC_US, "incident": pl.String})
    return BlastRadius(tuple(incidents), tuple(impacts), served, models_scoring(store, served))
