"""Fitted transformations, and the seeds' z-score incident made impossible.

The incident: a model was trained on z-scores with a global mean and standard deviation, and the
server computed each user's own mean and standard deviation from the rows it had, so every
served z-score was on another scale. Here the only apply path takes a `FittedStatistics`; a row's
transformed value is the same bits alone, in any batch, and in a batch of that user's rows only.
"""

from __future__ import annotations

import ast
import struct
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from feature_pipelines.features.services import FeatureService, ServiceStatisticsError, apply_service_transforms
from feature_pipelines.features.transforms import (
    ClipBounds,
    ClipQuantiles,
    FittedStatistics,
    FittedStatisticsError,
    FittedStep,
    Impute,
    ImputeStrategy,
    Standardize,
    transformed_column,
)
from feature_pipelines.offline.fitted_statistics import fit_statistics

FEATURE = "carrier_dep_delay_mean_24h"
SERVICE = FeatureService(
    name="delay_zscore", owner="me@example.com", description="the incident's model",
    features=(f"carrier_delay_stats:{FEATURE}", "carrier_delay_stats:carrier_flights_count_24h"),
    transforms=(Impute(FEATURE, ImputeStrategy.MEDIAN), Standardize(FEATURE),
                ClipQuantiles("carrier_flights_count_24h", 0.1, 0.9)),
    statistics_version=1,
)
PACKAGE = Path(__file__).resolve().parents[2] / "feature_pipelines"


def _training_frame() -> pl.DataFrame:
    """Three carriers ("users") on very different scales, some nulls."""
    delays, counts, carriers = [], [], []
    for index in range(300):
        carrier = ("UA", "AA", "B6")[index % 3]
        scale = {"UA": 1.0, "AA": 10.0, "B6": 100.0}[carrier]
        delays.append(None if index % 17 == 0 else scale * ((index * 7919) % 101) / 7.0)
        counts.append((index * 31) % 57)
        carriers.append(carrier)
    return pl.DataFrame({"carrier": carriers, FEATURE: delays, "carrier_flights_count_24h": counts},
                        schema_overrides={FEATURE: pl.Float64, "carrier_flights_count_24h": pl.Int64})


def _statistics(frame: pl.DataFrame) -> FittedStatistics:
    return FittedStatistics(
        service=SERVICE.name, service_version=SERVICE.version, version=1, steps=fit_statistics(frame, SERVICE),
        fitted_at=datetime(2013, 1, 10, tzinfo=UTC), training_set="probe", training_set_version=0,
        training_rows=frame.height,
    )


def _bits(values: list[float | None]) -> list[bytes | None]:
    return [None if value is None else struct.pack("<d", value) for value in values]


def test_fitted_statistics_are_the_training_frames_global_ones() -> None:
    frame = _training_frame()
    steps = fit_statistics(frame, SERVICE)
    median = frame[FEATURE].median()
    imputed = frame[FEATURE].fill_null(median)
    assert steps[0].values == {"fill": median}
    assert steps[1].values == {"mean": imputed.mean(), "std": imputed.std(ddof=0)}  # fitted after the imputation
    counts = frame["carrier_flights_count_24h"].cast(pl.Float64)
    assert steps[2].values == {"lower": counts.quantile(0.1, "linear"), "upper": counts.quantile(0.9, "linear")}


def test_zscore_incident_cannot_happen() -> None:
    training = _training_frame()
    statistics = _statistics(training)
    mean, std = statistics.steps[1].values["mean"], statistics.steps[1].values["std"]
    whole = apply_service_transforms(training, SERVICE, statistics)
    expected = [None if x is None else (x - mean) * (1.0 / std) for x in training[FEATURE].fill_null(training[FEATURE].median())]
    assert _bits(whole[FEATURE].to_list()) == _bits(expected)  # the global scale, exactly

    for carrier in ("UA", "AA", "B6"):
        own = training.filter(pl.col("carrier") == carrier)
        # What the incident's server did: each user's own statistics. A different scale...
        per_user = ((own[FEATURE] - own[FEATURE].mean()) / own[FEATURE].std(ddof=0)).to_list()
        served = apply_service_transforms(own, SERVICE, statistics)[FEATURE].to_list()
        assert _bits(per_user) != _bits(served)
        # ...which the platform cannot produce: a batch of one user's rows gives the global-scale
        # values, so its own mean is not 0, as it would be with statistics of the batch.
        assert abs(pl.Series(served).mean()) > 0.1  # type: ignore[arg-type]
        assert _bits(served) == _bits(whole.filter(pl.col("carrier") == carrier)[FEATURE].to_list())


