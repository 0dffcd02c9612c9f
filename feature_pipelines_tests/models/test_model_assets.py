"""The model in the loop in real Dagster runs on a small real lake (2013-01-01..05): the model asset
trains on the training set through its feature service and registers a version (artefact file +
Delta row); predictions scored by that version and logged like the server logs them are joined to
their flights' arrivals by the outcome asset, never before the arrival is known."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest
from dagster import AssetKey, materialize

from feature_pipelines.models.catalog import FLIGHT_DELAY_MODEL
from feature_pipelines.models.predictions import PredictionRecord, predictions_frame
from feature_pipelines.models.registry import (
    REGISTRY_TABLE,
    ModelArtefactError,
    latest_model,
    load_estimator,
    registered_models,
)
from feature_pipelines.models.training import score
from feature_pipelines.names import PREDICTIONS_TABLE
from feature_pipelines.orchestration.clock import clock_tags
from feature_pipelines.orchestration.model_assets import LEAKAGE_GAP_CHECK
from feature_pipelines.orchestration.outcome_assets import OUTCOMES_CHECK, outcome_asset_name
from feature_pipelines.training.frames import training_frame
from feature_pipelines.training.spec import PREDICTION_TIMESTAMP
from feature_pipelines_tests.conftest import Pipeline
from feature_pipelines_tests.training.test_feature_services import _build_training_set

SPEC = FLIGHT_DELAY_MODEL
SERVICE = SPEC.service
DAY = "2013-01-03"


def _metadata(result: object) -> dict:
    [event] = result.get_asset_materialization_events()  # type: ignore[attr-defined]
    return {key: getattr(value, "value", value) for key, value in event.materialization.metadata.items()}


def _log_predictions(pipeline: Pipeline) -> int:
    """The day's training rows as requests made at their prediction time, scored by the latest model
    and written as the server's prediction log writes them (its frame builder)."""
    model = latest_model(pipeline.store, SERVICE)
    estimator = load_estimator(pipeline.store, model)
    rows = training_frame(pipeline.store, SPEC.training, service=SERVICE).frame.filter(
        pl.col("scheduled_departure_at").dt.date() == datetime.fromisoformat(DAY).date())
    records = []
    for index, row in enumerate(rows.iter_slices(50)):
        vector = row.select(SERVICE.column_names)
        records.append(PredictionRecord(
            request_id=f"r{index}", request_time=row[PREDICTION_TIMESTAMP].min(), feature_service=SERVICE.name,
            feature_service_version=SERVICE.version, model_name=model.name, model_version=model.version,
            scores=score(estimator, vector, SERVICE).tolist(),
            entities=row.select("origin", "dest", "carrier", "tailnum").to_dict(as_series=False),
            vector=vector.to_dict(as_series=False),
            outcome_keys={"flight_number": row["flight_number"].to_list(),
                          "scheduled_departure_at": [t.isoformat() for t in row["scheduled_departure_at"]]},
        ))
    frame = predictions_frame(records)
    pipeline.store.append(PREDICTIONS_TABLE, frame)
    return frame.filter(pl.col("request_time").dt.date() == datetime.fromisoformat(DAY).date()).height


def test_model_is_trained_registered_and_its_outcomes_judged(pipeline: Pipeline) -> None:
    _build_training_set(pipeline)  # raw 2013-01-01..05, features, training days 01-02..03
    model_asset = pipeline.defs.resolve_assets_def(SPEC.name)
    result = materialize([model_asset], instance=pipeline.instance)
    assert result.success
    metadata = _metadata(result)
    [check] = result.get_asset_check_evaluations()
    assert (check.check_name, check.passed) == (LEAKAGE_GAP_CHECK, True), check.description
    assert metadata["registered"] is True and metadata["model_version"] == 1
    assert (metadata["feature_service"], metadata["feature_service_version"]) == (SERVICE.name, SERVICE.version)
    assert metadata["training_set_version"] == pipeline.store.version(SPEC.training.name)
    assert set(metadata["feature_table_versions"]) >= {"route_delay_stats", "origin_weather"}
    assert 0.5 < metadata["holdout_auc"] <= 1.0 and metadata["holdout_log_loss"] > 0
    assert abs(metadata["random_split_auc"] - metadata["holdout_auc"] - metadata["leakage_gap"]) < 1e-9
    assert "route_dep_delay_mean_24h" in metadata["error_by_feature_bin"]

    registered = latest_model(pipeline.store, SERVICE)
    assert (registered.version, registered.card.feature_columns) == (1, tuple(SERVICE.column_names))
    assert registered.card.split_at > pipeline.store.read(SPEC.training.name)[PREDICTION_TIMESTAMP].min()
    assert len(registered.reference["bins"]) == len(SERVICE.column_names)
    assert materialize([model_asset], instance=pipeline.instance).success  # a second fit: version 2
    assert registered_models(pipeline.store, SPEC.name)["model_version"].to_list() == [1, 2]
    assert pipeline.store.read(REGISTRY_TABLE).height == 2

    logged = _log_predictions(pipeline)
    assert logged > 300
    outcomes = pipeline.defs.resolve_assets_def(outcome_asset_name(SPEC))
    # At 18:00 on the day, the flights of its evening have not arrived: their outcomes wait.
    evening = materialize([outcomes], instance=pipeline.instance, partition_key=DAY,
                          tags=clock_tags(datetime(2013, 1, 3, 18, tzinfo=UTC)))
    early = _metadata(evening)
    assert early["predictions"] == logged and early["pending"] > 0 and early["labelled"] < logged - early["pending"] + 1
    later = materialize([outcomes], instance=pipeline.instance, partition_key=DAY,
                        tags=clock_tags(datetime(2013, 1, 6, tzinfo=UTC)))
    known = _metadata(later)
    assert known["pending"] == 0 and known["labelled"] > early["labelled"]
    [figures] = known["figures"]
    assert figures["model_version"] == 2 and figures["day"]["rows"] == known["labelled"]
    assert 0.5 < figures["day"]["auc"] <= 1.0
    assert {c["feature"] for c in figures["concept"]} == set(SERVICE.column_names)
    assert "data:image/png;base64," in known["report"]
    [evaluation] = later.get_asset_check_evaluations()
    assert evaluation.check_name == OUTCOMES_CHECK and evaluation.asset_key == AssetKey(outcome_asset_name(SPEC))
    assert evaluation.passed, evaluation.description  # the model's own world: nothing drifted

    # A changed artefact is refused, not unpickled.
    artefact = f"{pipeline.settings.lake_root}/{latest_model(pipeline.store, SERVICE).artefact_path}"
    with open(artefact, "ab") as handle:
        handle.write(b"tampered")
    with pytest.raises(ModelArtefactError, match="SHA-256"):
        load_estimator(pipeline.store, latest_model(pipeline.store, SERVICE))
