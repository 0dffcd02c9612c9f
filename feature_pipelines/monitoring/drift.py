"""Per-feature distribution drift between a reference (e.g. the training set) and a current sample.

Three statistics, each judged against the feature's `FeatureMonitoring` thresholds:

- **Population Stability Index** (every feature). Numeric features are binned on the REFERENCE
  (`Binning`): the cut points are its deciles (numpy's `inverted_cdf` quantiles, so every cut
  point is an observed value), deduplicated when values tie (a constant reference gives one cut
  point and two bins). Bins are right-closed, `(e[i], e[i+1]]`, and the outer bins are open to
  -inf/+inf, so current values outside the reference range are counted, never dropped.
  Categorical features (String, Boolean, Categorical, Enum) use the union of both sides'
  categories as bins.
  **Nulls** (and float NaN, treated as null) are never put in a value bin: each side's null share
  is reported on its own (`null_share_reference` / `null_share_current`) and, when either side has
  a null, one extra "null" bin is added, so a change in the null share adds its own PSI term.
  All shares are fractions of ALL rows of a side (nulls included), so they sum to 1.
  **Empty bins**: `epsilon` (1e-4) is added to every share and the shares are renormalised, so a
  bin empty on one side gives a large but finite term instead of log(0).
  PSI = sum over bins (c - r) * ln(c / r); each term is >= 0, and the sum is symmetric in r and c.
  As a guide, a mean shift of d standard deviations of a normal feature gives PSI close to d^2
  (slightly below with 10 bins): 0.1 sd ~ 0.01, 0.3 sd ~ 0.09, 0.5 sd ~ 0.22 (warn 0.1, fail 0.25).
- **Kolmogorov-Smirnov** (numeric features): statistic and p-value of `scipy.stats.ks_2samp` on
  the non-null values. A side without any non-null value raises `DriftInputError` naming the side:
  the statistic is undefined there, and `feature_drift` reports it as None instead of calling.
- **Jensen-Shannon divergence** (categorical features): base 2, so in [0, 1] (0 identical,
  1 disjoint); nulls are a category of their own; no smoothing is needed (0 log 0 = 0).

**Small samples** (`feature_drift`): with fewer than `min_rows` (50) rows on either side the
figures are still computed and shown, but the severity is PASS with the reason "too few rows (n)
to judge", so a tiny sample never raises a false alarm. KS is judged only when both sides have
at least `min_rows` non-null values (PSI, with its null bin, still judges an all-null day).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy import stats

from feature_pipelines.features.spec import FeatureMonitoring
from feature_pipelines.monitoring.figures import Figure, Figures

DEFAULT_BINS = 10
DEFAULT_EPSILON = 1e-4
MIN_ROWS = 50
NULL_LABEL = "null"
BINNING_RULE = (
    "cut points: reference quantiles at 1/b..(b-1)/b (inverted_cdf, so observed values), "
    "deduplicated; bins right-closed (e[i], e[i+1]], outer bins open to -inf/+inf; "
    "nulls and NaN in a separate 'null' bin when either side has one"
)

_CATEGORICAL_DTYPES = (pl.String, pl.Boolean, pl.Categorical, pl.Enum)


class DriftInputError(ValueError):
    """Inputs a drift statistic cannot judge: an empty side, a missing column, a mismatched dtype."""


class Severity(str, enum.Enum):
    """The verdict of a drift statistic against its thresholds; ordered PASS < WARN < FAIL."""

    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {Severity.PASS: 0, Severity.WARN: 1, Severity.FAIL: 2}


def worst(*severities: Severity) -> Severity:
    """The most severe of the given verdicts (PASS when none are given)."""
    return max(severities, key=lambda severity: severity.rank, default=Severity.PASS)


@dataclass(frozen=True)
class Binning:
    """Bins for a numeric feature, fixed by the reference so that both sides are cut alike.

    `edges` holds the bin boundaries including -inf and +inf: bin i is (edges[i], edges[i+1]]
    (the first bin is (-inf, edges[1]], the last (edges[-2], +inf)). Why right-closed
    quantile cut points: a value that ties with a cut point, typical of counts, always lands in
    the same bin as its reference twins, so a heavily tied reference has no empty reference bin.
    """

    edges: tuple[float, ...]
    rule: str = BINNING_RULE

    @classmethod
    def from_reference(cls, values: np.ndarray, *, bins: int = DEFAULT_BINS) -> Binning:
        """Quantile bins from the reference's non-null values (a single bin when there are none)."""
        if bins < 1:
            raise DriftInputError(f"bins must be >= 1, got {bins}")
        if values.size == 0 or bins == 1:
            return cls(edges=(-math.inf, math.inf))
        probabilities = np.arange(1, bins) / bins
        cuts = np.unique(np.quantile(values, probabilities, method="inverted_cdf"))
        # +-inf are already the outer edges; as interior cut points they would make an empty bin.
        cuts = cuts[np.isfinite(cuts)]
        return cls(edges=(-math.inf, *(float(cut) for cut in cuts), math.inf))

    @property
    def bin_count(self) -> int:
        return len(self.edges) - 1

    def counts(self, values: np.ndarray) -> np.ndarray:
        """How many of the (non-null) values fall in each bin."""
        interior = np.asarray(self.edges[1:-1], dtype=np.float64)
        index = np.searchsorted(interior, values, side="left")
        return np.bincount(index, minlength=self.bin_count)

    def labels(self) -> tuple[str, ...]:
        """Human-readable bin names for reports: '<=a', '(a, b]', '>b'."""
        if self.bin_count == 1:
            return ("all",)
        interior = self.edges[1:-1]
        labels = [f"<={interior[0]:.4g}"]
        labels += [f"({low:.4g}, {high:.4g}]" for low, high in zip(interior, interior[1:])]
        labels.append(f">{interior[-1]:.4g}")
        return tuple(labels)


