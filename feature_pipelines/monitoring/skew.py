"""Training/serving skew: what was served, against what the offline store says it should have been.

For every logged value (request, entity row, feature) the offline store is asked two questions,
both answered by the one point-in-time join the training path uses (`skew_frames`):

1. **Expected** -- the value a training row stamped at the request time gets: the newest snapshot
   with `event_timestamp <= request_time`, within the view's TTL (null past it).
2. **Served snapshot** -- the offline value of the very snapshot the server says it served
   (the log's `event_timestamp`), looked up exactly.

A served value *matches* when it equals the expected one (`abs_tolerance` for numbers, nulls only
equal nulls, NaN equals NaN). It is *lagged* -- counted apart, not as skew -- when it differs from
the expected value but is exactly the offline value of its own snapshot and that snapshot is at
most the view's declared freshness (`FreshnessSLA.warn_after`) older than the expected one: the
online store trails the lake by a publish, which the freshness SLA allows. Everything else is a
*mismatch*, with a reason:

- `stale`: the server's snapshot is older than the freshness SLA allows (more than `warn_after`
  behind the expected one), or it served a value from a snapshot past the view's TTL. The
  snapshot's age is judged on its own: a stale snapshot is a mismatch even when its value
  happens to equal the expected one, and a stale null is stale, not null;
- `null`: exactly one side is null (a zero-imputed null, an expired or never-published entity);
- `value`: both are values and they differ (another window, day boundary or rounding).

**On-demand features** (view "on_demand") are recomputed offline by `apply_on_demand`, the
server's own expression, on their inputs joined point-in-time at the request (request columns
from the log's `entity_key`), and judged like every other feature. Their served snapshot is their
inputs' snapshots as logged in the same entity row (the oldest one is their stamp); an input view
not logged in that row leaves them judged against the expected value alone.

**Streaming views** (`view.streaming`) served from the stream's tiles log `event_timestamp` = the
request instant. Those rows are judged against the value computed at that instant from the raw
events (`get_historical_features(..., streaming_views="at_instant")`); no snapshot-age rule
applies. Their freshness is the stream's: a served value that differs from the value at the
request instant but equals the value `freshness_seconds` earlier is *lagged* (an event known in
the last second may not be applied yet), not skew. Such a row read after the raw table's newest event
is left out until the raw hour it fell in is materialized (the stream may hold events the lake does
not yet; it is judged when the day is re-run). A streaming view's rows served from its snapshots
(a stamp before the request) are judged as snapshots.

Every mismatch is then split three ways with Delta time travel (`restatement.py`: serving bug,
later restatement, late-arriving data) and each failing feature's mismatches are replayed against
candidate faults (`root_cause.py`). Per feature the report gives the mismatch rate, the
null-mismatch rate, the lag rate, the max/mean absolute difference of numeric mismatches, the
three-way counts and the root cause, with examples. A serving path that bypasses the platform and
logs no snapshot stamp is judged against the expected value alone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import polars as pl

from feature_pipelines.features.on_demand import ON_DEMAND_FEATURES, OnDemandFeature
from feature_pipelines.features.references import FeatureReference
from feature_pipelines.features.spec import FeatureView
from feature_pipelines.monitoring import restatement, root_cause
from feature_pipelines.monitoring.figures import Figure, Figures
from feature_pipelines.monitoring.skew_frames import (
    AT,
    REQUEST_KEY,
    SkewInputError,
    long_values,
    on_demand_values,
    request_columns,
    require_columns,
    stored_values,
)
from feature_pipelines.monitoring.values import NUMERIC_DTYPES, json_safe, numbers_equal
from feature_pipelines.names import EVENT_TIMESTAMP, ON_DEMAND_VIEW
from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.offline.historical import AsOf

MAX_EXAMPLES = 5
LOG_COLUMNS = ("request_id", "entity_index", "request_time", "view", "feature", "value_json", "value_float", "status",
               "event_timestamp")

__all__ = ["FeatureSkew", "SkewInputError", "SkewReport", "compare_served_to_offline"]


@dataclass(frozen=True)
class FeatureSkew:
    """How one feature's served values compare with the offline reconstruction."""

    view: str
    feature: str
    compared: int
    mismatches: int
    null_mismatches: int
    stale_mismatches: int
    lagged: int
    max_abs_diff: float | None
    mean_abs_diff: float | None
    tolerance: float
    examples: tuple[dict[str, Any], ...] = ()
    serving_bugs: int = 0
    restatements: int = 0
    late_arrivals: int = 0
    changed_by: tuple[str, ...] = ()  # "<table> v<version> (run <id>)" of each restating / late commit
    root_cause: root_cause.RootCause | None = None

    @property
    def mismatch_rate(self) -> float:
        return self.mismatches / self.compared if self.compared else 0.0

    @property
    def null_mismatch_rate(self) -> float:
        return self.null_mismatches / self.compared if self.compared else 0.0

    @property
    def lag_rate(self) -> float:
        return self.lagged / self.compared if self.compared else 0.0

    @property
    def passed(self) -> bool:
        return self.mismatch_rate <= self.tolerance

    @property
    def reference(self) -> str:
        return str(FeatureReference(self.view, self.feature))

    @property
    def cause(self) -> str | None:
        return self.root_cause.describe() if self.root_cause is not None else None

    def three_way(self) -> str:
        text = f"serving bug {self.serving_bugs}, restated {self.restatements}, late data {self.late_arrivals}"
        return text + (f" (changed by {', '.join(self.changed_by)})" if self.changed_by else "")

    def summary(self) -> str:
        text = (
            f"{self.reference}: {self.mismatches}/{self.compared} served values differ from the offline "
            f"point-in-time value (rate {self.mismatch_rate:.4f}, tolerance {self.tolerance:g}; "
            f"null mismatches {self.null_mismatches}, stale {self.stale_mismatches}"
        )
        if self.max_abs_diff is not None:
            text += f", max |diff| {self.max_abs_diff:.6g}, mean |diff| {self.mean_abs_diff:.6g}"
        text += f"; {self.three_way()}"
        if self.cause is not None:
            text += f"; cause: {self.cause}"
        return text + ")"

    def as_metadata(self) -> dict[str, Any]:
        return SKEW_FIGURES.metadata(self)


