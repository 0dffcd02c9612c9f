"""Leakage audits of a training frame: no feature may be stamped after its row's prediction time,
and each sampled value must be reproducible from raw events known before its stamp."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import polars as pl

from feature_pipelines.compute.snapshots import features_at, snapshot_features
from feature_pipelines.features.spec import FeatureView
from feature_pipelines.offline.historical import stamp_column


@dataclass(frozen=True)
class LeakageReport:
    passed: bool
    violations: dict[str, int] = field(default_factory=dict)
    examples: list[dict[str, object]] = field(default_factory=list)

    def message(self) -> str:
        if self.passed:
            return "no feature is stamped after its prediction time; sampled values reproduce from known data"
        return "; ".join(f"{name}: {count} row(s)" for name, count in self.violations.items())


def audit_stamps(frame: pl.DataFrame, views: Sequence[str], *, prediction_column: str) -> LeakageReport:
    """Every feature stamp must be at or before its row's prediction time."""
    violations: dict[str, int] = {}
    examples: list[dict[str, object]] = []
    for view in views:
        late = frame.filter(pl.col(stamp_column(view)) > pl.col(prediction_column))
        if late.height:
            violations[f"{view} stamped after prediction time"] = late.height
            examples.extend(late.head(3).select(prediction_column, stamp_column(view)).to_dicts())
    return LeakageReport(passed=not violations, violations=violations, examples=examples)


def audit_recomputation(
    frame: pl.DataFrame,
    view: FeatureView,
    features: Sequence[str],
    raw_events: pl.DataFrame,
    *,
    trusted_known_at: str,
    sample: int = 50,
    seed: int = 0,
    at_instant: bool = False,
) -> LeakageReport:
    """Recompute a sample of a view's values from raw events, using the raw table's own record of
    when each event became known (`trusted_known_at`), at the row's stamp. A view that stamps its
    values with a time before their inputs were known (say, by schedule rather than by departure)
    cannot reproduce them, and is reported."""
    stamps = frame.select([*view.entity_keys, stamp_column(view.name), *features]).drop_nulls(stamp_column(view.name))
    if stamps.height == 0:
        return LeakageReport(passed=True)
    picked = stamps.sample(n=min(sample, stamps.height), seed=seed)
    honest = replace(view, source=replace(view.source, known_at_column=trusted_known_at))
    mismatches = 0
    examples: list[dict[str, object]] = []
    for joined in _recomputed(picked, honest, raw_events, at_instant=at_instant):
        for name in features:
            differs = joined.filter(pl.col(name).ne_missing(pl.col(f"{name}__recomputed")))
            mismatches += differs.height
            examples.extend(differs.head(2).select(*view.entity_keys, name, f"{name}__recomputed").to_dicts())
    if mismatches:
        return LeakageReport(
            passed=False,
            violations={f"{view.name} values not reproducible from data known at their stamp": mismatches},
            examples=examples[:5],
        )
    return LeakageReport(passed=True)


def _recomputed(picked: pl.DataFrame, view: FeatureView, raw_events: pl.DataFrame, *, at_instant: bool) -> list[pl.DataFrame]:
    """The sampled rows with their values recomputed at their stamp (`<feature>__recomputed`): the
    snapshot stamped there, or, for a streaming view read `at_instant` (its values computed at the
    row's own instant), the values at that instant."""
    stamp = stamp_column(view.name)
    if at_instant and view.streaming is not None:
        expected = features_at(raw_events, view, picked.select(*view.entity_keys, stamp), at=stamp)
        return [picked.with_columns(expected.select(pl.col(f.name).alias(f"{f.name}__recomputed") for f in view.features))]
    joined = []
    for moment in picked[stamp].unique().sort().to_list():
        expected = snapshot_features(raw_events, view, start=moment - view.cadence.interval, end=moment)
        rows = picked.filter(pl.col(stamp) == moment)
        joined.append(rows.join(expected, on=list(view.entity_keys), how="left", suffix="__recomputed"))
    return joined
