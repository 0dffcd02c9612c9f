"""Declared training sets: which label, how long before the event it is predicted, which features."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from feature_pipelines.features.references import parse_reference

if TYPE_CHECKING:
    from feature_pipelines.features.spec import FeatureView

PREDICTION_TIMESTAMP = "prediction_timestamp"
LABELS_TABLE = "flight_delay_labels"  # the label rows every training set of this catalog joins


@dataclass(frozen=True)
class TrainingSetSpec:
    """A model's training data: label rows stamped `lead_time` before the event, joined
    point-in-time to `features` ("view:feature") as of that stamp, never as of the event."""

    name: str
    label: str
    lead_time: timedelta
    features: tuple[str, ...]
    description: str = ""

    @property
    def view_names(self) -> list[str]:
        return sorted({parse_reference(reference).view for reference in self.features})

    @property
    def feature_names(self) -> list[str]:
        """The feature columns of the training set, in declared order."""
        return [parse_reference(reference).feature for reference in self.features]

    def feature_reach(self, view: FeatureView) -> timedelta:
        """How far before its day a row reads `view`: predicted up to `lead_time` before the day,
        it takes the view's snapshots within the view's TTL of that."""
        return self.lead_time + view.ttl


FLIGHT_DELAY_TRAINING_SET = TrainingSetSpec(
    name="flight_delay_training_set",
    label="arrived_late_15m",
    lead_time=timedelta(hours=2),
    features=(
        "route_delay_stats:route_dep_delay_mean_24h",
        "route_delay_stats:route_dep_delay_p90_7d",
        "route_delay_stats:route_cancel_rate_7d",
        "route_delay_stats:route_flights_count_7d",
        "carrier_delay_stats:carrier_dep_delay_mean_24h",
        "carrier_delay_stats:carrier_cancel_rate_24h",
        "origin_weather:origin_visib_latest",
        "origin_weather:origin_wind_speed_latest",
        "origin_weather:origin_precip_sum_6h",
        "aircraft_utilisation:aircraft_flights_count_24h",
    ),
    description="Will a flight arrive more than 15 minutes late? Predicted 2 hours before its "
    "scheduled departure from what was known then.",
)
