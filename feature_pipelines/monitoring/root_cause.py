"""Skew traced to its cause: candidate faults replayed through the platform's own compute code.

For a feature whose served values mismatch, each candidate fault is replayed on exactly the
mismatched rows and scored by its exact-match rate against the logged values:

- `nulls imputed as 0`, `units x60`, `units /60`, `rounded to N decimal(s)`: the offline value
  (the point-in-time join's) as such a fault would have served it;
- `window ends at midnight (UTC)` and `window ends at local midnight (<zone>)`: the view's features
  computed from its raw events at that instant instead of the request's, by
  `compute.snapshots.features_at` (the snapshots' own kernel);
- `publish lag of k snapshots`: the snapshot k cadence steps before the expected one, expired by
  the view's TTL counted from the request (as the server expires it); it must also carry the
  snapshot stamp the server logged, when it logged one;
- `TTL one snapshot shorter` / `longer`: the point-in-time join with the TTL off by one cadence step.

A candidate that cannot be replayed (the raw table of a window fault is missing) is named as such
in the verdict, never dropped silently.

On-demand features are replayed with the value faults only (their inputs' windows and lags are
judged on the inputs' own rows). A value "equals" within the feature's `abs_tolerance`, widened
to a relative 1e-9 for recomputed windows (a mean summed in another order). The best candidate
(ties: the first in the order above) explains the mismatches when it matches at least
`EXPLAINS_AT` of them; otherwise no candidate explains them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import polars as pl

from feature_pipelines.compute.snapshots import features_at
from feature_pipelines.features.spec import FeatureView
from feature_pipelines.monitoring.skew_frames import AT, REQUEST_KEY, long_values, stored_values
from feature_pipelines.monitoring.values import numbers_equal
from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.offline.historical import AsOf

EXPLAINS_AT = 0.5
RELATIVE_TOLERANCE = 1e-9
MAX_LAG_STEPS = 48
LOCAL_ZONE = "America/New_York"  # the demo's airports; the zone a local-day fault would use
ROUNDINGS = (0, 1, 2, 3)
TOP_CANDIDATES = 5  # shown in metadata

# mismatched rows -> their candidate values, long (REQUEST_KEY, feature, value_float, value_json, stamp)
Replay = Callable[[pl.DataFrame], pl.DataFrame]


@dataclass(frozen=True)
class CandidateScore:
    """How many of a feature's mismatched rows one candidate fault reproduces exactly."""

    name: str
    matched: int
    of: int

    @property
    def rate(self) -> float:
        return self.matched / self.of if self.of else 0.0


@dataclass(frozen=True)
class RootCause:
    """Every candidate's score for one feature's mismatches, best first."""

    scores: tuple[CandidateScore, ...]
    unavailable: tuple[str, ...] = ()  # candidates that could not be replayed, with why

    @property
    def best(self) -> CandidateScore | None:
        return self.scores[0] if self.scores else None

    @property
    def explained(self) -> bool:
        return self.best is not None and self.best.rate >= EXPLAINS_AT

    @property
    def cause(self) -> str | None:
        """The best candidate's name when it explains the mismatches, else None."""
        return self.best.name if self.explained and self.best is not None else None

    def describe(self) -> str:
        best = self.best
        if best is None:
            return "no candidate fault was replayed"
        if self.explained:
            text = f"{best.rate:.0%} of mismatches ({best.matched}/{best.of}) equal *{best.name}*"
        else:
            text = f"no candidate fault explains them (best: *{best.name}*, {best.rate:.0%})"
        return text + (f"; not replayed: {'; '.join(self.unavailable)}" if self.unavailable else "")


def _value_candidates() -> list[tuple[str, Callable[[pl.Expr], pl.Expr]]]:
    return [
        ("nulls imputed as 0", lambda v: v.fill_null(0.0)),
        ("units x60", lambda v: v * 60),
        ("units /60", lambda v: v / 60),
        *[(f"rounded to {d} decimal{'' if d == 1 else 's'}", lambda v, d=d: v.round(d)) for d in ROUNDINGS],
    ]