def test_a_row_gives_the_same_bits_alone_in_any_batch() -> None:
    training = _training_frame()
    statistics = _statistics(training)
    batch_100 = training.slice(50, 100)
    in_batch = apply_service_transforms(batch_100, SERVICE, statistics)
    indexed = batch_100.with_row_index("row")
    shuffled = apply_service_transforms(indexed.sample(fraction=1.0, shuffle=True, seed=3), SERVICE, statistics).sort("row")
    for row in range(batch_100.height):
        alone = apply_service_transforms(batch_100.slice(row, 1), SERVICE, statistics)
        for name in SERVICE.column_names:
            assert alone[name].equals(in_batch[name].slice(row, 1), check_dtypes=True, null_equal=True)
            assert _bits([alone[name].cast(pl.Float64).item()]) == _bits([in_batch[name].cast(pl.Float64).item(row)])
    for name in SERVICE.column_names:  # another order, the same bits row for row
        assert _bits(shuffled[name].cast(pl.Float64).to_list()) == _bits(in_batch[name].cast(pl.Float64).to_list())


def test_the_apply_path_takes_fitted_statistics_only() -> None:
    training = _training_frame()
    with pytest.raises(TypeError, match="statistics must be FittedStatistics, got DataFrame"):
        apply_service_transforms(training, SERVICE, training)  # type: ignore[arg-type]
    with pytest.raises(ServiceStatisticsError, match="needs fitted statistics"):
        apply_service_transforms(training, SERVICE, None)
    other = FeatureService(name=SERVICE.name, owner="x@example.com", description="", features=SERVICE.features,
                           transforms=(Standardize(FEATURE),), statistics_version=1)
    with pytest.raises(ServiceStatisticsError, match=f"fitted for service 'delay_zscore' version {SERVICE.version}"):
        apply_service_transforms(training, other, _statistics(training))


def test_fitting_refuses_what_would_be_a_silent_guess() -> None:
    constant = _training_frame().with_columns(pl.lit(3.0).alias(FEATURE))
    with pytest.raises(FittedStatisticsError, match="standardize on 'carrier_dep_delay_mean_24h': the training values are constant"):
        fit_statistics(constant, SERVICE)
    empty = _training_frame().with_columns(pl.lit(None, dtype=pl.Float64).alias(FEATURE))
    with pytest.raises(FittedStatisticsError, match="impute on 'carrier_dep_delay_mean_24h': no non-null training value"):
        fit_statistics(empty, SERVICE)
    wrong = _training_frame().with_columns(pl.col("carrier_flights_count_24h").cast(pl.Float64))
    with pytest.raises(FittedStatisticsError, match="'carrier_flights_count_24h' is Float64, the service declares Int64"):
        fit_statistics(wrong, SERVICE)
    with pytest.raises(FittedStatisticsError, match=r"expected statistics \['mean', 'std'\], got \['mean'\]"):
        FittedStep(Standardize(FEATURE), {"mean": 1.0})
    with pytest.raises(FittedStatisticsError, match="statistic 'std' is nan, not finite"):
        FittedStep(Standardize(FEATURE), {"mean": 1.0, "std": float("nan")})


def test_mode_keeps_the_dtype_and_breaks_ties_by_the_smallest_value() -> None:
    frame = pl.DataFrame({"n": [3, 1, 3, 1, None, 2]}, schema={"n": pl.Int64})
    fitted = FittedStep(Impute("n", ImputeStrategy.MODE), {"fill": pl.Series([3, 1, 3, 1, 2]).mode().sort().item(0)})
    assert fitted.values == {"fill": 1}
    out = frame.select(transformed_column("n", pl.Int64(), [fitted]))
    assert out.schema["n"] == pl.Int64 and out["n"].to_list() == [3, 1, 3, 1, 1, 2]
    clipped = frame.select(transformed_column("n", pl.Int64(), [FittedStep(ClipBounds("n", upper=2.0))]))
    assert clipped.schema["n"] == pl.Float64 and clipped["n"].to_list() == [2.0, 1.0, 2.0, 1.0, None, 2.0]


def test_only_the_offline_layer_and_its_asset_fit_statistics() -> None:
    """No online or serving module can fit (or import the fitting of) a statistic."""
    fitting = {"fit_statistics", "_fit_step"}
    allowed = {"offline/fitted_statistics.py", "orchestration/statistics_assets.py"}
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        names = {node.id for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Name)}
        names |= {alias.name for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.ImportFrom)
                  for alias in node.names}
        if names & fitting and relative not in allowed:
            offenders.append(relative)
    assert offenders == []
