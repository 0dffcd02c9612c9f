"""Injected concept drift: the label's relation to a feature changes while the inputs stay the same.
The outcome monitor's test by feature bin catches it; the input drift monitors correctly see nothing."""

from __future__ import annotations

import numpy as np
import polars as pl

from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.monitoring.concept_drift import concept_drift, error_at_reference, error_by_bin
from feature_pipelines.monitoring.drift import Severity, drift_report
from feature_pipelines.monitoring.outcomes import OUTCOME_THRESHOLDS

ROUTE = FEATURE_VIEWS["route_delay_stats"]
FEATURES = ["route_dep_delay_mean_24h", "route_flights_count_7d"]
ROWS = 20_000  # a busy day of predictions; the statistic grows with the rows of a real change


def _inputs(seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame({"route_dep_delay_mean_24h": rng.exponential(15.0, ROWS),
                         "route_flights_count_7d": rng.poisson(40, ROWS).astype(np.int64)})


def _model(frame: pl.DataFrame) -> np.ndarray:
    """The model: P(late) rises with the route's recent delay (calibrated for the reference world)."""
    return 1 / (1 + np.exp(-(-1.5 + 0.05 * frame["route_dep_delay_mean_24h"].to_numpy())))


def _labelled(frame: pl.DataFrame, probability: np.ndarray, seed: int) -> pl.DataFrame:
    labels = np.random.default_rng(seed).random(ROWS) < probability
    return frame.with_columns(pl.Series("label", labels), pl.Series("score", _model(frame)))


def test_a_changed_relation_is_caught_by_outcomes_and_missed_by_input_drift() -> None:
    holdout_inputs, day_inputs = _inputs(1), _inputs(2)
    holdout = _labelled(holdout_inputs, _model(holdout_inputs), seed=3)
    reference = error_by_bin(holdout, FEATURES, label="label", score="score")

    same_world = _labelled(day_inputs, _model(day_inputs), seed=4)
    # The drifted world: the same inputs, but a long recent delay now means the route has been
    # cleared (late becomes less likely as the route's delay grows), at the same overall rate.
    delay = day_inputs["route_dep_delay_mean_24h"].to_numpy()
    flipped = 1 / (1 + np.exp(-(-1.5 + 0.05 * (2 * np.median(delay) - delay))))
    drifted = _labelled(day_inputs, flipped, seed=4)

    def statistics(day: pl.DataFrame) -> dict[str, float]:
        current = error_at_reference(day, reference, label="label", score="score")
        return {d.feature: d.statistic for d in concept_drift(reference, current)}

    clean, changed = statistics(same_world), statistics(drifted)
    assert max(clean.values()) < OUTCOME_THRESHOLDS.concept_warn, clean
    assert changed["route_dep_delay_mean_24h"] >= OUTCOME_THRESHOLDS.concept_fail, changed
    # Input drift: the served inputs of the drifted day against the holdout's, per feature, with
    # each feature's declared thresholds. The inputs did not move, so nothing warns.
    thresholds = {name: ROUTE.feature(name).monitoring for name in FEATURES}
    inputs = drift_report(holdout.select(FEATURES), drifted.select(FEATURES), thresholds)
    assert [d.severity for d in inputs] == [Severity.PASS, Severity.PASS], [(d.feature, d.psi, d.reasons) for d in inputs]
