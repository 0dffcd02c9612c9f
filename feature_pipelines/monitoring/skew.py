"""Training/serving skew: what was served, against what the offline store says it should have been.

For every logged value (request, entity row, feature) of a stored feature view the offline store
is asked two questions, both answered by the one point-in-time join the training path uses:

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

- `null`: exactly one side is null (a zero-imputed null, an expired or never-published entity);
- `stale`: the server's snapshot is older than the freshness SLA allows;
- `value`: both are values and they differ (another window, day boundary or rounding).

Per feature the report gives the mismatch rate, the null-mismatch rate, the lag rate and the
max/mean absolute difference of numeric mismatches, with examples. A serving path that bypasses
the platform and logs no snapshot stamp is judged against the expected value alone.

On-demand features (view "on_demand") are computed in the request from stored features; their
inputs are checked here, the on-demand expressions themselves by the parity tests.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from feature_pipelines.features.references import FeatureReference
from feature_pipelines.features.spec import FeatureView
from feature_pipelines.monitoring.figures import Figure, Figures
from feature_pipelines.monitoring.values import NUMERIC_DTYPES, json_safe, numbers_equal
from feature_pipelines.names import EVENT_TIMESTAMP, ON_DEMAND_VIEW
from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.offline.historical import AsOf, get_historical_features, stamp_column
from feature_pipelines.serving.request_log import value_json

REQUEST_KEY = ("request_id", "entity_index")
MAX_EXAMPLES = 5


class SkewInputError(ValueError):
    """The served log cannot be compared (a missing column, an unknown view or feature)."""


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

    def summary(self) -> str:
        text = (
            f"{self.reference}: {self.mismatches}/{self.compared} served values differ from the offline "
            f"point-in-time value (rate {self.mismatch_rate:.4f}, tolerance {self.tolerance:g}; "
            f"null mismatches {self.null_mismatches}, stale {self.stale_mismatches}"
        )
        if self.max_abs_diff is not None:
            text += f", max |diff| {self.max_abs_diff:.6g}, mean |diff| {self.mean_abs_diff:.6g}"
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
    ),
    metadata_order=(
        "reference", "compared", "mismatch_rate", "null_mismatch_rate", "stale_mismatches", "lag_rate",
        "max_abs_diff", "mean_abs_diff", "tolerance", "passed",
    ),
)
"""A skew figure's table column, metadata key and report heading."""

SKEW_REPORT_COLUMNS = (
    "reference", "compared", "mismatch_rate", "null_mismatches", "stale_mismatches", "lagged", "max_abs_diff", "passed",
)


@dataclass(frozen=True)
class SkewReport:
    """Every compared feature of a log, and the log rows that could not be judged."""

    features: tuple[FeatureSkew, ...]
    log_rows: int
    skipped_on_demand_rows: int = 0
    offline_versions: dict[str, int] = field(default_factory=dict)

    @property
    def failing(self) -> tuple[FeatureSkew, ...]:
        return tuple(f for f in self.features if not f.passed)

    @property
    def passed(self) -> bool:
        return not self.failing


