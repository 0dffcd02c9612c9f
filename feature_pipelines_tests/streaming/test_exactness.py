"""Why the stream's floats equal the batch's to the bit: exact sums, one kernel, and the p90 refusal."""

from __future__ import annotations

import math
import random
from dataclasses import replace
from datetime import timedelta
from fractions import Fraction

import polars as pl
import pytest

from feature_pipelines.compute.exact_sum import exact_sum, from_limbs, to_fixed, to_limbs
from feature_pipelines.compute.snapshots import features_at, snapshot_features
from feature_pipelines.compute.snapshots_reference import snapshot_features_reference
from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.features.flights import aircraft_utilisation, carrier_delay_stats
from feature_pipelines.features.spec import FeatureDefinitionError, StreamingSpec
from feature_pipelines.sources import nycflights
from feature_pipelines.streaming.tiles import TileAggregate, TilePlan, finish
from feature_pipelines_tests.conftest import SMALL_END, SMALL_START
from feature_pipelines_tests.streaming.conftest import DAY, REPLAY_DAY, STREAMING, WEATHER_STREAM, assert_identical


def _floats(rng: random.Random, n: int) -> list[float]:
    pick = [lambda: rng.uniform(-1e3, 1e3), lambda: round(rng.uniform(0, 100), 2), lambda: 0.1,
            lambda: rng.uniform(-1, 1) * 10.0 ** rng.randint(-300, 300), lambda: 1e16, lambda: -1e16, lambda: 5e-324]
    return [rng.choice(pick)() for _ in range(n)]


def test_exact_sum_is_correctly_rounded_and_its_limbs_merge_in_any_grouping() -> None:
    rng = random.Random(3)
    for _ in range(2000):
        values = _floats(rng, rng.randint(1, 25))
        expected = float(sum(Fraction(v) for v in values))
        assert exact_sum(values) == expected == math.fsum(values)
        cut = rng.randint(0, len(values))
        limbs: dict[int, int] = {}
        for part in (values[:cut], values[cut:]):  # two tiles, merged limb by limb
            for v in part:
                for k, d in to_limbs(to_fixed(v)).items():
                    limbs[k] = limbs.get(k, 0) + d
        assert from_limbs(limbs) == sum(to_fixed(v) for v in values)


def test_tile_merge_is_independent_of_how_events_are_cut() -> None:
    schema = dict(nycflights.weather().schema)
    plan = TilePlan.of(WEATHER_STREAM, schema)
    rng = random.Random(5)
    events = [({"temp": v, "precip": rng.choice([None, 0.01 * rng.randint(0, 30)]), "dewp": v / 3, "humid": 50.5,
                "wind_gust": None, "wind_speed": abs(v), "visib": 10.0}, (i // 3, 0, i)) for i, v in enumerate(_floats(rng, 60))
              if math.isfinite(v) and abs(v) < 1e300]
    whole = TileAggregate()
    for values, order in events:
        whole.add(plan, values, order)
    parts = [TileAggregate() for _ in range(4)]
    for i, (values, order) in enumerate(events):
        parts[i % 4].add(plan, values, order)
    merged = TileAggregate()
    for part in reversed(parts):
        merged.merge(part)
    for feature in WEATHER_STREAM.features:
        assert repr(finish(feature, merged)) == repr(finish(feature, whole)), feature.name


def test_streaming_float_sums_are_exact_in_both_engines_and_differ_from_the_sorted_sum() -> None:
    weather = nycflights.weather().filter(pl.col("observed_at").is_between(SMALL_START, SMALL_END, closed="left"))
    start, end = SMALL_START + 2 * DAY, SMALL_END
    fast = snapshot_features(weather, WEATHER_STREAM, start=start, end=end)
    assert_identical(fast, snapshot_features_reference(weather, WEATHER_STREAM, start=start, end=end))
    sorted_sum = snapshot_features(weather, replace(WEATHER_STREAM, streaming=None), start=start, end=end)
    differ = (fast["origin_temp_mean_24h"] != sorted_sum["origin_temp_mean_24h"]).sum()
    assert 0 < differ < fast.height  # the last bits: why a streaming view needs the sum that merges


def test_opting_aircraft_utilisation_into_streaming_changed_none_of_its_values() -> None:
    flights = nycflights.flights().filter(pl.col("dep_known_at").is_between(SMALL_START, SMALL_END, closed="left"))
    start, end = SMALL_START + DAY, SMALL_END
    streaming = snapshot_features(flights, aircraft_utilisation, start=start, end=end)
    assert_identical(streaming, snapshot_features(flights, replace(aircraft_utilisation, streaming=None), start=start, end=end))


def test_features_at_equals_snapshots_at_every_snapshot_instant_for_batch_views_too() -> None:
    flights = nycflights.flights().filter(pl.col("dep_known_at").is_between(REPLAY_DAY - 7 * DAY, REPLAY_DAY + DAY, closed="left"))
    batch = snapshot_features(flights, carrier_delay_stats, start=REPLAY_DAY, end=REPLAY_DAY + DAY)
    rows = batch.select("carrier", "event_timestamp")
    assert_identical(features_at(flights, carrier_delay_stats, rows), batch)


def test_a_view_with_p90_is_refused_for_streaming_with_the_reason() -> None:
    with pytest.raises(FeatureDefinitionError, match=r"carrier_dep_delay_p90_24h.*cannot be streamed: a quantile has no exact mergeable"):
        replace(carrier_delay_stats, streaming=STREAMING)


def test_a_tile_that_does_not_divide_the_windows_is_refused() -> None:
    with pytest.raises(FeatureDefinitionError, match="not a whole number of streaming tiles"):
        replace(aircraft_utilisation, streaming=StreamingSpec(1.0, timedelta(0), tile=timedelta(hours=5)))


def test_the_catalog_streams_only_views_whose_features_all_merge() -> None:
    assert [name for name, view in FEATURE_VIEWS.items() if view.streaming] == ["aircraft_utilisation"]
