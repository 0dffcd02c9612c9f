"""Per-feature drift: PSI binning, empty bins and nulls as documented, KS and JSD against scipy,
severities exactly at the thresholds, and the small-sample rule that prevents false alarms."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.spatial.distance import jensenshannon

from feature_pipelines.features.spec import FeatureMonitoring
from feature_pipelines.monitoring.drift import (
    Binning,
    DriftInputError,
    Severity,
    drift_report,
    feature_drift,
    jensen_shannon_divergence,
    ks_statistic,
    population_stability_index,
)

# Thresholds that a statistic in [0, 1) never reaches, to look at one statistic at a time.
NEVER = 1.0


def normal(mean: float, n: int, seed: int, name: str = "x") -> pl.Series:
    return pl.Series(name, np.random.default_rng(seed).normal(mean, 1.0, size=n))


# --- PSI ---------------------------------------------------------------------------------------


def test_psi_of_identical_series_is_zero_and_of_two_samples_of_one_distribution_is_tiny() -> None:
    sample = normal(0.0, 5_000, seed=1)
    assert population_stability_index(sample, sample).psi == 0.0
    assert population_stability_index(sample, normal(0.0, 5_000, seed=2)).psi < 0.01


def test_psi_hand_computed_two_bins() -> None:
    # Reference [1, 1, 2, 2], 2 bins: the median cut point (inverted_cdf) is 1, so the bins are
    # (-inf, 1] and (1, +inf) with reference counts 2 / 2 and current [1, 2, 2, 2] counts 1 / 3.
    # Shares + 1e-4 then renormalised by 1.0002:
    #   reference 0.5 / 0.5; current 0.2501 / 1.0002 = 0.25004999, 0.7501 / 1.0002 = 0.74995001
    # PSI = (0.25004999 - 0.5) ln(0.25004999 / 0.5) + (0.74995001 - 0.5) ln(0.74995001 / 0.5)
    #     = 0.17325 + 0.10128 = 0.274532 (without smoothing: 0.25 ln 2 + 0.25 ln 1.5 = 0.274653)
    result = population_stability_index(pl.Series([1, 1, 2, 2]), pl.Series([1, 2, 2, 2]), bins=2)
    assert result.edges == (-math.inf, 1.0, math.inf)
    assert result.reference_share == pytest.approx((0.5, 0.5), abs=1e-12)
    assert result.current_share == pytest.approx((0.25004999, 0.74995001), abs=1e-8)
    assert result.psi == pytest.approx(0.2745315169696105, rel=1e-12)
    assert sum(result.per_bin) == pytest.approx(result.psi, rel=1e-12)
    assert result.labels == ("<=1", ">1")
    unsmoothed = population_stability_index(pl.Series([1, 1, 2, 2]), pl.Series([1, 2, 2, 2]), bins=2, epsilon=1e-12)
    assert unsmoothed.psi == pytest.approx(0.25 * math.log(2) + 0.25 * math.log(1.5), rel=1e-9)


def test_reference_deciles_make_ten_equal_reference_bins() -> None:
    result = population_stability_index(normal(0.0, 10_000, seed=3), normal(0.0, 10_000, seed=4))
    assert len(result.edges) == 11 and result.edges[0] == -math.inf and result.edges[-1] == math.inf
    assert result.reference_share == pytest.approx((0.1,) * 10, abs=1e-3)


@pytest.mark.parametrize(("shift", "low", "high"), [(0.1, 0.0, 0.03), (0.3, 0.06, 0.12), (0.5, 0.19, 0.27)])
def test_psi_of_a_mean_shift_falls_in_the_documented_band(shift: float, low: float, high: float) -> None:
    # Documented: a shift of d standard deviations gives PSI close to d^2 (0.01 / 0.09 / ~0.22).
    psi = population_stability_index(normal(0.0, 20_000, seed=5), normal(shift, 20_000, seed=6)).psi
    assert low <= psi <= high


def test_an_empty_bin_gives_a_finite_psi() -> None:
    reference = pl.Series(np.linspace(0.0, 1.0, 1_000))
    current = pl.Series([0.05] * 500)  # everything in the first decile, nine bins empty
    result = population_stability_index(reference, current)
    assert all(math.isfinite(term) for term in result.per_bin)
    assert math.isfinite(result.psi) and result.psi > 1.0
    assert min(result.current_share) > 0  # epsilon smoothing: no share is exactly zero


def test_values_outside_the_reference_range_are_counted_in_the_outer_bins() -> None:
    reference = pl.Series(np.linspace(0.0, 1.0, 1_000))
    result = population_stability_index(reference, pl.Series([-5.0] * 10 + [7.0] * 30))
    assert result.current_share[0] == pytest.approx(0.25, abs=1e-3)
    assert result.current_share[-1] == pytest.approx(0.75, abs=1e-3)


def test_constant_reference_gives_two_bins_around_the_constant() -> None:
    reference = pl.Series([5.0] * 200)
    same = population_stability_index(reference, pl.Series([5.0] * 100))
    assert same.edges == (-math.inf, 5.0, math.inf) and same.psi == 0.0
    moved = population_stability_index(reference, pl.Series([6.0] * 100))
    assert math.isfinite(moved.psi) and moved.psi > 5.0


def test_ties_are_deduplicated_so_no_reference_bin_is_empty() -> None:
    counts = pl.Series([0] * 800 + list(range(1, 201)))  # 80% zeros, like a quiet COUNT feature
    binning = Binning.from_reference(counts.to_numpy().astype(float))
    assert binning.edges[1] == 0.0 and len(set(binning.edges)) == len(binning.edges)
    result = population_stability_index(counts, counts)
    assert result.reference_share[0] == pytest.approx(0.8, abs=1e-3)
    assert min(result.reference_share) > 0.05


def test_categorical_psi_spans_new_categories() -> None:
    reference = pl.Series(["a"] * 60 + ["b"] * 40)
    current = pl.Series(["a"] * 50 + ["b"] * 30 + ["c"] * 20)
    result = population_stability_index(reference, current)
    assert result.kind == "categorical" and result.labels == ("a", "b", "c") and result.edges == ()
    assert result.reference_share[2] == pytest.approx(1e-4 / 1.0003)
    assert math.isfinite(result.psi) and result.psi > 0.25
    assert population_stability_index(reference, reference).psi == 0.0


def test_boolean_series_are_categorical() -> None:
    result = population_stability_index(pl.Series([True] * 70 + [False] * 30), pl.Series([True] * 30 + [False] * 70))
    assert result.kind == "categorical" and result.labels == ("false", "true")
    assert result.psi == pytest.approx(0.4 * math.log(7 / 3) * 2, rel=1e-3)


def test_nulls_get_their_own_bin_only_when_present_and_are_treated_alike_on_both_sides() -> None:
    values = normal(0.0, 1_000, seed=7)
    with_nulls = pl.concat([values, pl.Series("x", [None] * 250, dtype=pl.Float64)])
    assert "null" not in population_stability_index(values, values).labels

    nulls_in_reference = population_stability_index(with_nulls, values)
    nulls_in_current = population_stability_index(values, with_nulls)
    assert nulls_in_reference.labels[-1] == nulls_in_current.labels[-1] == "null"
    assert nulls_in_reference.reference_share[-1] == pytest.approx(0.2, abs=1e-3)
    # Same value bins (nulls never shape the binning), PSI symmetric in the two shares:
    assert nulls_in_reference.edges == nulls_in_current.edges
    assert nulls_in_reference.psi == pytest.approx(nulls_in_current.psi, rel=1e-9)
    assert nulls_in_current.psi > 0.25  # a 20% null share appearing is itself drift


def test_nan_counts_as_null() -> None:
    values = normal(0.0, 400, seed=8)
    with_nan = pl.concat([values, pl.Series("x", [float("nan")] * 100)])
    with_null = pl.concat([values, pl.Series("x", [None] * 100, dtype=pl.Float64)])
    assert population_stability_index(values, with_nan).psi == population_stability_index(values, with_null).psi
    assert feature_drift("x", values, with_nan, FeatureMonitoring()).null_share_current == pytest.approx(0.2)


def test_psi_refuses_an_empty_side_naming_it() -> None:
    with pytest.raises(DriftInputError, match="current side has no rows"):
        population_stability_index(pl.Series("x", [1.0, 2.0]), pl.Series("x", [], dtype=pl.Float64))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.one_of(st.none(), st.floats(-1e6, 1e6)), min_size=1, max_size=80),
    st.lists(st.one_of(st.none(), st.floats(-1e6, 1e6)), min_size=1, max_size=80),
    st.integers(1, 12),
)
def test_psi_is_finite_and_non_negative(reference: list[float | None], current: list[float | None], bins: int) -> None:
    result = population_stability_index(
        pl.Series(reference, dtype=pl.Float64), pl.Series(current, dtype=pl.Float64), bins=bins
    )
    assert math.isfinite(result.psi) and result.psi >= 0.0
    assert all(term >= 0.0 for term in result.per_bin)
    assert sum(result.reference_share) == pytest.approx(1.0) and sum(result.current_share) == pytest.approx(1.0)


# --- KS and JSD --------------------------------------------------------------------------------


def test_ks_matches_scipy_on_the_non_null_values() -> None:
    reference, current = normal(0.0, 300, seed=9), normal(0.3, 200, seed=10)
    expected = stats.ks_2samp(reference.to_numpy(), current.to_numpy())
    with_nulls = pl.concat([current, pl.Series("x", [None] * 50, dtype=pl.Float64)])
    statistic, pvalue = ks_statistic(reference, with_nulls)
    assert statistic == pytest.approx(expected.statistic, rel=1e-12)
    assert pvalue == pytest.approx(expected.pvalue, rel=1e-9)


def test_ks_names_the_side_without_values() -> None:
    with pytest.raises(DriftInputError, match="reference side has no non-null values"):
        ks_statistic(pl.Series("x", [None, None], dtype=pl.Float64), pl.Series("x", [1.0]))


def test_jsd_is_zero_for_identical_one_for_disjoint_and_symmetric() -> None:
    left = pl.Series(["a", "a", "b", None])
    right = pl.Series(["a", "b", "b", "c", "c", None])
    assert jensen_shannon_divergence(left, left) == 0.0
    assert jensen_shannon_divergence(pl.Series(["a", "b"]), pl.Series(["c", "d", None])) == pytest.approx(1.0)
    assert jensen_shannon_divergence(left, right) == pytest.approx(jensen_shannon_divergence(right, left))
    # Against scipy's distance (its square root), with null as the last category:
    p, q = np.array([2, 1, 0, 1]) / 4, np.array([1, 2, 2, 1]) / 6
    assert jensen_shannon_divergence(left, right) == pytest.approx(jensenshannon(p, q, base=2) ** 2, rel=1e-9)


# --- severity ------------------------------------------------------------------------------------


def _psi_only(warn: float, fail: float) -> FeatureMonitoring:
    return FeatureMonitoring(psi_warn=warn, psi_fail=fail, ks_warn=NEVER, ks_fail=NEVER)


def test_psi_severity_exactly_at_warn_between_and_at_fail() -> None:
    reference, current = normal(0.0, 2_000, seed=11), normal(0.4, 2_000, seed=12)
    psi = population_stability_index(reference, current).psi

    below = feature_drift("x", reference, current, _psi_only(psi * 1.01, psi * 2))
    at_warn = feature_drift("x", reference, current, _psi_only(psi, psi * 2))
    between = feature_drift("x", reference, current, _psi_only(psi / 2, psi * 2))
    at_fail = feature_drift("x", reference, current, _psi_only(psi / 2, psi))
    assert below.severity is Severity.PASS and below.reasons == ()
    assert at_warn.severity is Severity.WARN and at_warn.reasons[0].startswith("psi ")
    assert "warn" in at_warn.reasons[0]
    assert between.severity is Severity.WARN
    assert at_fail.severity is Severity.FAIL and "fail" in at_fail.reasons[0]


def test_ks_severity_at_its_thresholds_and_the_worst_verdict_wins() -> None:
    reference, current = normal(0.0, 2_000, seed=13), normal(0.4, 2_000, seed=14)
    statistic, _ = ks_statistic(reference, current)
    lenient_psi = {"psi_warn": 100.0, "psi_fail": 100.0}
    at_warn = feature_drift("x", reference, current, FeatureMonitoring(ks_warn=statistic, ks_fail=NEVER, **lenient_psi))
    at_fail = feature_drift("x", reference, current, FeatureMonitoring(ks_warn=statistic / 2, ks_fail=statistic, **lenient_psi))
    assert at_warn.severity is Severity.WARN and at_warn.reasons == (f"ks {statistic:.4g} >= warn {statistic:g}",)
    assert at_fail.severity is Severity.FAIL
    # PSI only warns, KS fails: the feature fails.
    psi = population_stability_index(reference, current).psi
    mixed = feature_drift("x", reference, current, FeatureMonitoring(psi_warn=psi / 2, psi_fail=psi * 2, ks_warn=statistic / 2, ks_fail=statistic))
    assert mixed.severity is Severity.FAIL and len(mixed.reasons) == 2


def test_categorical_severity_uses_psi_and_jsd() -> None:
    reference = pl.Series(["a"] * 300 + ["b"] * 300)
    current = pl.Series(["a"] * 200 + ["b"] * 400)
    jsd = jensen_shannon_divergence(reference, current)
    drift = feature_drift("carrier", reference, current, FeatureMonitoring(psi_warn=50, psi_fail=50, jsd_warn=jsd, jsd_fail=1.0))
    assert drift.kind == "categorical" and drift.ks_statistic is None and drift.jsd == jsd
    assert drift.severity is Severity.WARN and drift.reasons[0].startswith("jsd ")


def test_a_small_sample_never_alarms_but_still_shows_its_figures() -> None:
    reference = normal(0.0, 1_000, seed=15)
    tiny = normal(5.0, 49, seed=16)  # a huge shift, but only 49 rows
    judged = feature_drift("x", reference, normal(5.0, 50, seed=16), FeatureMonitoring())
    small = feature_drift("x", reference, tiny, FeatureMonitoring())
    assert judged.severity is Severity.FAIL
    assert small.severity is Severity.PASS
    assert small.reasons[0].startswith("too few rows (49") and small.reasons[0].endswith("to judge")
    assert small.psi > 1.0 and small.ks_statistic is not None


def test_an_all_null_current_day_fails_on_psi_even_though_ks_cannot_judge() -> None:
    reference = normal(0.0, 500, seed=17)
    current = pl.Series("x", [None] * 500, dtype=pl.Float64)
    drift = feature_drift("x", reference, current, FeatureMonitoring())
    assert drift.severity is Severity.FAIL and drift.null_share_current == 1.0
    assert drift.ks_statistic is None
    assert any(reason.startswith("ks not judged") for reason in drift.reasons)


def test_an_empty_side_reports_nan_psi_and_passes() -> None:
    drift = feature_drift("x", normal(0.0, 100, seed=18), pl.Series("x", [], dtype=pl.Float64), FeatureMonitoring())
    assert drift.severity is Severity.PASS and math.isnan(drift.psi)
    assert drift.as_metadata()["psi"] is None


# --- drift_report ----------------------------------------------------------------------------


def test_drift_report_covers_the_threshold_keys_in_order_with_json_metadata() -> None:
    rng = np.random.default_rng(19)
    reference = pl.DataFrame({"a": rng.normal(size=500), "b": rng.choice(["x", "y"], size=500), "extra": np.arange(500)})
    current = pl.DataFrame({"b": rng.choice(["x", "y"], size=400), "a": rng.normal(1.0, 1.0, size=400)})
    report = drift_report(reference, current, {"b": FeatureMonitoring(), "a": FeatureMonitoring()})
    assert [drift.feature for drift in report] == ["b", "a"]
    assert [drift.kind for drift in report] == ["categorical", "numeric"]
    assert report[1].severity is Severity.FAIL and report[0].severity is Severity.PASS
    metadata = report[1].as_metadata()
    assert metadata["severity"] == "fail" and metadata["reference_count"] == 500 and metadata["current_count"] == 400
    json.dumps([drift.as_metadata() for drift in report], allow_nan=False)


def test_drift_report_names_the_missing_column_and_frame() -> None:
    frame = pl.DataFrame({"a": [1.0, 2.0]})
    with pytest.raises(DriftInputError, match=r"column 'b' is missing from the current frame"):
        drift_report(frame.with_columns(b=pl.lit(1.0)), frame, {"a": FeatureMonitoring(), "b": FeatureMonitoring()})
    with pytest.raises(DriftInputError, match=r"column 'b' is missing from the reference frame"):
        drift_report(frame, frame, {"b": FeatureMonitoring()})


def test_mismatched_kinds_are_refused() -> None:
    with pytest.raises(DriftInputError, match="both sides must be numeric or both categorical"):
        feature_drift("x", pl.Series("x", [1.0, 2.0]), pl.Series("x", ["a", "b"]), FeatureMonitoring())