def _require_columns(frame: pl.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise SkewInputError(f"{what}: column(s) {missing} missing (has {frame.columns})")


def _as_float(column: str) -> pl.Expr:
    return pl.col(column).cast(pl.Float64, strict=False)


def _offline_long(frame: pl.DataFrame, view: FeatureView, features: Sequence[str], prefix: str, index: Sequence[str]) -> pl.DataFrame:
    """Wide offline values -> one row per (index, feature) with float and JSON forms."""
    numeric = [f for f in features if view.feature(f).dtype in NUMERIC_DTYPES]
    other = [f for f in features if f not in numeric]
    parts = []
    if numeric:
        parts.append(
            frame.select(*index, *[_as_float(f) for f in numeric])
            .unpivot(index=list(index), on=numeric, variable_name="feature", value_name=f"{prefix}_float")
            .with_columns(pl.lit(None, dtype=pl.String).alias(f"{prefix}_json"))
        )
    if other:
        encoded = frame.select(
            *index, *[pl.col(f).map_elements(value_json, return_dtype=pl.String).fill_null("null") for f in other]
        )
        parts.append(
            encoded.unpivot(index=list(index), on=other, variable_name="feature", value_name=f"{prefix}_json")
            .with_columns(pl.lit(None, dtype=pl.Float64).alias(f"{prefix}_float"))
            .select(*index, "feature", f"{prefix}_float", f"{prefix}_json")
        )
    return pl.concat(parts, how="vertical") if len(parts) > 1 else parts[0]


def _equal(served_float: str, served_json: str, offline_float: str, offline_json: str, tolerance: str) -> pl.Expr:
    """Served == offline: numbers within tolerance (NaN == NaN), nulls only with nulls, others by JSON."""
    numeric = numbers_equal(pl.col(served_float), pl.col(offline_float), pl.col(tolerance))
    textual = pl.col(served_json) == pl.col(offline_json)
    return pl.when(pl.col(offline_json).is_not_null()).then(textual).otherwise(numeric).fill_null(False)


def _view_comparison(
    store: DeltaStore, view: FeatureView, served: pl.DataFrame, as_of: AsOf
) -> tuple[pl.DataFrame, int]:
    """One row per logged value of `view` with its expected and served-snapshot offline values."""
    features = served.get_column("feature").unique().to_list()
    unknown = sorted(set(features) - set(view.feature_names))
    if unknown:
        raise SkewInputError(f"served log: view {view.name!r} has no feature(s) {unknown}")
    features = [f for f in view.feature_names if f in set(features)]
    keys = list(view.entity_keys)
    entities = served.select(*REQUEST_KEY, *keys, "request_time").unique(subset=list(REQUEST_KEY), keep="first")
    references = [str(FeatureReference(view.name, f)) for f in features]
    historical = get_historical_features(
        store,
        {view.name: view},
        entities.with_columns(pl.col("request_time").dt.cast_time_unit("us").alias(EVENT_TIMESTAMP)),
        references,
        as_of=as_of,
        include_event_timestamps=True,
    )
    expected_wide = historical.frame.rename({stamp_column(view.name): "expected_event_timestamp"})
    expected = _offline_long(expected_wide, view, features, "expected", [*REQUEST_KEY, "expected_event_timestamp"])

    # The offline value of exactly the snapshot the server says it served.
    stamps = served.filter(pl.col("event_timestamp").is_not_null())
    snapshot = pl.DataFrame()
    if stamps.height:
        lazy = store.scan(view.name, version=historical.versions[view.name])
        low, high = stamps["event_timestamp"].min(), stamps["event_timestamp"].max()
        rows = (
            lazy.select(*keys, EVENT_TIMESTAMP, *features)
            .filter(pl.col(EVENT_TIMESTAMP) >= low, pl.col(EVENT_TIMESTAMP) <= high)
            .collect()
            .unique(subset=[*keys, EVENT_TIMESTAMP], keep="last")
        )
        snapshot = _offline_long(rows, view, features, "snapshot", [*keys, EVENT_TIMESTAMP]).rename(
            {EVENT_TIMESTAMP: "event_timestamp"}
        )
    compared = served.join(expected, on=[*REQUEST_KEY, "feature"], how="left")
    if snapshot.height:
        key_types = {k: compared.schema[k] for k in keys}
        snapshot = snapshot.cast(key_types)
        compared = compared.join(snapshot, on=[*keys, "event_timestamp", "feature"], how="left")
    else:
        compared = compared.with_columns(
            pl.lit(None, dtype=pl.Float64).alias("snapshot_float"), pl.lit(None, dtype=pl.String).alias("snapshot_json")
        )
    return compared, historical.versions[view.name]


def _served_frame(log: pl.DataFrame, view: FeatureView) -> pl.DataFrame:
    rows = log.filter(pl.col("view") == view.name)
    numeric = {f.name for f in view.features if f.dtype in NUMERIC_DTYPES}
    return rows.select(
        *REQUEST_KEY,
        *view.entity_keys,
        "request_time",
        "feature",
        "status",
        "event_timestamp",
        pl.when(pl.col("feature").is_in(list(numeric))).then(pl.col("value_float")).alias("served_float"),
        pl.when(pl.col("feature").is_in(list(numeric))).then(None).otherwise(pl.col("value_json")).alias("served_json"),
    )


def _classify(compared: pl.DataFrame, view: FeatureView) -> pl.DataFrame:
    tolerance = {f.name: f.monitoring.abs_tolerance for f in view.features}
    frame = compared.with_columns(
        pl.col("feature").replace_strict(tolerance, return_dtype=pl.Float64).alias("abs_tolerance"),
    )
    matches = _equal("served_float", "served_json", "expected_float", "expected_json", "abs_tolerance")
    own_snapshot = _equal("served_float", "served_json", "snapshot_float", "snapshot_json", "abs_tolerance")
    behind = pl.col("expected_event_timestamp") - pl.col("event_timestamp")
    within_sla = (
        pl.col("event_timestamp").is_not_null()
        & (pl.col("event_timestamp") <= pl.col("request_time"))
        & (pl.col("expected_event_timestamp").is_null() | (behind <= view.freshness.warn_after))
    )
    served_null = pl.col("served_float").is_null() & pl.col("served_json").fill_null("null").eq("null")
    expected_null = pl.col("expected_float").is_null() & pl.col("expected_json").fill_null("null").eq("null")
    too_old = pl.col("event_timestamp").is_not_null() & pl.col("expected_event_timestamp").is_not_null() & (
        behind > view.freshness.warn_after
    )
    frame = frame.with_columns(
        matches.alias("matches"),
        (~matches & own_snapshot.fill_null(False) & within_sla.fill_null(False)).alias("lagged"),
    )
    mismatch = ~pl.col("matches") & ~pl.col("lagged")
    return frame.with_columns(
        mismatch.alias("mismatch"),
        pl.when(~mismatch).then(None)
        .when(served_null != expected_null).then(pl.lit("null"))
        .when(too_old).then(pl.lit("stale"))
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
    }


def _summarise(classified: pl.DataFrame, view: FeatureView) -> list[FeatureSkew]:
    out = []
    for feature in view.features:
        rows = classified.filter(pl.col("feature") == feature.name)
        if rows.height == 0:
            continue
        bad = rows.filter(pl.col("mismatch"))
        diffs = bad.get_column("abs_diff").drop_nulls().drop_nans()
        out.append(
            FeatureSkew(
                view=view.name,
                feature=feature.name,
                compared=rows.height,
                mismatches=bad.height,
                null_mismatches=bad.filter(pl.col("reason") == "null").height,
                stale_mismatches=bad.filter(pl.col("reason") == "stale").height,
                lagged=int(rows.get_column("lagged").sum()),
                max_abs_diff=float(diffs.max()) if diffs.len() else None,  # type: ignore[arg-type]
                mean_abs_diff=float(diffs.mean()) if diffs.len() else None,  # type: ignore[arg-type]
                tolerance=feature.monitoring.skew_tolerance,
                examples=tuple(_example(r, view.entity_keys) for r in bad.head(MAX_EXAMPLES).iter_rows(named=True)),
            )
        )
    return out


def compare_served_to_offline(
    store: DeltaStore,
    views: Mapping[str, FeatureView],
    log: pl.DataFrame,
    *,
    as_of: AsOf = None,
) -> SkewReport:
    """Judge every logged value of a stored view against the offline store (module docstring).

    `as_of` pins the offline tables (versions or an instant); by default their latest versions,
    i.e. what training would read today. Views in the log that are not in `views` are an error,
    except the on-demand rows, which are counted in `skipped_on_demand_rows`.
    """
    if log.height == 0:
        return SkewReport(features=(), log_rows=0)
    _require_columns(log, [*REQUEST_KEY, "request_time", "view", "feature", "value_json", "value_float", "status", "event_timestamp"], "served log")
    logged_views = set(log.get_column("view").unique().to_list())
    on_demand_rows = log.filter(pl.col("view") == ON_DEMAND_VIEW).height
    unknown = sorted(logged_views - set(views) - {ON_DEMAND_VIEW})
    if unknown:
        raise SkewInputError(f"served log: unknown feature view(s) {unknown}; known: {sorted(views)}")
    results: list[FeatureSkew] = []
    versions: dict[str, int] = {}
    for name in sorted(logged_views - {ON_DEMAND_VIEW}):
        view = views[name]
        _require_columns(log, list(view.entity_keys), f"served log of view {name!r}")
        served = _served_frame(log, view)
        compared, version = _view_comparison(store, view, served, as_of)
        versions[name] = version
        results.extend(_summarise(_classify(compared, view), view))
    return SkewReport(features=tuple(results), log_rows=log.height, skipped_on_demand_rows=on_demand_rows, offline_versions=versions)