SKEW_FIGURES: Figures[FeatureSkew] = Figures(
    (
        Figure("view", lambda f: f.view, pl.String()),
        Figure("feature", lambda f: f.feature, pl.String()),
        Figure("reference", lambda f: f.reference, heading="feature", key="feature"),
        Figure("compared", lambda f: f.compared, pl.Int64()),
        Figure("mismatches", lambda f: f.mismatches, pl.Int64()),
        Figure("null_mismatches", lambda f: f.null_mismatches, pl.Int64(), heading="null mismatches"),
        Figure("stale_mismatches", lambda f: f.stale_mismatches, pl.Int64(), heading="stale"),
        Figure("lagged", lambda f: f.lagged, pl.Int64(), heading="lagged (within SLA)"),
        Figure("mismatch_rate", lambda f: f.mismatch_rate, pl.Float64(), heading="mismatch rate", digits=6),
        Figure("null_mismatch_rate", lambda f: f.null_mismatch_rate, digits=6),
        Figure("lag_rate", lambda f: f.lag_rate, digits=6),
        Figure("max_abs_diff", lambda f: f.max_abs_diff, pl.Float64(), heading="max abs diff"),
        Figure("mean_abs_diff", lambda f: f.mean_abs_diff, pl.Float64()),
        Figure("tolerance", lambda f: f.tolerance, pl.Float64()),
        Figure("passed", lambda f: f.passed, pl.Boolean()),
        Figure("serving_bugs", lambda f: f.serving_bugs, pl.Int64(), heading="serving bug"),
        Figure("restatements", lambda f: f.restatements, pl.Int64(), heading="restated later"),
        Figure("late_arrivals", lambda f: f.late_arrivals, pl.Int64(), heading="late data"),
        Figure("changed_by", lambda f: ", ".join(f.changed_by) or None, pl.String(), heading="changed by"),
        Figure("root_cause", lambda f: f.cause, pl.String(), heading="root cause"),
    ),
    metadata_order=(
        "reference", "compared", "mismatch_rate", "null_mismatch_rate", "stale_mismatches", "lag_rate",
        "max_abs_diff", "mean_abs_diff", "tolerance", "passed", "serving_bugs", "restatements", "late_arrivals",
        "changed_by", "root_cause",
    ),
)
"""A skew figure's table column, metadata key and report heading."""

