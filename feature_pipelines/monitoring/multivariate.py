"""Multivariate drift: can a classifier tell reference rows from current rows?

Per-feature tests compare marginals one at a time, so they are blind to a change in how features
move together (two features whose correlation flips keep both marginals). A domain classifier
looks at all features jointly: label reference rows 0 and current rows 1, train a gradient-boosted
tree model, and measure its cross-validated ROC AUC. AUC ~0.5 means the two samples are
indistinguishable; the further above, the more the joint distribution moved.

Method, fixed so a run is reproducible for a seed:
- each side is subsampled without replacement (seeded) to the same number of rows,
  min(len(reference), len(current), max_rows_per_side), so the classes are balanced and AUC needs
  no correction;
- numeric columns go in as float64 with null/NaN as NaN (HistGradientBoosting routes missing
  values natively, so "more nulls" is itself a learnable signal); String/Boolean/Categorical/Enum
  columns are coded by the sorted union of both sides' categories (null stays NaN), as native
  categorical features when they have at most 250 categories, otherwise as ordinal codes;
- stratified k-fold (shuffled, seeded) cross-validation; the AUC is the mean of the out-of-fold
  AUCs and `auc_std` their standard deviation;
- importance of a feature = the mean drop in held-out AUC when that column is permuted (seeded)
  in each fold's held-out rows: cheap (predictions only, no refits) and in AUC units.
With fewer than `min_rows_per_side` rows on a side the verdict is PASS with a reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits

from feature_pipelines.monitoring.drift import DriftInputError, Severity, is_categorical, judge

MIN_ROWS_PER_SIDE = 100
MAX_NATIVE_CATEGORIES = 250  # HistGradientBoosting's native categorical support stops at max_bins (255)


@dataclass(frozen=True)
class MultivariateDrift:
    """The domain classifier's verdict: AUC over CV folds and which features separate the samples.

    `reference_rows` / `current_rows` are the input sizes; `rows_per_side` how many of each were
    used after the balanced subsample. `auc` is NaN when there were too few rows to judge.
    """

    auc: float
    auc_std: float
    reference_rows: int
    current_rows: int
    features: tuple[str, ...]
    feature_importance: tuple[tuple[str, float], ...]
    severity: Severity
    reason: str
    rows_per_side: int = 0
    folds: int = 0

    def as_metadata(self) -> dict[str, float | str | int | None]:
        """Flat JSON-able figures for Dagster metadata (NaN becomes None)."""
        top = ", ".join(f"{name} {importance:.3f}" for name, importance in self.feature_importance[:5])
        return {
            "auc": None if math.isnan(self.auc) else self.auc,
            "auc_std": None if math.isnan(self.auc_std) else self.auc_std,
            "severity": self.severity.value,
            "reason": self.reason,
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "rows_per_side": self.rows_per_side,
            "folds": self.folds,
            "top_features": top,
        }


def classifier_drift(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    features: Sequence[str],
    *,
    seed: int = 0,
    max_rows_per_side: int = 20_000,
    folds: int = 5,
    auc_warn: float = 0.6,
    auc_fail: float = 0.7,
    min_rows_per_side: int = MIN_ROWS_PER_SIDE,
    max_iter: int = 100,
    threads: int = 1,
) -> MultivariateDrift:
    """Cross-validated AUC of a classifier telling `current` rows from `reference` rows.

    FAIL at AUC >= `auc_fail`, WARN at >= `auc_warn`. Raises DriftInputError naming the column
    and frame when a feature is missing, or when `features` is empty.

    `threads` caps the OpenMP threads of the tree model. One by default: on a shared machine
    (and in a Dagster run with parallel steps) OpenMP's spin-waiting threads made the fit 10-20x
    slower with 2 threads than with 1 on our 2-core hosts.
    """
    if not features:
        raise DriftInputError("classifier drift needs at least one feature")
    if not 0.5 < auc_warn <= auc_fail <= 1.0:
        raise DriftInputError(f"AUC thresholds need 0.5 < warn <= fail <= 1, got {auc_warn} / {auc_fail}")
    if folds < 2:
        raise DriftInputError(f"folds must be >= 2, got {folds}")
    _require_columns(reference, current, features)
    rows = min(reference.height, current.height, max_rows_per_side)
    if rows < max(min_rows_per_side, folds):
        return MultivariateDrift(
            auc=math.nan,
            auc_std=math.nan,
            reference_rows=reference.height,
            current_rows=current.height,
            features=tuple(features),
            feature_importance=(),
            severity=Severity.PASS,
            reason=(
                f"too few rows (reference {reference.height} / current {current.height}; need "
                f"{min_rows_per_side} on each side) to judge"
            ),
            folds=folds,
        )

    rng = np.random.default_rng(seed)
    ref_sample = _subsample(reference, rows, rng)
    cur_sample = _subsample(current, rows, rng)
    matrix, categorical = _encode(ref_sample, cur_sample, features)
    labels = np.concatenate([np.zeros(rows, dtype=np.int8), np.ones(rows, dtype=np.int8)])

    with threadpool_limits(limits=threads, user_api="openmp"):
        aucs, drops = _cross_validate(matrix, labels, categorical, seed=seed, folds=folds, max_iter=max_iter)
    auc, auc_std = float(np.mean(aucs)), float(np.std(aucs))
    importance = sorted(zip(features, drops.mean(axis=0).tolist()), key=lambda pair: (-pair[1], pair[0]))
    severity, reason = judge("auc", auc, auc_warn, auc_fail)
    return MultivariateDrift(
        auc=auc,
        auc_std=auc_std,
        reference_rows=reference.height,
        current_rows=current.height,
        features=tuple(features),
        feature_importance=tuple((name, float(value)) for name, value in importance),
        severity=severity,
        reason=reason or f"auc {auc:.4g} < warn {auc_warn:g}",
        rows_per_side=rows,
        folds=folds,
    )


def _require_columns(reference: pl.DataFrame, current: pl.DataFrame, features: Sequence[str]) -> None:
    for side, frame in (("reference", reference), ("current", current)):
        missing = [name for name in features if name not in frame.columns]
        if missing:
            raise DriftInputError(
                f"classifier drift: column(s) {missing} missing from the {side} frame "
                f"(it has {sorted(frame.columns)})"
            )


def _subsample(frame: pl.DataFrame, rows: int, rng: np.random.Generator) -> pl.DataFrame:
    """`rows` rows drawn without replacement, kept in their original order (seeded)."""
    if frame.height == rows:
        return frame
    index = np.sort(rng.choice(frame.height, size=rows, replace=False))
    return frame[index]


def _encode(
    reference: pl.DataFrame, current: pl.DataFrame, features: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Both sides as one float64 matrix (reference rows first) and the native-categorical mask."""
    columns, categorical = [], []
    for name in features:
        ref, cur = reference.get_column(name), current.get_column(name)
        kinds = {is_categorical(series) for series in (ref, cur) if series.dtype != pl.Null}
        if len(kinds) > 1:
            raise DriftInputError(
                f"classifier drift: column {name!r} is {ref.dtype} in the reference frame but "
                f"{cur.dtype} in the current frame; both must be numeric or both categorical"
            )
        if True in kinds:
            codes, native = _category_codes(pl.concat([ref.cast(pl.String), cur.cast(pl.String)]))
            columns.append(codes)
            categorical.append(native)
        elif ref.dtype.is_numeric() or ref.dtype == pl.Null:
            both = pl.concat([ref.cast(pl.Float64), cur.cast(pl.Float64)]).fill_nan(None)
            columns.append(both.to_numpy())  # nulls become NaN
            categorical.append(False)
        else:
            raise DriftInputError(
                f"classifier drift: column {name!r} has dtype {ref.dtype}; needs numeric or categorical"
            )
    return np.column_stack(columns).astype(np.float64), np.array(categorical, dtype=bool)