def _value_replay(transform: Callable[[pl.Expr], pl.Expr]) -> Replay:
    def replay(rows: pl.DataFrame) -> pl.DataFrame:
        return rows.select(
            *REQUEST_KEY, "feature", transform(pl.col("expected_float")).alias("value_float"),
            pl.col("expected_json").alias("value_json"), pl.lit(None, dtype=pl.Datetime("us", "UTC")).alias("stamp"),
        )
    return replay


def _window_replay(store: DeltaStore, view: FeatureView, instant: pl.Expr) -> Replay:
    """The view's features computed from its raw events at `instant` (an expression of the rows)."""
    def replay(rows: pl.DataFrame) -> pl.DataFrame:
        entities = rows.unique(subset=list(REQUEST_KEY)).select(*REQUEST_KEY, *view.entity_keys, instant.alias(AT))
        events = store.scan(view.source.asset)
        computed = features_at(events, view, entities, at=AT, context=f"root-cause replay of view {view.name!r}")
        return long_values(computed, {f.name: f.dtype for f in view.features}, REQUEST_KEY, None)
    return replay


def _lag_replay(store: DeltaStore, view: FeatureView, steps: int, as_of: AsOf) -> Replay:
    """The snapshot `steps` cadence steps back, expired by the TTL counted from the request."""
    back = view.cadence.interval * steps
    wide = replace(view, ttl=view.ttl + back)

    def replay(rows: pl.DataFrame) -> pl.DataFrame:
        entities = rows.unique(subset=list(REQUEST_KEY)).with_columns((pl.col("request_time") - back).alias(AT))
        values, _ = stored_values(store, wide, entities, sorted(set(rows["feature"])), as_of=as_of)
        times = entities.select(*REQUEST_KEY, "request_time")
        expired = (pl.col("request_time") - pl.col("stamp")) > view.ttl
        return values.join(times, on=list(REQUEST_KEY)).with_columns(
            pl.when(expired).then(None).otherwise(pl.col("value_float")).alias("value_float"),
            pl.when(expired & pl.col("value_json").is_not_null()).then(pl.lit("null")).otherwise(pl.col("value_json")).alias("value_json"),
        ).drop("request_time")
    return replay


def _ttl_replay(store: DeltaStore, view: FeatureView, ttl: timedelta, as_of: AsOf) -> Replay:
    changed = replace(view, ttl=ttl)

    def replay(rows: pl.DataFrame) -> pl.DataFrame:
        entities = rows.unique(subset=list(REQUEST_KEY)).with_columns(pl.col("request_time").alias(AT))
        values, _ = stored_values(store, changed, entities, sorted(set(rows["feature"])), as_of=as_of)
        return values
    return replay


def _lag_steps(view: FeatureView, rows: pl.DataFrame) -> int:
    """How many lag candidates to replay: at least 3, and as far back as any logged snapshot is."""
    behind = rows.select((pl.col("expected_event_timestamp") - pl.col("event_timestamp")).max()).item()
    steps = int(behind / view.cadence.interval) if isinstance(behind, timedelta) else 0
    return min(MAX_LAG_STEPS, max(3, steps))


def candidates_for(
    store: DeltaStore, view: FeatureView | None, rows: pl.DataFrame, *, as_of: AsOf = None, local_zone: str = LOCAL_ZONE
) -> list[tuple[str, Replay]]:
    """The candidate faults for the mismatched `rows` of a stored view (all of them) or of
    on-demand features (`view` None: the value faults only), in tie-break order."""
    out: list[tuple[str, Replay]] = [(name, _value_replay(t)) for name, t in _value_candidates()]
    if view is None:
        return out
    if store.exists(view.source.asset):
        out += _window_candidates(store, view, local_zone)
    if store.exists(view.name):
        out += _snapshot_candidates(store, view, rows, as_of)
    return out


def _window_candidates(store: DeltaStore, view: FeatureView, local_zone: str) -> list[tuple[str, Replay]]:
    utc_midnight = pl.col("request_time").dt.truncate("1d")
    local_midnight = (
        pl.col("request_time").dt.convert_time_zone(local_zone).dt.replace_time_zone(None).dt.truncate("1d")
        .dt.replace_time_zone(local_zone, ambiguous="earliest", non_existent="null").dt.convert_time_zone("UTC")
    )
    return [
        ("window ends at midnight (UTC)", _window_replay(store, view, utc_midnight)),
        (f"window ends at local midnight ({local_zone})", _window_replay(store, view, local_midnight)),
    ]


