"""Declared training sets: which label, how long before the event it is predicted, which feature service."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from feature_pipelines.features.on_demand import ON_DEMAND_FEATURES, required_references
from feature_pipelines.features.references import parse_reference
from feature_pipelines.features.services import FEATURE_SERVICES, FeatureService

if TYPE_CHECKING:
    from feature_pipelines.features.spec import FeatureView

PREDICTION_TIMESTAMP = "prediction_timestamp"
# Each training row's provenance: the version of the feature service that built it. A service change
# adds columns to the table (old rows read null there); readers refuse rows of another version.
SERVICE_VERSION_COLUMN = "feature_service_version"
LABELS_TABLE = "flight_delay_labels"  # the label rows every training set of this catalog joins


@dataclass(frozen=True)
class TrainingSetSpec:
    """A model's training data: label rows stamped `lead_time` before the event, joined
    point-in-time to the vector of its feature `service` as of that stamp, never as of the event.

    The table holds the service's raw vector (`raw_service_schema`): the input its statistics are
    fitted on. The model's frame applies the service's fitted transformations on read
    (`training/frames.py`)."""

    name: str
    label: str
    lead_time: timedelta
    service: FeatureService
    description: str = ""

    @property
    def features(self) -> tuple[str, ...]:
        """The service's stored references ("view:feature"); its on-demand features are computed from
        stored inputs, see `read_references`."""
        return self.service.stored_references

    @property
    def read_references(self) -> list[str]:
        """Every stored reference the set reads: the service's, then its on-demand inputs."""
        computed = [ON_DEMAND_FEATURES[name] for name in self.service.on_demand_names]
        return required_references(self.features, computed)

    @property
    def view_names(self) -> list[str]:
        return sorted({parse_reference(reference).view for reference in self.read_references})

    @property
    def feature_names(self) -> list[str]:
        """The stored feature columns of the training set, in declared order."""
        return [parse_reference(reference).feature for reference in self.features]

    @property
    def column_names(self) -> list[str]:
        """The service's vector columns of the training set (on-demand included), in declared order."""
        return self.service.column_names

    def feature_reach(self, view: FeatureView) -> timedelta:
        """How far before its day a row reads `view`: predicted up to `lead_time` before the day,
        it takes the view's snapshots within the view's TTL of that."""
        return self.lead_time + view.ttl


FLIGHT_DELAY_TRAINING_SET = TrainingSetSpec(
    name="flight_delay_training_set",
    label="arrived_late_15m",
    lead_time=timedelta(hours=2),
    service=FEATURE_SERVICES["flight_delay_v1"],
    description="Will a flight arrive more than 15 minutes late? Predicted 2 hours before its "
    "scheduled departure from what was known then.",
)