@dataclass(frozen=True)
class PsiResult:
    """A PSI and the figures behind it, bin by bin (shares after epsilon smoothing).

    `edges` are the numeric `Binning.edges` (empty for a categorical feature); `labels` name every
    bin in order (the categories for a categorical feature), the "null" bin last when present.
    """

    psi: float
    edges: tuple[float, ...]
    reference_share: tuple[float, ...]
    current_share: tuple[float, ...]
    per_bin: tuple[float, ...]
    labels: tuple[str, ...] = ()
    kind: str = "numeric"
    epsilon: float = DEFAULT_EPSILON

    @classmethod
    def undefined(cls, kind: str) -> PsiResult:
        """No PSI: one side has no rows at all."""
        return cls(psi=math.nan, edges=(), reference_share=(), current_share=(), per_bin=(), kind=kind)


def is_categorical(series: pl.Series) -> bool:
    """Whether drift treats the series as categories (String/Boolean/Categorical/Enum)."""
    return isinstance(series.dtype, _CATEGORICAL_DTYPES)


def _kind(reference: pl.Series, current: pl.Series) -> str:
    """'categorical' or 'numeric' for a pair of series; an all-null (Null dtype) side follows the other."""
    kinds = set()
    for side, series in (("reference", reference), ("current", current)):
        if series.dtype == pl.Null:
            continue
        if is_categorical(series):
            kinds.add("categorical")
        elif series.dtype.is_numeric():
            kinds.add("numeric")
        else:
            raise DriftInputError(
                f"{side} series {series.name!r} has dtype {series.dtype}; drift needs a numeric, "
                "String, Boolean, Categorical or Enum column"
            )
    if len(kinds) > 1:
        raise DriftInputError(
            f"series {reference.name!r}: reference is {reference.dtype} but current is "
            f"{current.dtype}; both sides must be numeric or both categorical"
        )
    return kinds.pop() if kinds else "numeric"


def _numeric_values(series: pl.Series) -> np.ndarray:
    """The non-null, non-NaN values as float64 (NaN counts as null everywhere in drift)."""
    values = series.cast(pl.Float64)
    values = values.fill_nan(None).drop_nulls()
    return values.to_numpy()


def _null_count(series: pl.Series, kind: str) -> int:
    if kind == "numeric" and series.dtype != pl.Null:
        return series.len() - _numeric_values(series).size
    return series.null_count()