SKEW_REPORT_COLUMNS = (
    "reference", "compared", "mismatch_rate", "null_mismatches", "stale_mismatches", "lagged", "max_abs_diff",
    "serving_bugs", "restatements", "late_arrivals", "root_cause", "passed",
)


@dataclass(frozen=True)
class SkewReport:
    """Every compared feature of a log (on-demand features included)."""

    features: tuple[FeatureSkew, ...]
    log_rows: int
    offline_versions: dict[str, int] = field(default_factory=dict)
    # Per streaming view, its stream-served values read after the raw table's newest event: the
    # stream knew events the lake does not hold yet; they are judged when the day is re-run.
    awaiting_raw: dict[str, int] = field(default_factory=dict)

    def awaiting_note(self) -> str:
        """The values left for a re-run, in words ("" when none)."""
        if not self.awaiting_raw:
            return ""
        counts = ", ".join(f"{view}: {n}" for view, n in sorted(self.awaiting_raw.items()))
        return (f"; {sum(self.awaiting_raw.values())} stream-served values read after the lake's newest raw event "
                f"wait for that hour to land and are judged on a re-run ({counts})")

    @property
    def failing(self) -> tuple[FeatureSkew, ...]:
        return tuple(f for f in self.features if not f.passed)

    @property
    def passed(self) -> bool:
        return not self.failing

    @property
    def on_demand_compared(self) -> int:
        """How many served on-demand features were recomputed and judged."""
        return sum(1 for f in self.features if f.view == ON_DEMAND_VIEW)

    def three_way_counts(self) -> dict[str, dict[str, int]]:
        """Per feature with mismatches: serving bugs, restatements, late arrivals."""
        return {
            f.reference: {"serving_bug": f.serving_bugs, "restatement": f.restatements, "late_arrival": f.late_arrivals}
            for f in self.features if f.mismatches
        }

    def root_causes(self) -> dict[str, dict[str, Any]]:
        """Per feature with mismatches: the candidate fault that explains them (or None), its rate,
        the verdict in words and the best candidates' rates."""
        return {f.reference: root_cause.as_metadata(f.root_cause) for f in self.features if f.root_cause is not None}


@dataclass(frozen=True)
class JudgingRule:
    """How a group of rows is judged: the snapshot-age limits (None: no age rule, as for values
    computed at the request instant) and each feature's tolerance."""

    warn_after: timedelta | None
    ttl: timedelta | None
    tolerances: Mapping[str, float]
    # A stream-served group: its "snapshot" value is the one of the instant the view's streaming
    # freshness SLA earlier, and a served value equal to it is lagged (within the SLA), not skew.
    stream_lag: bool = False

    @classmethod
    def of_view(cls, view: FeatureView) -> JudgingRule:
        return cls(view.freshness.warn_after, view.ttl, {f.name: f.monitoring.abs_tolerance for f in view.features})

    @classmethod
    def of_on_demand(cls, features: Sequence[OnDemandFeature], views: Mapping[str, FeatureView]) -> JudgingRule:
        """The strictest limits of the input views (an on-demand value is as old as its oldest input)."""
        inputs = [views[v] for f in features for v in f.input_views()]
        return cls(
            min((v.freshness.warn_after for v in inputs), default=None),
            min((v.ttl for v in inputs), default=None),
            {f.name: 1e-9 for f in features},
        )


