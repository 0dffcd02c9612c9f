"""Multivariate drift: the domain classifier sees what per-feature tests cannot (a flipped
correlation with unchanged marginals), stays near AUC 0.5 on one distribution, and is reproducible."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from feature_pipelines.features.spec import FeatureMonitoring
from feature_pipelines.monitoring.drift import DriftInputError, Severity, drift_report
from feature_pipelines.monitoring.multivariate import classifier_drift, rank_transform

ROWS = 1_500


def correlated(rho: float, seed: int, rows: int = ROWS) -> pl.DataFrame:
    """x, y standard normal with correlation rho, plus an unrelated categorical and a noisy column."""
    rng = np.random.default_rng(seed)
    xy = rng.multivariate_normal([0.0, 0.0], [[1.0, rho], [rho, 1.0]], size=rows)
    return pl.DataFrame(
        {
            "x": xy[:, 0],
            "y": xy[:, 1],
            "carrier": rng.choice(["AA", "B6", "DL", "UA"], size=rows),
            "noise": np.where(rng.random(rows) < 0.1, np.nan, rng.exponential(size=rows)),
        }
    )


FEATURES = ("x", "y", "carrier", "noise")


def test_one_distribution_gives_auc_near_half_and_passes() -> None:
    result = classifier_drift(correlated(0.9, seed=1), correlated(0.9, seed=2), FEATURES)
    assert 0.4 < result.auc < 0.6
    assert result.severity is Severity.PASS
    assert result.rows_per_side == ROWS and result.folds == 5 and result.auc_std < 0.1
    assert {name for name, _ in result.feature_importance} == set(FEATURES)


def test_a_flipped_correlation_passes_every_per_feature_test_but_fails_the_classifier() -> None:
    reference, current = correlated(0.9, seed=3), correlated(-0.9, seed=4)
    per_feature = drift_report(reference, current, {name: FeatureMonitoring() for name in FEATURES})
    assert [drift.severity for drift in per_feature] == [Severity.PASS] * len(FEATURES)

    result = classifier_drift(reference, current, FEATURES)
    assert result.auc > 0.85
    assert result.severity is Severity.FAIL and result.reason.startswith("auc ")
    assert {name for name, _ in result.feature_importance[:2]} == {"x", "y"}
    assert result.feature_importance[0][1] > 0.1 > abs(result.feature_importance[-1][1])


def test_the_same_seed_gives_the_same_result() -> None:
    reference, current = correlated(0.5, seed=5), correlated(0.2, seed=6)
    first = classifier_drift(reference, current, FEATURES, seed=7, folds=3)
    assert classifier_drift(reference, current, FEATURES, seed=7, folds=3) == first


def test_sides_are_balanced_by_a_seeded_subsample() -> None:
    result = classifier_drift(correlated(0.9, seed=8, rows=3_000), correlated(0.9, seed=9, rows=900), FEATURES, max_rows_per_side=600, folds=3)
    assert result.reference_rows == 3_000 and result.current_rows == 900 and result.rows_per_side == 600
    assert result.severity is Severity.PASS


def test_a_shift_in_a_categorical_is_seen_and_attributed() -> None:
    reference = correlated(0.0, seed=10)
    rng = np.random.default_rng(11)
    current = correlated(0.0, seed=12).with_columns(
        carrier=pl.Series(rng.choice(["AA", "B6", "WN"], size=ROWS, p=[0.2, 0.2, 0.6])),
    )
    result = classifier_drift(reference, current, FEATURES, folds=3)
    assert result.severity is Severity.FAIL
    assert result.feature_importance[0][0] == "carrier"


def test_high_cardinality_strings_are_coded_ordinally_and_still_work() -> None:
    rng = np.random.default_rng(13)
    tails = [f"N{number:04d}" for number in range(600)]  # over the 250 native-category limit
    reference = pl.DataFrame({"tailnum": rng.choice(tails[:300], size=ROWS), "x": rng.normal(size=ROWS)})
    current = pl.DataFrame({"tailnum": rng.choice(tails[300:], size=ROWS), "x": rng.normal(size=ROWS)})
    result = classifier_drift(reference, current, ["tailnum", "x"], folds=3)
    assert result.auc > 0.95 and result.feature_importance[0][0] == "tailnum"


def test_too_few_rows_pass_with_a_reason() -> None:
    result = classifier_drift(correlated(0.9, seed=14, rows=99), correlated(-0.9, seed=15), FEATURES)
    assert result.severity is Severity.PASS and math.isnan(result.auc)
    assert result.reason.startswith("too few rows (reference 99") and result.reason.endswith("to judge")
    assert result.as_metadata()["auc"] is None


def test_missing_columns_are_named_with_their_frame() -> None:
    frame = correlated(0.9, seed=16, rows=200)
    with pytest.raises(DriftInputError, match=r"\['y'\] missing from the current frame"):
        classifier_drift(frame, frame.drop("y"), FEATURES)


def test_a_column_numeric_on_one_side_and_categorical_on_the_other_is_refused() -> None:
    frame = correlated(0.9, seed=17, rows=200)
    with pytest.raises(DriftInputError, match=r"column 'x' is Float64 in the reference frame but String"):
        classifier_drift(frame, frame.with_columns(pl.col("x").cast(pl.String)), FEATURES)


def test_ranked_sides_hide_marginal_shifts_but_not_a_changed_correlation() -> None:
    numeric = ("x", "y", "noise")
    reference = correlated(0.9, seed=5)
    shifted = correlated(0.9, seed=6).with_columns(pl.col("x") * 3 + 5, pl.col("noise") + 2)  # marginals move, coupling kept
    flipped = correlated(-0.9, seed=7)
    assert classifier_drift(reference, shifted, numeric).severity is Severity.FAIL  # raw: the shift is obvious
    ranked = rank_transform(reference, numeric, seed=0)
    assert rank_transform(shifted, numeric, seed=1).select(numeric).null_count().row(0) == shifted.select(numeric).null_count().row(0)
    assert classifier_drift(ranked, rank_transform(shifted, numeric, seed=1), numeric).severity is Severity.PASS
    assert classifier_drift(ranked, rank_transform(flipped, numeric, seed=1), numeric).severity is Severity.FAIL