def _category_counts(series: pl.Series) -> dict[str | None, int]:
    """Counts per category as strings, None for null (so Boolean and String compare alike)."""
    counts = series.cast(pl.String).rename("category").value_counts(name="count")
    return dict(zip(counts.get_column("category").to_list(), counts.get_column("count").to_list()))


def _smoothed(counts: np.ndarray, total: int, epsilon: float) -> np.ndarray:
    """Shares of `total`, each plus epsilon, renormalised to sum to 1 (so no share is 0)."""
    shares = counts / total + epsilon
    return shares / shares.sum()


def _require_rows(reference: pl.Series, current: pl.Series, statistic: str) -> None:
    for side, series in (("reference", reference), ("current", current)):
        if series.len() == 0:
            raise DriftInputError(f"{statistic} of {series.name!r}: the {side} side has no rows")


def population_stability_index(
    reference: pl.Series,
    current: pl.Series,
    *,
    bins: int = DEFAULT_BINS,
    epsilon: float = DEFAULT_EPSILON,
    binning: Binning | None = None,
) -> PsiResult:
    """PSI of `current` against `reference` (module docstring: binning, nulls, empty bins).

    `binning` reuses bins fixed elsewhere (e.g. on the training set for every serving day);
    by default they are the reference's deciles. Raises DriftInputError when a side has no rows.
    """
    if epsilon <= 0:
        raise DriftInputError(f"epsilon must be > 0, got {epsilon}")
    _require_rows(reference, current, "PSI")
    kind = _kind(reference, current)
    if kind == "categorical":
        ref_counts, cur_counts, labels, edges = _categorical_bins(reference, current)
    else:
        ref_values, cur_values = _numeric_values(reference), _numeric_values(current)
        binning = binning or Binning.from_reference(ref_values, bins=bins)
        ref_counts, cur_counts = binning.counts(ref_values), binning.counts(cur_values)
        labels, edges = binning.labels(), binning.edges
        ref_nulls, cur_nulls = reference.len() - ref_values.size, current.len() - cur_values.size
        if ref_nulls or cur_nulls:
            ref_counts = np.append(ref_counts, ref_nulls)
            cur_counts = np.append(cur_counts, cur_nulls)
            labels = (*labels, NULL_LABEL)
    ref_share = _smoothed(ref_counts, reference.len(), epsilon)
    cur_share = _smoothed(cur_counts, current.len(), epsilon)
    per_bin = (cur_share - ref_share) * np.log(cur_share / ref_share)
    return PsiResult(
        psi=float(per_bin.sum()),
        edges=tuple(edges),
        reference_share=tuple(ref_share.tolist()),
        current_share=tuple(cur_share.tolist()),
        per_bin=tuple(per_bin.tolist()),
        labels=tuple(labels),
        kind=kind,
        epsilon=epsilon,
    )


def _categorical_bins(
    reference: pl.Series, current: pl.Series
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], tuple[float, ...]]:
    """Counts over the union of both sides' categories, sorted, with null (if any) last."""
    ref_counts, cur_counts = _category_counts(reference), _category_counts(current)
    categories = sorted({*ref_counts, *cur_counts} - {None})
    if None in ref_counts or None in cur_counts:
        categories.append(None)
    ref = np.array([ref_counts.get(category, 0) for category in categories], dtype=np.float64)
    cur = np.array([cur_counts.get(category, 0) for category in categories], dtype=np.float64)
    labels = tuple(NULL_LABEL if category is None else str(category) for category in categories)
    return ref, cur, labels, ()