def _served_frame(log: pl.DataFrame, view_name: str, keys: Sequence[str], numeric: set[str]) -> pl.DataFrame:
    rows = log.filter(pl.col("view") == view_name)
    is_numeric = pl.col("feature").is_in(list(numeric))
    return rows.select(
        *REQUEST_KEY, *keys, "request_time", "feature", "status", "event_timestamp",
        *(["entity_key"] if "entity_key" in rows.columns else []),
        pl.when(is_numeric).then(pl.col("value_float")).alias("served_float"),
        pl.when(is_numeric).then(None).otherwise(pl.col("value_json")).alias("served_json"),
    )


def _with_values(served: pl.DataFrame, values: pl.DataFrame, prefix: str, stamp_as: str) -> pl.DataFrame:
    renamed = values.rename({"value_float": f"{prefix}_float", "value_json": f"{prefix}_json", "stamp": stamp_as})
    return served.join(renamed, on=[*REQUEST_KEY, "feature"], how="left", maintain_order="left")


def _snapshot_values(store: DeltaStore, view: FeatureView, served: pl.DataFrame, features: Sequence[str], version: int) -> pl.DataFrame:
    """The offline value of exactly the snapshot each row says it served, keyed by entity and stamp."""
    keys = list(view.entity_keys)
    stamps = served.filter(pl.col("event_timestamp").is_not_null())
    empty = served.with_columns(pl.lit(None, dtype=pl.Float64).alias("snapshot_float"), pl.lit(None, dtype=pl.String).alias("snapshot_json"))
    if stamps.height == 0:
        return empty
    low, high = stamps["event_timestamp"].min(), stamps["event_timestamp"].max()
    rows = (
        store.scan(view.name, version=version)
        .select(*keys, EVENT_TIMESTAMP, *features)
        .filter(pl.col(EVENT_TIMESTAMP) >= low, pl.col(EVENT_TIMESTAMP) <= high)
        .collect()
        .unique(subset=[*keys, EVENT_TIMESTAMP], keep="last")
    )
    if rows.height == 0:
        return empty
    snapshot = long_values(rows, {f: view.feature(f).dtype for f in features}, [*keys, EVENT_TIMESTAMP], None).drop("stamp")
    snapshot = snapshot.rename({EVENT_TIMESTAMP: "event_timestamp", "value_float": "snapshot_float", "value_json": "snapshot_json"})
    snapshot = snapshot.cast({k: served.schema[k] for k in keys})
    return served.join(snapshot, on=[*keys, "event_timestamp", "feature"], how="left", maintain_order="left")


@dataclass(frozen=True)
class _Group:
    """One judged group of rows (a view's snapshot-served rows, its stream-served rows, or the
    on-demand features) and how to read its offline values again (for the three-way split)."""

    view: FeatureView | None
    classified: pl.DataFrame
    tables: tuple[str, ...]
    evaluate: restatement.Evaluator
    now: dict[str, int]


