"""Shadow comparison on real flights: identical definitions agree; a changed null policy is reported."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timezone

import polars as pl
import pytest

from feature_pipelines.features.candidates import CANDIDATE_VIEWS, validate_candidates
from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.features.spec import FeatureDefinitionError
from feature_pipelines.monitoring.shadow import shadow_compare
from feature_pipelines.sources import nycflights

START = datetime(2013, 2, 8, tzinfo=timezone.utc)  # the blizzard: many cancellations
END = datetime(2013, 2, 11, tzinfo=timezone.utc)
ROUTES = FEATURE_VIEWS["route_delay_stats"]


@pytest.fixture(scope="module")
def events() -> pl.DataFrame:
    return nycflights.flights().filter(pl.col("dep_known_at").is_between(datetime(2013, 1, 31, tzinfo=timezone.utc), END))


def test_the_same_definition_shadows_itself_without_discrepancies(events: pl.DataFrame) -> None:
    report = shadow_compare(events, ROUTES, ROUTES, start=START, end=END)
    assert report.identical and report.rows_current == report.rows_candidate > 0
    assert {f.feature for f in report.features} == set(ROUTES.feature_names)


def test_propagating_nulls_candidate_differs_only_where_a_flight_was_cancelled(events: pl.DataFrame) -> None:
    report = shadow_compare(events, ROUTES, CANDIDATE_VIEWS["route_delay_stats"], start=START, end=END)
    changed = {f.feature: f for f in report.features if f.discrepancies}
    assert set(changed) == {"route_dep_delay_mean_24h"}
    mean = changed["route_dep_delay_mean_24h"]
    assert mean.discrepancies == mean.null_discrepancies > 0  # every difference: a value became null
    assert all(example["candidate"] is None and example["current"] is not None for example in mean.examples)
    # Brute force: routes with a cancelled flight and a departed one in [t - 24h, t).
    example = mean.examples[0]
    t = datetime.fromisoformat(example["event_timestamp"])
    route = pl.DataFrame([json.loads(example["entity"])])
    window = events.join(route, on=["origin", "dest"]).filter(
        (pl.col("dep_known_at") >= t - ROUTES.feature("route_dep_delay_mean_24h").window_timedelta) & (pl.col("dep_known_at") < t)
    )
    assert window["dep_delay"].null_count() > 0 and window["dep_delay"].drop_nulls().mean() == pytest.approx(example["current"])
    assert not report.identical and "route_dep_delay_mean_24h" in report.summary()


def test_a_candidate_with_other_keys_or_name_is_refused(events: pl.DataFrame) -> None:
    with pytest.raises(FeatureDefinitionError, match="joins on"):
        shadow_compare(events, ROUTES, replace(FEATURE_VIEWS["carrier_delay_stats"], name="route_delay_stats"), start=START, end=END)
    with pytest.raises(FeatureDefinitionError, match="must keep the view's name"):
        validate_candidates({"route_delay_stats": replace(ROUTES, name="route_delay_stats_v2")}, FEATURE_VIEWS)
    with pytest.raises(FeatureDefinitionError, match="no such feature view"):
        validate_candidates({"nope": ROUTES}, FEATURE_VIEWS)
