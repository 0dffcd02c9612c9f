"""Feature views over flights: route, carrier and aircraft delay and utilisation statistics.

Every delay feature is stamped by `dep_known_at`, the instant the departure outcome became known
(the actual departure, or the scheduled departure of a cancelled flight), never by the schedule.
The raw flights table is partitioned by that same instant, so a snapshot at t reads exactly the
raw partitions of [t - window, t): no lateness allowance, and an early departure (up to 43 minutes
before its schedule) is not missed.
"""

from datetime import timedelta

from feature_pipelines.features.entities import aircraft, carrier, route
from feature_pipelines.features.service_levels import DAILY_SNAPSHOTS, HOURLY_OPERATIONS
from feature_pipelines.features.spec import (
    Aggregation,
    Entity,
    Feature,
    FeatureView,
    Lifecycle,
    SourceSpec,
    StreamingSpec,
)

FLIGHTS_SOURCE = SourceSpec(asset="raw_flights", known_at_column="dep_known_at")
MAX_DELAY_MINUTES = 24 * 60


def _delay_stats(entity: Entity, window: str, *, delay_null_share: float, cancel_null_share: float) -> tuple[Feature, ...]:
    """Count, mean and p90 of departure delay and the cancellation rate over one window.

    A row exists when the entity had a flight in the view's widest window, so a shorter window
    can be empty (null mean, null rate) or hold only cancellations (null delay). The allowed null
    shares are those measured over every day of 2013 plus a margin; more than that is a defect.
    """
    name = entity.name
    return (
        Feature(f"{name}_flights_count_{window}", "int64", Aggregation.COUNT, window, min_value=0,
                description=f"Departures and cancellations known in the last {window}."),
        Feature(f"{name}_dep_delay_mean_{window}", "float64", Aggregation.MEAN, window, "dep_delay",
                min_value=-120, max_value=MAX_DELAY_MINUTES, max_null_fraction=delay_null_share,
                description=f"Mean departure delay (minutes) over {window}; cancelled flights excluded."),
        Feature(f"{name}_dep_delay_p90_{window}", "float64", Aggregation.P90, window, "dep_delay",
                min_value=-120, max_value=MAX_DELAY_MINUTES, max_null_fraction=delay_null_share,
                description=f"90th percentile departure delay (minutes) over {window}."),
        Feature(f"{name}_cancel_rate_{window}", "float64", Aggregation.RATE, window, "cancelled",
                min_value=0, max_value=1, max_null_fraction=cancel_null_share,
                description=f"Share of flights cancelled over {window}."),
    )


route_delay_stats = FeatureView(
    name="route_delay_stats",
    entity=route,
    source=FLIGHTS_SOURCE,
    # 2013 worst days: 24h delay nulls 38%, cancel-rate nulls 22%; 7d delay nulls 2.7%.
    features=_delay_stats(route, "24h", delay_null_share=0.5, cancel_null_share=0.3)
    + _delay_stats(route, "7d", delay_null_share=0.05, cancel_null_share=0.0),
    owner="pricing-ml@feature-pipelines.example",
    description="Departure delay and cancellation statistics per origin-destination pair, daily.",
    lifecycle=Lifecycle.PRODUCTION,
    tags={"domain": "flights"},
    **DAILY_SNAPSHOTS,
)

carrier_delay_stats = FeatureView(
    name="carrier_delay_stats",
    entity=carrier,
    source=FLIGHTS_SOURCE,
    # 2013 worst days: 24h delay nulls 17%, cancel-rate nulls 15%; 7d none.
    features=_delay_stats(carrier, "24h", delay_null_share=0.25, cancel_null_share=0.2)
    + _delay_stats(carrier, "7d", delay_null_share=0.02, cancel_null_share=0.0),
    description="Departure delay and cancellation statistics per airline, snapshotted every hour "
    "(daily partitions, refreshed hourly).",
    tags={"domain": "flights"},
    **HOURLY_OPERATIONS,
)

aircraft_utilisation = FeatureView(
    name="aircraft_utilisation",
    entity=aircraft,
    source=FLIGHTS_SOURCE,
    features=(
        Feature("aircraft_flights_count_24h", "int64", Aggregation.COUNT, "24h", min_value=0,
                max_value=40, description="Flights from New York by this aircraft in 24h."),
        Feature("aircraft_distance_sum_24h", "int64", Aggregation.SUM, "24h", "distance",
                min_value=0, max_value=40_000, description="Miles flown from New York in 24h."),
        Feature("aircraft_dep_delay_mean_24h", "float64", Aggregation.MEAN, "24h", "dep_delay",
                min_value=-120, max_value=MAX_DELAY_MINUTES, max_null_fraction=0.6,
                description="Mean departure delay of this aircraft over 24h (2013 worst day: 48% "
                "null, the February blizzard, when most of its flights were cancelled)."),
    ),
    owner="fleet-ml@feature-pipelines.example",
    description="How hard each aircraft was worked in the last day, snapshotted daily; its features also "
    "stream (exact tiles in Redis from `feature-pipelines stream`), while the server still serves the snapshots.",
    lifecycle=Lifecycle.EXPERIMENTAL,
    tags={"domain": "flights"},
    # Every feature merges exactly from tiles (count and integer sums), so the view streams with
    # the same values as its batch snapshots. Departures come in known-at order; 15 minutes of
    # disorder is absorbed, later ones are dead-lettered and counted.
    streaming=StreamingSpec(freshness_seconds=1.0, max_lateness=timedelta(minutes=15)),
    **DAILY_SNAPSHOTS,
)