def _view_groups(store: DeltaStore, view: FeatureView, served: pl.DataFrame, as_of: AsOf) -> tuple[list[_Group], int]:
    """The view's judged groups, and how many stream-served values wait for their raw hour."""
    features = served.get_column("feature").unique().to_list()
    unknown = sorted(set(features) - set(view.feature_names))
    if unknown:
        raise SkewInputError(f"served log: view {view.name!r} has no feature(s) {unknown}")
    features = [f for f in view.feature_names if f in set(features)]
    served = served.with_columns(pl.col("request_time").alias(AT))
    streamed = (
        (pl.col("event_timestamp") == pl.col("request_time")).fill_null(False)
        if view.streaming is not None else pl.lit(False)
    )
    stream_rows = served.filter(streamed)
    streamed_rows = stream_rows.height
    if stream_rows.height:
        # The stream may hold events the raw table does not yet (its open hour): a read after the
        # raw table's newest event cannot be judged until that hour is materialized.
        newest = store.scan(view.source.asset).select(pl.col(view.source.known_at_column).max()).collect().item()
        stream_rows = stream_rows.filter(pl.col("request_time") <= newest) if newest is not None else stream_rows.clear()
    groups = []
    awaiting = streamed_rows - stream_rows.height
    for at_instant, rows in ((False, served.filter(~streamed)), (True, stream_rows)):
        if rows.height == 0:
            continue
        entities = rows.unique(subset=list(REQUEST_KEY), keep="first")
        expected, version = stored_values(store, view, entities, features, as_of=as_of, at_instant=at_instant)
        compared = _with_values(rows, expected, "expected", "expected_event_timestamp")
        if at_instant:
            # The stream's own lag: the value the instant `freshness_seconds` earlier had is within
            # the view's SLA (an event that became known in the last second may not be applied yet).
            # Computed only for the request rows whose values may differ (unequal before any
            # tolerance): for the others it is never consulted.
            differing = compared.filter(pl.col("served_float").ne_missing(pl.col("expected_float"))
                                        | pl.col("served_json").ne_missing(pl.col("expected_json")))
            suspects = entities.join(differing.select(REQUEST_KEY).unique(), on=list(REQUEST_KEY), how="semi")
            if suspects.height:
                sla = timedelta(seconds=view.streaming.freshness_seconds)  # type: ignore[union-attr]
                earlier, _ = stored_values(store, view, suspects.with_columns(pl.col(AT) - sla), features,
                                           as_of=as_of, at_instant=True)
                lagging = earlier.drop("stamp").rename({"value_float": "snapshot_float", "value_json": "snapshot_json"})
                compared = compared.join(lagging, on=[*REQUEST_KEY, "feature"], how="left", maintain_order="left")
            else:
                compared = compared.with_columns(pl.lit(None, dtype=pl.Float64).alias("snapshot_float"),
                                                 pl.lit(None, dtype=pl.String).alias("snapshot_json"))
            rule = JudgingRule(None, None, JudgingRule.of_view(view).tolerances, stream_lag=True)
        else:
            compared = _snapshot_values(store, view, compared, features, version)
            rule = JudgingRule.of_view(view)
        table = view.source.asset if at_instant else view.name

        def evaluate(rows: pl.DataFrame, pins: Mapping[str, int], at_instant: bool = at_instant) -> pl.DataFrame:
            return stored_values(store, view, rows, sorted(set(rows["feature"])), as_of=pins, at_instant=at_instant)[0]

        groups.append(_Group(view, _classify(compared, rule), (table,), evaluate, {table: version}))
    return groups, awaiting


