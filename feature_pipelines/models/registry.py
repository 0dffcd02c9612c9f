"""The model registry: each trained model a plain artefact file under the lake, and a metadata row in Delta.

    <lake>/_models/artefacts/<model>/<sha256>.joblib     the fitted estimator (joblib), content-addressed
    <lake>/_models/registry                              one row per version (Delta, append-only)

A version is registered in two steps, file first: the file is written under its content hash,
then the row that names it is appended. A crash between them leaves an unreferenced file, never
a row naming a missing one. Loading checks the file's SHA-256 against the row before unpickling,
so a changed or truncated file is refused, not loaded.

Why not MLflow: its model format and registry would bring a tracking store (a database or a
server) and a large dependency to keep what this lake already keeps: versioned rows with time
travel (Delta), lineage (the training set's Delta version is in the row and in Dagster's
metadata), and a file. One estimator type, served in-process by our own server, needs no flavour
system. A row holds everything an MLflow model version would (name, version, metrics, params,
artefact URI), so an export stays possible.

The artefact is a pickle: load only from a lake you trust (the same trust as its Delta tables).
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import joblib
import polars as pl
from pyarrow import fs as pafs
from sklearn.ensemble import HistGradientBoostingClassifier

from feature_pipelines.features.services import FeatureService
from feature_pipelines.models.training import ModelCard, TrainedModel
from feature_pipelines.names import MODEL_REGISTRY_TABLE
from feature_pipelines.offline.delta_store import DeltaStore, TableMissingError
from feature_pipelines.timeutil import require_utc

REGISTRY_TABLE = MODEL_REGISTRY_TABLE
ARTEFACT_ROOT = "_models/artefacts"

_SCHEMA = {
    "model_name": pl.String(),
    "model_version": pl.Int64(),
    "feature_service": pl.String(),
    "feature_service_version": pl.String(),
    "training_set": pl.String(),
    "training_set_version": pl.Int64(),
    "registered_at": pl.Datetime("us", "UTC"),
    "artefact_path": pl.String(),
    "artefact_sha256": pl.String(),
    "card_json": pl.String(),
    "reference_json": pl.String(),
}


class ModelNotFoundError(LookupError):
    """No registered model for a service (or that version of it); the message says what to materialize."""


class ModelArtefactError(RuntimeError):
    """An artefact file that is missing or whose bytes are not the ones registered."""


class ModelVersionConflictError(RuntimeError):
    """Two registrations numbered themselves alike; neither may be served until one is re-registered."""


@dataclass(frozen=True)
class RegisteredModel:
    """One registry row: a model version, its card and its holdout reference (error by feature bin)."""

    name: str
    version: int
    service: str
    service_version: str
    artefact_path: str
    artefact_sha256: str
    registered_at: datetime
    card: ModelCard
    reference: dict[str, Any]


def _filesystem(store: DeltaStore) -> tuple[pafs.FileSystem, str]:
    """The lake's file system and root path, with the lake's own storage options for S3."""
    root = store.root.rstrip("/")
    if "://" not in root:
        return pafs.LocalFileSystem(), root
    if root.startswith("s3://"):
        options = {key.upper(): value for key, value in (store.storage_options or {}).items()}
        endpoint = options.get("AWS_ENDPOINT_URL")
        scheme = endpoint.split("://")[0] if endpoint and "://" in endpoint else "https"
        return pafs.S3FileSystem(
            access_key=options.get("AWS_ACCESS_KEY_ID"), secret_key=options.get("AWS_SECRET_ACCESS_KEY"),
            session_token=options.get("AWS_SESSION_TOKEN"), region=options.get("AWS_REGION"),
            endpoint_override=endpoint.split("://")[-1] if endpoint else None, scheme=scheme,
        ), root.removeprefix("s3://")
    filesystem, path = pafs.FileSystem.from_uri(root)
    return filesystem, path


def write_artefact(store: DeltaStore, model_name: str, data: bytes) -> tuple[str, str]:
    """Write the bytes under their SHA-256; (path relative to the lake root, digest)."""
    digest = hashlib.sha256(data).hexdigest()
    relative = f"{ARTEFACT_ROOT}/{model_name}/{digest}.joblib"
    filesystem, root = _filesystem(store)
    filesystem.create_dir(f"{root}/{ARTEFACT_ROOT}/{model_name}", recursive=True)
    with filesystem.open_output_stream(f"{root}/{relative}") as out:
        out.write(data)
    return relative, digest


def registered_models(store: DeltaStore, model_name: str | None = None) -> pl.DataFrame:
    """Every registry row (of one model, when named), oldest version first; empty before the first."""
    try:
        rows = store.read(REGISTRY_TABLE)
    except TableMissingError:
        return pl.DataFrame(schema=_SCHEMA)
    if model_name is not None:
        rows = rows.filter(pl.col("model_name") == model_name)
    return rows.sort("model_name", "model_version")


def register_model(
    store: DeltaStore, trained: TrainedModel, *, reference: dict[str, Any], registered_at: datetime
) -> RegisteredModel:
    """Write the estimator's artefact and append its row as the model's next version.

    Raises:
        ModelVersionConflictError: another registration took the same version number meanwhile.
    """
    buffer = io.BytesIO()
    joblib.dump(trained.estimator, buffer)
    card = trained.card
    path, digest = write_artefact(store, card.name, buffer.getvalue())
    existing = registered_models(store, card.name)
    version = int(existing["model_version"].max() or 0) + 1
    row = pl.DataFrame([{
        "model_name": card.name, "model_version": version, "feature_service": card.service,
        "feature_service_version": card.service_version, "training_set": card.training_set,
        "training_set_version": card.training_set_version, "registered_at": require_utc(registered_at, "registered_at"),
        "artefact_path": path, "artefact_sha256": digest, "card_json": json.dumps(card.as_record(), sort_keys=True),
        "reference_json": json.dumps(reference, sort_keys=True),
    }], schema=_SCHEMA)
    store.append(REGISTRY_TABLE, row)
    same = registered_models(store, card.name).filter(pl.col("model_version") == version)
    if same.height > 1:
        raise ModelVersionConflictError(
            f"model {card.name!r} version {version} was registered {same.height} times at once "
            f"(artefacts {same['artefact_sha256'].to_list()}); materialize the model again"
        )
    return _registered(row.row(0, named=True))


def _registered(row: dict[str, Any]) -> RegisteredModel:
    return RegisteredModel(
        name=row["model_name"], version=row["model_version"], service=row["feature_service"],
        service_version=row["feature_service_version"], artefact_path=row["artefact_path"],
        artefact_sha256=row["artefact_sha256"], registered_at=row["registered_at"],
        card=ModelCard.from_record(json.loads(row["card_json"])), reference=json.loads(row["reference_json"]),
    )


def latest_model(store: DeltaStore, service: FeatureService) -> RegisteredModel:
    """The newest model registered for `service` at its current version (a model of another version
    of the service was fitted on another vector and never scores this one).

    Raises:
        ModelNotFoundError: none registered for this service version; names the versions that exist.
    """
    rows = registered_models(store).filter(pl.col("feature_service") == service.name)
    current = rows.filter(pl.col("feature_service_version") == service.version)
    if current.height == 0:
        others = sorted(set(rows["feature_service_version"].to_list()))
        raise ModelNotFoundError(
            f"no model is registered for feature service {service.name!r} version {service.version} in "
            f"{REGISTRY_TABLE}" + (f" (models exist for its version(s) {others})" if others else "")
            + "; materialize the model asset (`flight_delay_model`) after the training set"
        )
    return _registered(current.sort("registered_at", "model_version").row(-1, named=True))


def model_version(store: DeltaStore, model_name: str, version: int) -> RegisteredModel:
    """One registered version of a model, or ModelNotFoundError naming those that exist."""
    rows = registered_models(store, model_name).filter(pl.col("model_version") == version)
    if rows.height == 0:
        known = registered_models(store, model_name)["model_version"].to_list()
        raise ModelNotFoundError(f"model {model_name!r} has no version {version}; registered: {known}")
    return _registered(rows.row(0, named=True))


def load_estimator(store: DeltaStore, model: RegisteredModel) -> HistGradientBoostingClassifier:
    """The registered estimator, after checking its file's SHA-256 against the registry row.

    Raises:
        ModelArtefactError: the file is missing or its bytes differ from those registered.
    """
    filesystem, root = _filesystem(store)
    where = f"model {model.name!r} version {model.version}: artefact {model.artefact_path}"
    try:
        with filesystem.open_input_stream(f"{root}/{model.artefact_path}") as source:
            data = source.read()
    except (FileNotFoundError, OSError) as error:
        raise ModelArtefactError(f"{where} cannot be read: {error}") from error
    digest = hashlib.sha256(data).hexdigest()
    if digest != model.artefact_sha256:
        raise ModelArtefactError(f"{where} has SHA-256 {digest}, the registry says {model.artefact_sha256}; not loaded")
    return joblib.load(io.BytesIO(data))
