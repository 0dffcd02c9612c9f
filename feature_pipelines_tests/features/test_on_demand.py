"""On-demand features: one definition, row-wise, with a declared null policy and clear errors.

The Redis-backed parity check (training frame vs online rows) is in
feature_pipelines_tests/online/test_retrieval.py; here the evaluation itself is pinned down.
"""

from __future__ import annotations

import math
import struct
from datetime import datetime, timedelta, timezone

import polars as pl
import pytest

from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.features.on_demand import (
    ON_DEMAND_FEATURES,
    OnDemandFeature,
    OnDemandFeatureError,
    apply_on_demand,
    check_row_wise,
    required_references,
    safe_ratio,
    validate_on_demand,
)
from feature_pipelines.features.spec import FeatureDefinitionError

RATIO = ON_DEMAND_FEATURES["route_dep_delay_ratio_24h_7d"]
HOUR = ON_DEMAND_FEATURES["scheduled_departure_hour_utc"]
T0 = datetime(2024, 3, 10, 6, 30, tzinfo=timezone.utc)  # the morning US clocks go forward


def _bits(values: list[float | None]) -> list[bytes | None]:
    return [None if v is None else struct.pack("<d", v) for v in values]


def training_like_frame() -> pl.DataFrame:
    """Every awkward input of the catalog's features, as a training frame would hold them."""
    num = [1.0, 3.0, None, 2.0, 0.0, -4.0, 1e308, 5.0, math.nan, 1.0, 0.0, math.inf]
    den = [2.0, -1.5, 1.0, None, 0.0, 0.0, 1e-308, -0.0, 1.0, math.nan, 7.0, 1.0]
    n = len(num)
    return pl.DataFrame(
        {
            "route_dep_delay_mean_24h": num,
            "route_dep_delay_mean_7d": den,
            "carrier_dep_delay_mean_24h": list(reversed(num)),
            "carrier_dep_delay_mean_7d": list(reversed(den)),
            "scheduled_departure": pl.Series(
                [T0 + timedelta(hours=5 * i) for i in range(n - 1)] + [None], dtype=pl.Datetime("us", "UTC")
            ),
        },
        schema_overrides={"route_dep_delay_mean_24h": pl.Float64, "route_dep_delay_mean_7d": pl.Float64},
    )


def test_ratio_policy_null_never_inf_or_nan() -> None:
    out = apply_on_demand(training_like_frame(), [RATIO])["route_dep_delay_ratio_24h_7d"].to_list()
    assert _bits(out) == _bits([0.5, -2.0, None, None, None, None, None, None, None, None, 0.0, None])
    assert out[10] == 0.0  # 0 / 7 is a real zero, not null


def test_apply_appends_with_declared_dtypes_after_the_frame() -> None:
    frame = training_like_frame()
    out = apply_on_demand(frame, list(ON_DEMAND_FEATURES.values()))
    assert out.columns == [*frame.columns, *ON_DEMAND_FEATURES]
    assert out.select(frame.columns).equals(frame)
    assert out.schema["scheduled_departure_hour_utc"] == pl.Int64
    assert out.schema["route_dep_delay_ratio_24h_7d"] == pl.Float64
    assert apply_on_demand(frame, []) is frame


def test_hour_is_taken_in_utc_whatever_the_zone_of_the_request_column() -> None:
    frame = training_like_frame().select("scheduled_departure")
    in_new_york = frame.with_columns(pl.col("scheduled_departure").dt.convert_time_zone("America/New_York")
                                     .dt.cast_time_unit("ns"))
    utc = apply_on_demand(frame, [HOUR])["scheduled_departure_hour_utc"]
    assert apply_on_demand(in_new_york, [HOUR])["scheduled_departure_hour_utc"].equals(utc)
    assert utc.to_list()[:3] == [6, 11, 16] and utc.to_list()[-1] is None