def _on_demand_group(
    store: DeltaStore, views: Mapping[str, FeatureView], log: pl.DataFrame, on_demand: Mapping[str, OnDemandFeature],
    as_of: AsOf,
) -> _Group | None:
    names = log.filter(pl.col("view") == ON_DEMAND_VIEW).get_column("feature").unique().sort().to_list()
    if not names:
        return None
    unknown = [n for n in names if n not in on_demand]
    if unknown:
        raise SkewInputError(f"served log: unknown on-demand feature(s) {unknown}; known: {sorted(on_demand)}")
    features = [on_demand[n] for n in names]
    input_views = list(dict.fromkeys(v for f in features for v in f.input_views()))
    keys = list(dict.fromkeys(k for v in input_views for k in views[v].entity_keys))
    require_columns(log, keys, "served log of the on-demand features")
    served = _served_frame(log, ON_DEMAND_VIEW, keys, {f.name for f in features if f.dtype in NUMERIC_DTYPES})
    # The snapshot each input view was served from, as logged by that view's rows of the same entity row.
    stamps = {v: f"__stamp_{v}" for v in input_views}
    for name, column in stamps.items():
        logged = log.filter(pl.col("view") == name).group_by(list(REQUEST_KEY)).agg(pl.col("event_timestamp").min().alias(column))
        served = served.join(logged, on=list(REQUEST_KEY), how="left", maintain_order="left")
    served = served.with_columns(
        pl.col("request_time").alias(AT),
        (pl.min_horizontal(*stamps.values()) if stamps else pl.lit(None, dtype=pl.Datetime("us", "UTC"))).alias("event_timestamp"),
    )
    entities = request_columns(served.unique(subset=list(REQUEST_KEY), keep="first"), features)
    expected = on_demand_values(store, views, features, entities, as_of=as_of)
    compared = _with_values(served, expected, "expected", "expected_event_timestamp")
    all_logged = pl.all_horizontal(pl.col(c).is_not_null() for c in stamps.values()) if stamps else pl.lit(False)
    logged_entities = entities.filter(all_logged)
    if logged_entities.height:
        snapshot = on_demand_values(store, views, features, logged_entities, as_of=as_of, stamps=stamps)
        compared = compared.join(
            snapshot.drop("stamp").rename({"value_float": "snapshot_float", "value_json": "snapshot_json"}),
            on=[*REQUEST_KEY, "feature"], how="left", maintain_order="left",
        )
    else:
        compared = compared.with_columns(pl.lit(None, dtype=pl.Float64).alias("snapshot_float"),
                                         pl.lit(None, dtype=pl.String).alias("snapshot_json"))
    now = {v: _version_read(store, v, as_of) for v in input_views}

    def evaluate(rows: pl.DataFrame, pins: Mapping[str, int]) -> pl.DataFrame:
        wanted = [on_demand[n] for n in sorted(set(rows["feature"]))]
        return on_demand_values(store, views, wanted, request_columns(rows, wanted), as_of=pins)

    return _Group(None, _classify(compared, JudgingRule.of_on_demand(features, views)), tuple(input_views), evaluate, now)


def _version_read(store: DeltaStore, table: str, as_of: AsOf) -> int:
    """The version of `table` an `as_of` read takes (as get_historical_features picks it)."""
    if as_of is None:
        return store.version(table)
    if isinstance(as_of, datetime):
        return store.scan_version_at(table, as_of)
    return int(as_of[table])


def _equal(served_float: str, served_json: str, offline_float: str, offline_json: str, tolerance: str) -> pl.Expr:
    """Served == offline: numbers within tolerance (NaN == NaN), nulls only with nulls, others by JSON."""
    numeric = numbers_equal(pl.col(served_float), pl.col(offline_float), pl.col(tolerance))
    textual = pl.col(served_json) == pl.col(offline_json)
    return pl.when(pl.col(offline_json).is_not_null()).then(textual).otherwise(numeric).fill_null(False)


def _classify(compared: pl.DataFrame, rule: JudgingRule) -> pl.DataFrame:
    frame = compared.with_columns(
        pl.col("feature").replace_strict(dict(rule.tolerances), return_dtype=pl.Float64).alias("abs_tolerance"),
    )
    matches = _equal("served_float", "served_json", "expected_float", "expected_json", "abs_tolerance")
    own_snapshot = _equal("served_float", "served_json", "snapshot_float", "snapshot_json", "abs_tolerance")
    served_null = pl.col("served_float").is_null() & pl.col("served_json").fill_null("null").eq("null")
    expected_null = pl.col("expected_float").is_null() & pl.col("expected_json").fill_null("null").eq("null")
    stamped = pl.col("event_timestamp").is_not_null()
    if rule.stream_lag:
        within_sla, stale = pl.lit(True), pl.lit(False)
    elif rule.warn_after is None or rule.ttl is None:
        within_sla, stale = pl.lit(False), pl.lit(False)
    else:
        behind = pl.col("expected_event_timestamp") - pl.col("event_timestamp")
        within_sla = (
            stamped & (pl.col("event_timestamp") <= pl.col("request_time"))
            & (pl.col("expected_event_timestamp").is_null() | (behind <= rule.warn_after))
        )
        # The snapshot's age on its own: too far behind the expected one, or a value served past the TTL.
        too_far_behind = stamped & pl.col("expected_event_timestamp").is_not_null() & (behind > rule.warn_after)
        past_ttl = stamped & ~served_null & ((pl.col("request_time") - pl.col("event_timestamp")) > rule.ttl)
        stale = too_far_behind | past_ttl
    frame = frame.with_columns(
        matches.alias("matches"),
        stale.fill_null(False).alias("stale"),
        (~matches & own_snapshot.fill_null(False) & within_sla.fill_null(False)).alias("lagged"),
    ).with_columns(pl.col("lagged") & ~pl.col("stale"))
    mismatch = (~pl.col("matches") & ~pl.col("lagged")) | pl.col("stale")
    return frame.with_columns(
        mismatch.alias("mismatch"),
        pl.when(~mismatch).then(None)
        .when(pl.col("stale")).then(pl.lit("stale"))
        .when(served_null != expected_null).then(pl.lit("null"))
        .otherwise(pl.lit("value"))
        .alias("reason"),
        pl.when(mismatch).then((pl.col("served_float") - pl.col("expected_float")).abs()).alias("abs_diff"),
    )


