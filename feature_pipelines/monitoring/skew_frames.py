"""What the offline store says a logged value should have been, in the skew monitor's long form.

One row per (request_id, entity_index, feature): `value_float` for numeric features, `value_json`
for the others, and `stamp`, the event_timestamp of the snapshot the value came from (the
instant itself for a streaming view read at the instant). Both readers go through the one
point-in-time join the training path uses (`get_historical_features`), and on-demand features
through `apply_on_demand` on the inputs that join gives: the skew monitor, its three-way split
(time travel) and its root-cause replay all read values here, never by a second path.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from feature_pipelines.features.on_demand import OnDemandFeature, apply_on_demand, required_references
from feature_pipelines.features.references import FeatureReference, parse_reference
from feature_pipelines.features.spec import FeatureView
from feature_pipelines.monitoring.values import NUMERIC_DTYPES
from feature_pipelines.names import EVENT_TIMESTAMP
from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.offline.historical import AsOf, get_historical_features, stamp_column
from feature_pipelines.serving.request_log import value_json

REQUEST_KEY = ("request_id", "entity_index")
AT = "__skew_at"  # the instant a row's value is read at
LONG_SCHEMA = {"feature": pl.String(), "value_float": pl.Float64(), "value_json": pl.String(), "stamp": pl.Datetime("us", "UTC")}


class SkewInputError(ValueError):
    """The served log cannot be compared (a missing column, an unknown view or feature)."""


def require_columns(frame: pl.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise SkewInputError(f"{what}: column(s) {missing} missing (has {frame.columns})")


def long_values(frame: pl.DataFrame, dtypes: Mapping[str, str], index: Sequence[str], stamp: str | None) -> pl.DataFrame:
    """Wide values (one column per feature of `dtypes`, declared dtype names) -> one row per
    (index, feature) with `value_float` (numbers) or `value_json` (others) and `stamp`."""
    stamp_expr = pl.col(stamp).cast(pl.Datetime("us", "UTC")) if stamp else pl.lit(None, dtype=pl.Datetime("us", "UTC"))
    base = frame.select(*index, stamp_expr.alias("stamp"), *dtypes)
    parts = []
    numeric = [f for f, dtype in dtypes.items() if dtype in NUMERIC_DTYPES]
    other = [f for f in dtypes if f not in numeric]
    if numeric:
        parts.append(
            base.select(*index, "stamp", *[pl.col(f).cast(pl.Float64, strict=False) for f in numeric])
            .unpivot(index=[*index, "stamp"], on=numeric, variable_name="feature", value_name="value_float")
            .with_columns(pl.lit(None, dtype=pl.String).alias("value_json"))
        )
    if other:
        encoded = base.select(
            *index, "stamp", *[pl.col(f).map_elements(value_json, return_dtype=pl.String).fill_null("null") for f in other]
        )
        parts.append(
            encoded.unpivot(index=[*index, "stamp"], on=other, variable_name="feature", value_name="value_json")
            .with_columns(pl.lit(None, dtype=pl.Float64).alias("value_float"))
        )
    columns = [*index, "feature", "value_float", "value_json", "stamp"]
    return pl.concat([p.select(columns) for p in parts], how="vertical")


def stored_values(
    store: DeltaStore,
    view: FeatureView,
    entities: pl.DataFrame,
    features: Sequence[str],
    *,
    as_of: AsOf = None,
    at_instant: bool = False,
) -> tuple[pl.DataFrame, int]:
    """The offline values of `view`'s `features` for `entities` (REQUEST_KEY, the view's keys and
    AT, the instant), long; and the Delta version read (the raw table's for a streaming view read
    `at_instant`: what the stream serves at that instant, computed from the raw events)."""
    historical = get_historical_features(
        store,
        {view.name: view},
        entities.select(*REQUEST_KEY, *view.entity_keys, pl.col(AT).dt.cast_time_unit("us").alias(EVENT_TIMESTAMP)),
        [str(FeatureReference(view.name, f)) for f in features],
        as_of=as_of,
        include_event_timestamps=True,
        streaming_views="at_instant" if at_instant else "snapshots",
    )
    table = view.source.asset if at_instant and view.streaming is not None else view.name
    dtypes = {f: view.feature(f).dtype for f in features}
    return long_values(historical.frame, dtypes, REQUEST_KEY, stamp_column(view.name)), historical.versions[table]


def request_columns(rows: pl.DataFrame, features: Sequence[OnDemandFeature]) -> pl.DataFrame:
    """`rows` with the on-demand features' request columns, decoded from the log's `entity_key`
    JSON (the log keeps only join keys as typed columns), each in its declared dtype."""
    declared: dict[str, pl.DataType] = {}
    for feature in features:
        declared.update(feature.request_dtypes)
    if not declared:
        return rows
    decoded: dict[str, list[Any]] = {name: [] for name in declared}
    for text in rows.get_column("entity_key").to_list():
        values = json.loads(text) if text else {}
        for name in declared:
            decoded[name].append(values.get(name))
    columns = []
    for name, dtype in declared.items():
        series = pl.Series(name, decoded[name], dtype=pl.String if isinstance(dtype, pl.Datetime) else None, strict=False)
        if isinstance(dtype, pl.Datetime):
            series = series.str.to_datetime(time_unit="us", time_zone="UTC")
        columns.append(series.cast(dtype, strict=True))
    return rows.with_columns(columns)


def on_demand_values(
    store: DeltaStore,
    views: Mapping[str, FeatureView],
    features: Sequence[OnDemandFeature],
    entities: pl.DataFrame,
    *,
    as_of: AsOf = None,
    stamps: Mapping[str, str] | None = None,
) -> pl.DataFrame:
    """On-demand values recomputed offline: their stored inputs joined point-in-time at AT (or,
    per input view, at the instant in column `stamps[view]`), then `apply_on_demand`, the
    expression the server runs. `stamp` is the oldest input snapshot (null without inputs)."""
    references = required_references([], list(features))
    by_view: dict[str, list[str]] = {}
    for reference in references:
        parsed = parse_reference(reference)
        by_view.setdefault(parsed.view, []).append(parsed.feature)
    frame = entities
    stamp_columns = []
    for name, inputs in by_view.items():
        view = views[name]
        at = (stamps or {}).get(name, AT)
        read = frame.filter(pl.col(at).is_not_null()).select(
            *REQUEST_KEY, *view.entity_keys, pl.col(at).dt.cast_time_unit("us").alias(EVENT_TIMESTAMP)
        )
        historical = get_historical_features(
            store, {name: view}, read, [str(FeatureReference(name, f)) for f in inputs],
            as_of=as_of, include_event_timestamps=True,
        )
        joined = historical.frame.select(*REQUEST_KEY, *inputs, stamp_column(name))
        frame = frame.join(joined, on=list(REQUEST_KEY), how="left")
        stamp_columns.append(stamp_column(name))
    computed = apply_on_demand(frame, list(features))
    oldest = pl.min_horizontal(*stamp_columns).alias("__stamp") if stamp_columns else pl.lit(None).alias("__stamp")
    computed = computed.with_columns(oldest)
    return long_values(computed, {f.name: f.dtype for f in features}, REQUEST_KEY, "__stamp")
