"""How good a probabilistic classifier is on labelled rows: AUC, log loss, Brier score and calibration.

The same figures describe a model's holdout when it is trained and each day of its served
predictions once their outcomes are known, so the two can be compared number for number.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import log_loss, roc_auc_score

CALIBRATION_BINS = 10
_CLIP = 1e-6  # a probability of exactly 0 or 1 would make one wrong row's log loss infinite


@dataclass(frozen=True)
class CalibrationBin:
    """Rows whose score fell in [low, high): how many, their mean score and their observed rate."""

    low: float
    high: float
    rows: int
    mean_score: float
    positive_rate: float


@dataclass(frozen=True)
class ClassifierMetrics:
    """Figures of scores against labels. `auc` is NaN when only one class is present (it is then
    undefined, not 0.5); `ece` is the expected calibration error over equal-width score bins."""

    rows: int
    positive_rate: float
    mean_score: float
    auc: float
    log_loss: float
    brier: float
    ece: float
    calibration: tuple[CalibrationBin, ...]

    def as_record(self) -> dict[str, object]:
        record = asdict(self)
        record["calibration"] = [asdict(b) for b in self.calibration]
        return record

    @classmethod
    def from_record(cls, record: dict[str, object]) -> ClassifierMetrics:
        bins = tuple(CalibrationBin(**b) for b in record["calibration"])  # type: ignore[arg-type, union-attr]
        return cls(**{**record, "calibration": bins})  # type: ignore[arg-type]


class MetricsInputError(ValueError):
    """Labels and scores that cannot be judged: different lengths, no rows, or scores outside [0, 1]."""


def classifier_metrics(labels: np.ndarray, scores: np.ndarray, *, bins: int = CALIBRATION_BINS) -> ClassifierMetrics:
    """AUC, log loss, Brier score and calibration of `scores` (P(label = 1)) against boolean `labels`."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(scores, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1:
        raise MetricsInputError(f"labels {y.shape} and scores {p.shape} must be 1-d arrays of one length")
    if y.size == 0:
        raise MetricsInputError("no labelled rows to judge")
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise MetricsInputError("scores must be probabilities in [0, 1] without NaN")
    clipped = np.clip(p, _CLIP, 1 - _CLIP)
    auc = float(roc_auc_score(y, p)) if 0 < y.sum() < y.size else math.nan
    calibration = calibration_bins(y, p, bins=bins)
    ece = sum(b.rows * abs(b.mean_score - b.positive_rate) for b in calibration) / y.size
    return ClassifierMetrics(
        rows=int(y.size), positive_rate=float(y.mean()), mean_score=float(p.mean()), auc=auc,
        log_loss=float(log_loss(y, clipped, labels=[0.0, 1.0])), brier=float(np.mean((p - y) ** 2)),
        ece=float(ece), calibration=calibration,
    )


def calibration_bins(labels: np.ndarray, scores: np.ndarray, *, bins: int = CALIBRATION_BINS) -> tuple[CalibrationBin, ...]:
    """The reliability diagram's points: equal-width score bins [i/bins, (i+1)/bins), the last closed;
    empty bins left out."""
    index = np.minimum((scores * bins).astype(np.int64), bins - 1)
    out = []
    for i in range(bins):
        chosen = index == i
        n = int(chosen.sum())
        if n:
            out.append(CalibrationBin(i / bins, (i + 1) / bins, n, float(scores[chosen].mean()), float(labels[chosen].mean())))
    return tuple(out)


def row_log_loss(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Each row's log loss (the error that concept drift is measured in, bin by bin)."""
    p = np.clip(np.asarray(scores, dtype=np.float64), _CLIP, 1 - _CLIP)
    y = np.asarray(labels, dtype=np.float64)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))
