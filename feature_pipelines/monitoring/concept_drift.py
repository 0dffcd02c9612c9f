"""Concept drift: P(label | features) moving while the features may look the same.

Input monitors compare distributions of X and cannot see it; only outcomes can. The model's
error is cut by feature bin: for each feature of the vector, bins at the holdout's quantiles
(`drift.Binning`, the input monitors' own cut rule; nulls their own bin), and per bin the rows,
the observed rate, the mean score, the mean residual (label - score) and the mean log loss.
The holdout's cut is the model's reference (recorded when it is trained); a day of outcomes is
cut at the same edges.

The test, per feature: in each bin with enough rows on both sides, the day's residual minus the
day's overall residual, against the same for the reference, as a z-score (both sides' variances);
the statistic is the mean squared z over the judged bins (about 1 when the relation holds). The
overall residual is removed so that a day that is late everywhere (a storm) shows as a
calibration shift (judged by the outcome metrics) and not as every feature's concept drift; what
is left is the relation between that feature and the label changing shape.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import polars as pl

from feature_pipelines.models.metrics import row_log_loss
from feature_pipelines.monitoring.drift import Binning

REFERENCE_BINS = 5
MIN_BIN_ROWS = 30
MISSING = "missing"


@dataclass(frozen=True)
class BinError:
    """One bin of one feature: its rows, observed rate, mean score, residual (mean and variance), log loss."""

    label: str
    rows: int
    positive_rate: float
    mean_score: float
    residual: float
    residual_var: float
    log_loss: float


@dataclass(frozen=True)
class FeatureBins:
    """A feature's error by bin: `cuts` are the interior quantile edges (right-closed bins, as `Binning`),
    `bins` one per value bin, then the missing-value bin."""

    feature: str
    cuts: tuple[float, ...]
    bins: tuple[BinError, ...]

    def as_record(self) -> dict[str, Any]:
        return {"feature": self.feature, "cuts": list(self.cuts), "bins": [asdict(b) for b in self.bins]}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> FeatureBins:
        return cls(record["feature"], tuple(record["cuts"]), tuple(BinError(**b) for b in record["bins"]))


@dataclass(frozen=True)
class ConceptDrift:
    """The test of one feature: mean squared z of the bins judged, and the bin that moved most."""

    feature: str
    statistic: float
    bins_judged: int
    worst_bin: str | None
    worst_residual_shift: float


def _binning(cuts: Sequence[float]) -> Binning:
    return Binning(edges=(-math.inf, *cuts, math.inf))


def _bin_errors(values: pl.Series, labels: np.ndarray, scores: np.ndarray, binning: Binning) -> tuple[BinError, ...]:
    numbers = values.cast(pl.Float64)
    missing = (numbers.is_null() | numbers.is_nan()).to_numpy()
    filled = numbers.fill_null(0.0).fill_nan(0.0).to_numpy()
    index = np.searchsorted(np.asarray(binning.edges[1:-1], dtype=np.float64), filled, side="left")
    index[missing] = binning.bin_count
    losses = row_log_loss(labels, scores)
    out = []
    for position, name in enumerate((*binning.labels(), MISSING)):
        chosen = index == position
        n = int(chosen.sum())
        if n == 0:
            out.append(BinError(name, 0, math.nan, math.nan, math.nan, math.nan, math.nan))
            continue
        residual = labels[chosen] - scores[chosen]
        out.append(BinError(name, n, float(labels[chosen].mean()), float(scores[chosen].mean()), float(residual.mean()),
                            float(residual.var()), float(losses[chosen].mean())))
    return tuple(out)


def error_by_bin(
    frame: pl.DataFrame, features: Sequence[str], *, label: str, score: str, bins: int = REFERENCE_BINS
) -> dict[str, FeatureBins]:
    """The reference: each feature cut at `frame`'s own quantiles (the model's holdout)."""
    labels, scores = frame[label].cast(pl.Float64).to_numpy(), frame[score].to_numpy()
    out = {}
    for feature in features:
        values = frame[feature].cast(pl.Float64)
        present = values.drop_nulls().drop_nans().to_numpy()
        binning = Binning.from_reference(present, bins=bins)
        out[feature] = FeatureBins(feature, binning.edges[1:-1], _bin_errors(values, labels, scores, binning))
    return out


def error_at_reference(
    frame: pl.DataFrame, reference: Mapping[str, FeatureBins], *, label: str, score: str
) -> dict[str, FeatureBins]:
    """A day's error, each feature cut at the reference's edges."""
    labels, scores = frame[label].cast(pl.Float64).to_numpy(), frame[score].to_numpy()
    return {name: FeatureBins(name, ref.cuts, _bin_errors(frame[name], labels, scores, _binning(ref.cuts)))
            for name, ref in reference.items()}


def _overall_residual(bins: Sequence[BinError]) -> float:
    rows = sum(b.rows for b in bins)
    return sum(b.rows * b.residual for b in bins if b.rows) / rows if rows else math.nan


def concept_drift(
    reference: Mapping[str, FeatureBins], current: Mapping[str, FeatureBins], *, min_rows: int = MIN_BIN_ROWS
) -> list[ConceptDrift]:
    """Per feature of the reference, the test described in the module docstring (NaN statistic when
    no bin has `min_rows` rows on both sides)."""
    results = []
    for name, ref in reference.items():
        cur = current[name]
        ref_mean, cur_mean = _overall_residual(ref.bins), _overall_residual(cur.bins)
        squares, worst, worst_shift = [], None, 0.0
        for r, c in zip(ref.bins, cur.bins):
            if r.rows < min_rows or c.rows < min_rows:
                continue
            shift = (c.residual - cur_mean) - (r.residual - ref_mean)
            spread = math.sqrt(c.residual_var / c.rows + r.residual_var / r.rows)
            squares.append((shift / spread) ** 2 if spread > 0 else 0.0)
            if abs(shift) > abs(worst_shift):
                worst, worst_shift = r.label, shift
        statistic = float(np.mean(squares)) if squares else math.nan
        results.append(ConceptDrift(name, statistic, len(squares), worst, worst_shift))
    return results


def reference_record(bins: Mapping[str, FeatureBins]) -> dict[str, Any]:
    """The reference as JSON-able data (the registry's `reference_json`)."""
    return {"bins": [b.as_record() for b in bins.values()]}


def reference_from_record(record: Mapping[str, Any]) -> dict[str, FeatureBins]:
    return {b["feature"]: FeatureBins.from_record(b) for b in record["bins"]}