def _snapshot_candidates(store: DeltaStore, view: FeatureView, rows: pl.DataFrame, as_of: AsOf) -> list[tuple[str, Replay]]:
    out: list[tuple[str, Replay]] = []
    for steps in range(1, _lag_steps(view, rows) + 1):
        out.append((f"publish lag of {steps} snapshot{'s' if steps > 1 else ''}", _lag_replay(store, view, steps, as_of)))
    step = view.cadence.interval
    if view.ttl - step >= step:
        out.append(("TTL one snapshot shorter", _ttl_replay(store, view, view.ttl - step, as_of)))
    out.append(("TTL one snapshot longer", _ttl_replay(store, view, view.ttl + step, as_of)))
    return out


def _matches(rows: pl.DataFrame, candidate: pl.DataFrame) -> pl.Series:
    """Per mismatched row: does the candidate reproduce the served value (and logged stamp)?"""
    key = [*REQUEST_KEY, "feature"]
    joined = rows.select(*key, "served_float", "served_json", "event_timestamp", "abs_tolerance").join(
        candidate.rename({"value_float": "c_float", "value_json": "c_json", "stamp": "c_stamp"}), on=key, how="left",
        maintain_order="left",
    )
    tolerance = pl.max_horizontal(pl.col("abs_tolerance"), pl.col("c_float").abs() * RELATIVE_TOLERANCE)
    numeric = numbers_equal(pl.col("served_float"), pl.col("c_float"), tolerance.fill_nan(None).fill_null(pl.col("abs_tolerance")))
    value = pl.when(pl.col("served_json").is_not_null()).then(pl.col("served_json") == pl.col("c_json")).otherwise(numeric)
    stamp = pl.col("c_stamp").is_null() | pl.col("event_timestamp").is_null() | (pl.col("c_stamp") == pl.col("event_timestamp"))
    return joined.select((value & stamp).fill_null(False)).to_series()


def explain(
    store: DeltaStore, view: FeatureView | None, mismatches: pl.DataFrame, *, as_of: AsOf = None, local_zone: str = LOCAL_ZONE
) -> dict[str, RootCause]:
    """Per feature of `mismatches` (the skew monitor's mismatched rows of one view, or of the
    on-demand features), every candidate's score, best first."""
    if mismatches.height == 0:
        return {}
    scores: dict[str, list[CandidateScore]] = {f: [] for f in mismatches["feature"].unique(maintain_order=True)}
    unavailable = _unavailable(store, view)
    for name, replay in candidates_for(store, view, mismatches, as_of=as_of, local_zone=local_zone):
        hits = mismatches.select("feature").with_columns(_matches(mismatches, replay(mismatches)).alias("hit"))
        for row in hits.group_by("feature").agg(pl.col("hit").sum(), pl.len()).iter_rows(named=True):
            scores[row["feature"]].append(CandidateScore(name, int(row["hit"]), int(row["len"])))
    return {feature: RootCause(tuple(_ranked(s)), unavailable) for feature, s in scores.items()}


def _unavailable(store: DeltaStore, view: FeatureView | None) -> tuple[str, ...]:
    if view is None:
        return ("window, lag and TTL faults of an on-demand feature (judged on its inputs' rows)",)
    missing = []
    if not store.exists(view.source.asset):
        missing.append(f"window faults (raw table {view.source.asset!r} does not exist)")
    if not store.exists(view.name):
        missing.append(f"lag and TTL faults (feature table {view.name!r} does not exist)")
    return tuple(missing)


def _ranked(scores: Sequence[CandidateScore]) -> list[CandidateScore]:
    order = {id(s): i for i, s in enumerate(scores)}
    return sorted(scores, key=lambda s: (-s.rate, order[id(s)]))


def as_metadata(cause: RootCause) -> dict[str, Any]:
    """The root cause for metadata: the verdict, the best rate, then the best candidates' rates."""
    return {
        "cause": cause.cause,
        "description": cause.describe(),
        "rate": round(cause.best.rate, 4) if cause.best is not None else None,
        "candidates": {s.name: round(s.rate, 4) for s in cause.scores[:TOP_CANDIDATES]},
    }