def _category_codes(values: pl.Series) -> tuple[np.ndarray, bool]:
    """Codes by the sorted union of categories (same code for the same value on both sides)."""
    categories = values.drop_nulls().unique().sort()
    lookup = pl.DataFrame({"category": categories, "code": np.arange(categories.len(), dtype=np.float64)})
    coded = (
        values.rename("category").to_frame().join(lookup, on="category", how="left", maintain_order="left")
    )
    return coded.get_column("code").to_numpy(), categories.len() <= MAX_NATIVE_CATEGORIES


def _cross_validate(
    matrix: np.ndarray, labels: np.ndarray, categorical: np.ndarray, *, seed: int, folds: int, max_iter: int
) -> tuple[list[float], np.ndarray]:
    """Out-of-fold AUC per fold, and per fold and feature the AUC drop when that column is permuted."""
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    permute = np.random.default_rng(seed + 1)
    aucs: list[float] = []
    drops = np.zeros((folds, matrix.shape[1]))
    for fold, (train, test) in enumerate(splitter.split(matrix, labels)):
        model = HistGradientBoostingClassifier(
            max_iter=max_iter,
            early_stopping=False,  # no hidden validation split: same rows, same model, every run
            categorical_features=categorical if categorical.any() else None,
            random_state=seed,
        )
        model.fit(matrix[train], labels[train])
        held_out = matrix[test]
        auc = float(roc_auc_score(labels[test], model.predict_proba(held_out)[:, 1]))
        aucs.append(auc)
        for column in range(matrix.shape[1]):
            shuffled = held_out.copy()
            shuffled[:, column] = permute.permutation(shuffled[:, column])
            drops[fold, column] = auc - roc_auc_score(labels[test], model.predict_proba(shuffled)[:, 1])
    return aucs, drops


__all__ = ["MultivariateDrift", "classifier_drift"]


def rank_transform(frame: pl.DataFrame, features: Sequence[str], *, seed: int = 0) -> pl.DataFrame:
    """Each numeric feature replaced by its rank within `frame`, scaled to (0, 1] (ties broken at
    random, seeded; nulls stay null): the copula of the sample.

    Applied to each side separately before `classifier_drift`, it makes every marginal uniform on
    both sides, so the classifier can only find a change in how features move *together*; shifts
    of a single feature are the per-feature tests' job (PSI/KS/JSD), and features whose marginals
    move from day to day by nature (the weather) no longer make any two days separable.
    """
    numeric = [name for name in features if not is_categorical(frame.get_column(name))]
    return frame.with_columns(
        (pl.col(name).rank("random", seed=seed + index) / pl.col(name).count()).alias(name)
        for index, name in enumerate(numeric)
    )