def ks_statistic(reference: pl.Series, current: pl.Series) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov (statistic, p-value) on the non-null values of a numeric feature.

    The statistic is the largest gap between the two empirical CDFs, in [0, 1]. Raises
    DriftInputError naming the side that has no non-null value (the statistic is undefined).
    """
    if _kind(reference, current) != "numeric":
        raise DriftInputError(f"KS of {reference.name!r}: needs numeric series, got {reference.dtype}")
    ref_values, cur_values = _numeric_values(reference), _numeric_values(current)
    for side, values in (("reference", ref_values), ("current", cur_values)):
        if values.size == 0:
            raise DriftInputError(f"KS of {reference.name!r}: the {side} side has no non-null values")
    result = stats.ks_2samp(ref_values, cur_values)
    return float(result.statistic), float(result.pvalue)


def jensen_shannon_divergence(reference: pl.Series, current: pl.Series) -> float:
    """Jensen-Shannon divergence (base 2, in [0, 1]) of the category distributions, null a category.

    Values are compared as strings, so it also serves booleans and, if asked, discrete numbers.
    Raises DriftInputError when a side has no rows.
    """
    _require_rows(reference, current, "JSD")
    ref_counts, cur_counts, _, _ = _categorical_bins(reference, current)
    p, q = ref_counts / ref_counts.sum(), cur_counts / cur_counts.sum()
    m = (p + q) / 2
    divergence = 0.5 * _kl_bits(p, m) + 0.5 * _kl_bits(q, m)
    return float(min(max(divergence, 0.0), 1.0))  # clip float round-off at the ends


def _kl_bits(p: np.ndarray, m: np.ndarray) -> float:
    """KL(p || m) in bits, with 0 log 0 = 0 (m > 0 wherever p > 0 since m is a mixture with p)."""
    mask = p > 0
    return float(np.sum(p[mask] * np.log2(p[mask] / m[mask])))


@dataclass(frozen=True)
class FeatureDrift:
    """The drift verdict for one feature, with every figure behind it (for checks and plots).

    Counts are all rows of a side, nulls included. Statistics that do not apply or cannot be
    computed are None (KS/JSD by kind; KS when a side has no non-null value). `psi` is NaN only
    when a side has no rows at all.
    """

    feature: str
    kind: str
    reference_count: int
    current_count: int
    null_share_reference: float
    null_share_current: float
    psi: float
    ks_statistic: float | None
    ks_pvalue: float | None
    jsd: float | None
    severity: Severity
    reasons: tuple[str, ...]
    psi_result: PsiResult
    psi_warn: float = FeatureMonitoring.psi_warn
    psi_fail: float = FeatureMonitoring.psi_fail

    def as_metadata(self) -> dict[str, float | str | int | None]:
        """Flat JSON-able figures for Dagster metadata (NaN becomes None, as JSON has no NaN)."""
        return DRIFT_FIGURES.metadata(self)


DRIFT_FIGURES: Figures[FeatureDrift] = Figures(
    (
        Figure("feature", lambda d: d.feature, pl.String()),
        Figure("kind", lambda d: d.kind, pl.String()),
        Figure("severity", lambda d: d.severity.value, pl.String()),
        Figure("psi", lambda d: d.psi, pl.Float64(), finite=True),
        Figure("ks_statistic", lambda d: d.ks_statistic, pl.Float64(), heading="ks", finite=True),
        Figure("ks_pvalue", lambda d: d.ks_pvalue, pl.Float64(), heading="ks p-value", finite=True),
        Figure("jsd", lambda d: d.jsd, pl.Float64(), finite=True),
        Figure("reference_count", lambda d: d.reference_count, pl.Int64()),
        Figure("current_count", lambda d: d.current_count, pl.Int64()),
        Figure("null_share_reference", lambda d: d.null_share_reference, pl.Float64(), heading="null share ref",
               finite=True),
        Figure("null_share_current", lambda d: d.null_share_current, pl.Float64(), heading="null share cur",
               finite=True),
        Figure("reasons", lambda d: "; ".join(d.reasons), pl.String()),
        Figure("psi_warn", lambda d: d.psi_warn),
        Figure("psi_fail", lambda d: d.psi_fail),
        Figure("counts", lambda d: f"{d.reference_count} / {d.current_count}", heading="rows (previous / day)"),
    ),
    metadata_order=(
        "feature", "kind", "severity", "reasons", "reference_count", "current_count", "null_share_reference",
        "null_share_current", "psi", "psi_warn", "psi_fail", "ks_statistic", "ks_pvalue", "jsd",
    ),
)
"""A drift figure's table column, metadata key and report heading."""


def judge(metric: str, value: float | None, warn: float, fail: float) -> tuple[Severity, str | None]:
    """A statistic against its thresholds: FAIL at or above `fail`, WARN at or above `warn`."""
    if value is None or not math.isfinite(value):
        return Severity.PASS, None
    if value >= fail:
        return Severity.FAIL, f"{metric} {value:.4g} >= fail {fail:g}"
    if value >= warn:
        return Severity.WARN, f"{metric} {value:.4g} >= warn {warn:g}"
    return Severity.PASS, None


