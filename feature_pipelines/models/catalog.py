"""This project's models: which feature service and training set each is trained on."""

from __future__ import annotations

from feature_pipelines.features.services import FEATURE_SERVICES
from feature_pipelines.models.training import ModelSpec
from feature_pipelines.training.spec import FLIGHT_DELAY_TRAINING_SET

FLIGHT_DELAY_MODEL = ModelSpec(
    name="flight_delay_model",
    training=FLIGHT_DELAY_TRAINING_SET,
    service=FEATURE_SERVICES["flight_delay_v1"],  # raw vector: a tree reads nulls itself and needs no scaling
)

MODELS: dict[str, ModelSpec] = {FLIGHT_DELAY_MODEL.name: FLIGHT_DELAY_MODEL}
