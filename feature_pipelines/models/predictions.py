"""The prediction log: every score the feature server answered, with its request, as Delta rows.

Table `_serving/predictions`, one row per scored entity row (the feature server writes it off the
request path, `serving/predict.py`; outcome monitors and the blast-radius walk read it):

    request_id               String             the request's id, the same as in `_serving/feature_log`
                                                (and the X-Request-ID header): a prediction's served
                                                values are that request's log rows
    entity_index             Int64              the entity row's position in the request
    request_time             Datetime(us, UTC)  the instant the features were read at
    feature_service          String             the service whose vector was scored
    feature_service_version  String             its version (the definition's fingerprint)
    model_name, model_version                   the registered model that scored it (`_models/registry`)
    score                    Float64            P(label) by that model
    entity_key               String             the entity columns of the row, a JSON object
    outcome_key              String             the caller's identifiers of the predicted event (a JSON
                                                object, e.g. {"flight_number": 1545, "scheduled_departure_at":
                                                "..."}), by which its outcome is joined once known; null
                                                when the caller gave none
    features_json            String             the vector the model scored, after the service's
                                                transformations, a JSON object (the platform's JSON rule:
                                                NaN as "NaN"): what concept-drift monitors bin on
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import polars as pl

from feature_pipelines.json_values import json_text

PREDICTIONS_SCHEMA: dict[str, pl.DataType] = {
    "request_id": pl.String(),
    "entity_index": pl.Int64(),
    "request_time": pl.Datetime("us", "UTC"),
    "feature_service": pl.String(),
    "feature_service_version": pl.String(),
    "model_name": pl.String(),
    "model_version": pl.Int64(),
    "score": pl.Float64(),
    "entity_key": pl.String(),
    "outcome_key": pl.String(),
    "features_json": pl.String(),
}


@dataclass(frozen=True)
class PredictionRecord:
    """One request's predictions, as the server holds them (turned into rows by the log's writer thread)."""

    request_id: str
    request_time: datetime
    feature_service: str
    feature_service_version: str
    model_name: str
    model_version: int
    scores: Sequence[float]
    entities: Mapping[str, Sequence[Any]]
    vector: Mapping[str, Sequence[Any]]
    outcome_keys: Mapping[str, Sequence[Any]] | None = None

    @property
    def row_count(self) -> int:
        return len(self.scores)

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for index, score in enumerate(self.scores):
            out.append({
                "request_id": self.request_id, "entity_index": index, "request_time": self.request_time,
                "feature_service": self.feature_service, "feature_service_version": self.feature_service_version,
                "model_name": self.model_name, "model_version": self.model_version, "score": score,
                "entity_key": json_text({name: values[index] for name, values in self.entities.items()}),
                "outcome_key": None if self.outcome_keys is None
                else json_text({name: values[index] for name, values in self.outcome_keys.items()}),
                "features_json": json_text({name: values[index] for name, values in self.vector.items()}),
            })
        return out


def predictions_frame(records: Sequence[PredictionRecord]) -> pl.DataFrame:
    """The table's rows of some records, in the table's schema."""
    return pl.DataFrame([row for record in records for row in record.rows()], schema=PREDICTIONS_SCHEMA)


def decode_vectors(features_json: pl.Series, schema: Mapping[str, pl.DataType]) -> pl.DataFrame:
    """The scored vectors back as typed columns (`schema`: the service's), non-finite floats restored."""
    def value(raw: Any, dtype: pl.DataType) -> Any:
        if isinstance(raw, str) and dtype == pl.Float64:
            return float(raw)  # "NaN", "Infinity", "-Infinity" (json_values' tokens)
        return raw

    decoded = [json.loads(text) for text in features_json.to_list()]
    return pl.DataFrame(
        {name: [value(row.get(name), dtype) for row in decoded] for name, dtype in schema.items()},
        schema=dict(schema),
    )