def feature_drift(
    feature: str,
    reference: pl.Series,
    current: pl.Series,
    thresholds: FeatureMonitoring,
    *,
    min_rows: int = MIN_ROWS,
    bins: int = DEFAULT_BINS,
    epsilon: float = DEFAULT_EPSILON,
) -> FeatureDrift:
    """Every drift figure of one feature and its severity: the worst of PSI and KS (numeric) or
    PSI and JSD (categorical); PASS with a reason when a side has fewer than `min_rows` rows."""
    kind = _kind(reference, current)
    ref_n, cur_n = reference.len(), current.len()
    ref_nulls, cur_nulls = _null_count(reference, kind), _null_count(current, kind)
    has_rows = ref_n > 0 and cur_n > 0
    psi = population_stability_index(reference, current, bins=bins, epsilon=epsilon) if has_rows else PsiResult.undefined(kind)

    ks_stat = ks_p = jsd = None
    ks_judged = False
    if kind == "numeric":
        if ref_n - ref_nulls > 0 and cur_n - cur_nulls > 0:
            ks_stat, ks_p = ks_statistic(reference, current)
            ks_judged = min(ref_n - ref_nulls, cur_n - cur_nulls) >= min_rows
    elif has_rows:
        jsd = jensen_shannon_divergence(reference, current)

    if min(ref_n, cur_n) < min_rows:
        severity = Severity.PASS
        reasons: tuple[str, ...] = (
            f"too few rows ({min(ref_n, cur_n)}, reference {ref_n} / current {cur_n}; need "
            f"{min_rows} on each side) to judge",
        )
    else:
        verdicts = [judge("psi", psi.psi, thresholds.psi_warn, thresholds.psi_fail)]
        if kind == "numeric":
            if ks_judged:
                verdicts.append(judge("ks", ks_stat, thresholds.ks_warn, thresholds.ks_fail))
        else:
            verdicts.append(judge("jsd", jsd, thresholds.jsd_warn, thresholds.jsd_fail))
        severity = worst(*(verdict for verdict, _ in verdicts))
        reasons = tuple(reason for _, reason in verdicts if reason is not None)
        if kind == "numeric" and not ks_judged:
            reasons += (f"ks not judged: fewer than {min_rows} non-null values on a side",)

    return FeatureDrift(
        feature=feature,
        kind=kind,
        reference_count=ref_n,
        current_count=cur_n,
        null_share_reference=ref_nulls / ref_n if ref_n else math.nan,
        null_share_current=cur_nulls / cur_n if cur_n else math.nan,
        psi=psi.psi,
        ks_statistic=ks_stat,
        ks_pvalue=ks_p,
        jsd=jsd,
        severity=severity,
        reasons=reasons,
        psi_result=psi,
        psi_warn=thresholds.psi_warn,
        psi_fail=thresholds.psi_fail,
    )


def drift_report(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    thresholds: Mapping[str, FeatureMonitoring],
    *,
    min_rows: int = MIN_ROWS,
) -> list[FeatureDrift]:
    """`feature_drift` for every feature named in `thresholds`, in that order.

    Raises DriftInputError naming the column and the frame when a feature column is missing.
    """
    for feature in thresholds:
        for side, frame in (("reference", reference), ("current", current)):
            if feature not in frame.columns:
                raise DriftInputError(
                    f"drift report: column {feature!r} is missing from the {side} frame "
                    f"(it has {sorted(frame.columns)})"
                )
    return [
        feature_drift(feature, reference.get_column(feature), current.get_column(feature), monitoring, min_rows=min_rows)
        for feature, monitoring in thresholds.items()
    ]


__all__ = [
    "BINNING_RULE",
    "DRIFT_FIGURES",
    "Binning",
    "DriftInputError",
    "FeatureDrift",
    "PsiResult",
    "Severity",
    "drift_report",
    "feature_drift",
    "jensen_shannon_divergence",
    "judge",
    "ks_statistic",
    "population_stability_index",
    "worst",
]