def _example(row: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    served = row["served_float"] if row["served_json"] is None else row["served_json"]
    expected = row["expected_float"] if row["expected_json"] is None else row["expected_json"]
    return {
        "request_id": row["request_id"],
        "entity": json.dumps({k: json_safe(row[k]) for k in keys}),
        "request_time": json_safe(row["request_time"]),
        "served": json_safe(served),
        "served_snapshot": json_safe(row["event_timestamp"]),
        "expected": json_safe(expected),
        "expected_snapshot": json_safe(row["expected_event_timestamp"]),
        "reason": row["reason"],
        "three_way": row.get("three_way"),
    }


def _changed_by(bad: pl.DataFrame) -> tuple[str, ...]:
    if "changed_version" not in bad.columns:
        return ()
    commits = bad.filter(pl.col("changed_version").is_not_null()).select("changed_table", "changed_version", "changed_run").unique()
    return tuple(
        f"{table} v{version} (run {run or 'not recorded'})"
        for table, version, run in commits.sort("changed_table", "changed_version").iter_rows()
    )


def _summarise(group: _Group, view_name: str, keys: Sequence[str], features: Sequence[tuple[str, float]],
               bad_rows: pl.DataFrame, causes: Mapping[str, root_cause.RootCause]) -> list[FeatureSkew]:
    out = []
    classified = group.classified
    for feature, skew_tolerance in features:
        rows = classified.filter(pl.col("feature") == feature)
        if rows.height == 0:
            continue
        bad = bad_rows.filter(pl.col("feature") == feature)
        diffs = bad.get_column("abs_diff").drop_nulls().drop_nans()
        split = bad.get_column("three_way").value_counts() if bad.height else None
        counts = dict(split.iter_rows()) if split is not None else {}
        out.append(
            FeatureSkew(
                view=view_name,
                feature=feature,
                compared=rows.height,
                mismatches=bad.height,
                null_mismatches=bad.filter(pl.col("reason") == "null").height,
                stale_mismatches=bad.filter(pl.col("reason") == "stale").height,
                lagged=int(rows.get_column("lagged").sum()),
                max_abs_diff=float(diffs.max()) if diffs.len() else None,  # type: ignore[arg-type]
                mean_abs_diff=float(diffs.mean()) if diffs.len() else None,  # type: ignore[arg-type]
                tolerance=skew_tolerance,
                examples=tuple(_example(r, keys) for r in bad.head(MAX_EXAMPLES).iter_rows(named=True)),
                serving_bugs=counts.get("serving_bug", 0),
                restatements=counts.get("restatement", 0),
                late_arrivals=counts.get("late_arrival", 0),
                changed_by=_changed_by(bad),
                root_cause=causes.get(feature),
            )
        )
    return out


def _judge(store: DeltaStore, group: _Group, as_of: AsOf) -> tuple[pl.DataFrame, dict[str, root_cause.RootCause]]:
    """The group's mismatched rows split three ways, and (per feature with any) the root cause."""
    bad = group.classified.filter(pl.col("mismatch"))
    if bad.height == 0:
        return bad.with_columns(pl.lit(None, dtype=pl.String).alias("three_way")), {}
    split = restatement.split_three_way(store, bad, tables=group.tables, evaluate=group.evaluate, now=group.now)
    return split, root_cause.explain(store, group.view, bad, as_of=as_of)


def _merge(parts: list[tuple[pl.DataFrame, dict[str, root_cause.RootCause]]]) -> tuple[pl.DataFrame, dict[str, root_cause.RootCause]]:
    """A view's snapshot- and stream-served groups judged together per feature (causes: the group
    with more mismatches of the feature speaks)."""
    frames = [frame for frame, _ in parts if frame.height]
    causes: dict[str, root_cause.RootCause] = {}
    for _, found in parts:
        for feature, cause in found.items():
            held = causes.get(feature)
            if held is None or (cause.best and held.best and cause.best.of > held.best.of):
                causes[feature] = cause
    bad = pl.concat(frames, how="diagonal_relaxed") if frames else parts[0][0]
    return bad, causes


def compare_served_to_offline(
    store: DeltaStore,
    views: Mapping[str, FeatureView],
    log: pl.DataFrame,
    *,
    as_of: AsOf = None,
    on_demand: Mapping[str, OnDemandFeature] = ON_DEMAND_FEATURES,
) -> SkewReport:
    """Judge every logged value against the offline store (module docstring).

    `as_of` pins the offline tables (versions or an instant); by default their latest versions,
    i.e. what training would read today. Views in the log that are neither in `views` nor the
    on-demand view, and on-demand features not in `on_demand`, are an error.
    """
    if log.height == 0:
        return SkewReport(features=(), log_rows=0)
    require_columns(log, LOG_COLUMNS, "served log")
    logged_views = set(log.get_column("view").unique().to_list())
    unknown = sorted(logged_views - set(views) - {ON_DEMAND_VIEW})
    if unknown:
        raise SkewInputError(f"served log: unknown feature view(s) {unknown}; known: {sorted(views)}")
    results: list[FeatureSkew] = []
    versions: dict[str, int] = {}
    awaiting: dict[str, int] = {}
    for name in sorted(logged_views - {ON_DEMAND_VIEW}):
        view = views[name]
        require_columns(log, list(view.entity_keys), f"served log of view {name!r}")
        numeric = {f.name for f in view.features if f.dtype in NUMERIC_DTYPES}
        groups, waiting = _view_groups(store, view, _served_frame(log, name, view.entity_keys, numeric), as_of)
        if waiting:
            awaiting[name] = waiting
        if not groups:  # every row a stream read the lake cannot judge yet
            continue
        for group in groups:
            versions.update(group.now)
        bad, causes = _merge([_judge(store, group, as_of) for group in groups])
        merged = _Group(view, pl.concat([g.classified for g in groups], how="diagonal_relaxed"), (), groups[0].evaluate, {})
        tolerances = [(f.name, f.monitoring.skew_tolerance) for f in view.features]
        results.extend(_summarise(merged, name, view.entity_keys, tolerances, bad, causes))
    if ON_DEMAND_VIEW in logged_views:
        group = _on_demand_group(store, views, log, on_demand, as_of)
        if group is not None:
            bad, causes = _judge(store, group, as_of)
            keys = [c for c in group.classified.columns if c in {k for v in views.values() for k in v.entity_keys}]
            names = sorted(set(group.classified["feature"]))
            results.extend(_summarise(group, ON_DEMAND_VIEW, keys, [(n, 0.0) for n in names], bad, causes))
    return SkewReport(features=tuple(results), log_rows=log.height, offline_versions=versions, awaiting_raw=awaiting)