def test_every_catalog_feature_is_row_wise() -> None:
    """One row (the server's case) gives exactly the value the whole frame gives that row."""
    frame = training_like_frame()
    for feature in ON_DEMAND_FEATURES.values():
        check_row_wise(feature, frame)
    looks_across_rows = OnDemandFeature(
        "route_delay_vs_batch_mean", "float64",
        pl.col("route_dep_delay_mean_24h") - pl.col("route_dep_delay_mean_24h").mean(),
        inputs=("route_delay_stats:route_dep_delay_mean_24h",),
    )
    with pytest.raises(OnDemandFeatureError, match="is not row-wise"):
        check_row_wise(looks_across_rows, frame.head(3))


def test_input_and_request_errors() -> None:
    frame = training_like_frame()
    with pytest.raises(OnDemandFeatureError, match=r"needs input feature\(s\) \['route_dep_delay_mean_7d'\]"):
        apply_on_demand(frame.drop("route_dep_delay_mean_7d"), [RATIO])
    with pytest.raises(OnDemandFeatureError, match="needs request column 'scheduled_departure'"):
        apply_on_demand(frame.drop("scheduled_departure"), [HOUR])
    naive = frame.with_columns(pl.col("scheduled_departure").dt.replace_time_zone(None))
    with pytest.raises(OnDemandFeatureError, match="must be a timezone-aware datetime"):
        apply_on_demand(naive, [HOUR])
    with pytest.raises(OnDemandFeatureError, match="collide"):
        apply_on_demand(apply_on_demand(frame, [RATIO]), [RATIO])
    with pytest.raises(OnDemandFeatureError, match="requested twice"):
        apply_on_demand(frame, [RATIO, RATIO])
    lossy = OnDemandFeature("route_delay_int", "int64", pl.lit("x"), inputs=("route_delay_stats:route_dep_delay_mean_24h",))
    with pytest.raises(OnDemandFeatureError, match="failed to evaluate"):
        apply_on_demand(frame, [lossy])


def test_definition_errors() -> None:
    with pytest.raises(FeatureDefinitionError, match="dtype 'float32'"):
        OnDemandFeature("x_ratio", "float32", pl.lit(1.0), inputs=("a:b",))
    with pytest.raises(FeatureDefinitionError, match="not of the form 'view:feature'"):
        OnDemandFeature("x_ratio", "float64", pl.lit(1.0), inputs=("route_dep_delay_mean_24h",))
    with pytest.raises(FeatureDefinitionError, match="request_dtypes must declare exactly"):
        OnDemandFeature("x_hour", "int64", pl.lit(1), inputs=(), request_columns=("when",))
    with pytest.raises(FeatureDefinitionError, match="at least one input"):
        OnDemandFeature("x_const", "int64", pl.lit(1), inputs=())
    with pytest.raises(FeatureDefinitionError, match="declared twice"):
        validate_on_demand([RATIO, RATIO], FEATURE_VIEWS)
    shadow = OnDemandFeature("route_dep_delay_mean_24h", "float64", pl.lit(1.0),
                             inputs=("route_delay_stats:route_dep_delay_mean_7d",))
    with pytest.raises(FeatureDefinitionError, match="name of a stored feature"):
        validate_on_demand([shadow], FEATURE_VIEWS)
    dangling = OnDemandFeature("x_ratio", "float64", safe_ratio("a", "b"), inputs=("route_delay_stats:route_a_24h",))
    with pytest.raises(FeatureDefinitionError, match="not declared by the feature views"):
        validate_on_demand([dangling], FEATURE_VIEWS)


def test_catalog_names_and_docs() -> None:
    assert set(ON_DEMAND_FEATURES) >= {"route_dep_delay_ratio_24h_7d", "scheduled_departure_hour_utc"}
    for feature in ON_DEMAND_FEATURES.values():
        assert feature.description
        assert feature.name == feature.name.lower() and " " not in feature.name


def test_required_references_appends_unrequested_inputs_once() -> None:
    requested = ["route_delay_stats:route_dep_delay_mean_7d", "origin_weather:origin_temp_latest"]
    assert required_references(requested, [RATIO, HOUR, RATIO]) == [
        *requested, "route_delay_stats:route_dep_delay_mean_24h",
    ]
