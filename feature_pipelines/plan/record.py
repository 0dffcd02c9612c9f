"""The recorded form of a feature view: what decides its values and its contract, as canonical JSON.

A record keeps the fields a table's rows depend on (entity keys, source, grain, TTL, and per
feature its dtype, aggregation, window, source column and null policy) and leaves out what does
not change a value or a reader's contract (owner, description, tags, value ranges, drift
thresholds). Its fingerprint is the first 12 hex digits of the SHA-256 of that JSON, so it is the
same on every machine and changes exactly when a value or the contract can.

Every feature materialization writes its view's record into the Delta commit's metadata under
`DEFINITION_KEY`, so the definition that produced a table is read back from the table itself.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from feature_pipelines.features.spec import FeatureView

DEFINITION_KEY = "view_definition"
"""The key of the recorded definition in a feature materialization's metadata and Delta commit."""

FINGERPRINT_LENGTH = 12


class RecordFormatError(ValueError):
    """A stored record (commit metadata or lock entry) that does not hold the fields a record needs."""


@dataclass(frozen=True)
class FeatureRecord:
    """One feature as recorded: its name and everything that decides its values."""

    name: str
    dtype: str
    aggregation: str
    window: str
    source_column: str | None
    null_policy: str

    def definition(self) -> dict[str, Any]:
        """The value-deciding fields without the name (two features alike here compute alike)."""
        fields = asdict(self)
        fields.pop("name")
        return fields


@dataclass(frozen=True)
class ViewRecord:
    """A feature view as recorded with its table and in the lock file."""

    name: str
    entity_keys: tuple[str, ...]
    source_asset: str
    known_at_column: str
    max_lateness_seconds: int
    partitioning: str
    cadence: str
    ttl_seconds: int
    exact_float_sums: bool
    features: tuple[FeatureRecord, ...]

    @classmethod
    def of(cls, view: FeatureView) -> ViewRecord:
        return cls(
            name=view.name,
            entity_keys=tuple(view.entity_keys),
            source_asset=view.source.asset,
            known_at_column=view.source.known_at_column,
            max_lateness_seconds=int(view.source.max_lateness.total_seconds()),
            partitioning=view.partitioning.value,
            cadence=view.cadence.value,
            ttl_seconds=int(view.ttl.total_seconds()),
            exact_float_sums=view.exact_float_sums,
            features=tuple(
                FeatureRecord(f.name, f.dtype, f.aggregation.value, f.window, f.source_column, f.null_policy.value)
                for f in view.features
            ),
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, where: str) -> ViewRecord:
        """A record read back from `where` (a table's commit, the lock file), checked field by field."""
        try:
            features = tuple(FeatureRecord(**feature) for feature in data["features"])
            fields = {key: data[key] for key in cls.__dataclass_fields__ if key != "features"}
        except (KeyError, TypeError) as error:
            raise RecordFormatError(f"{where}: not a view record ({type(error).__name__}: {error})") from error
        record = cls(**{**fields, "entity_keys": tuple(fields["entity_keys"]), "features": features})
        stored = data.get("fingerprint")
        if stored is not None and stored != record.fingerprint:
            raise RecordFormatError(
                f"{where}: view {record.name!r} says fingerprint {stored!r} but its fields give {record.fingerprint!r}; "
                "the record was edited by hand"
            )
        return record

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "entity_keys": list(self.entity_keys), "fingerprint": self.fingerprint}

    def canonical(self) -> str:
        """The record as compact JSON with sorted keys (what is hashed and stored in a commit)."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.canonical().encode()).hexdigest()[:FINGERPRINT_LENGTH]

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(feature.name for feature in self.features)

    def feature(self, name: str) -> FeatureRecord | None:
        return next((feature for feature in self.features if feature.name == name), None)


def definition_metadata(view: FeatureView) -> dict[str, str]:
    """The materialization metadata entry that records `view`'s definition (shown in the UI)."""
    return {DEFINITION_KEY: ViewRecord.of(view).canonical()}


def commit_metadata_of(metadata: Mapping[str, object]) -> dict[str, str]:
    """The recorded definition among a materialization's metadata, as Delta commit metadata ({}
    for a table that records none). Dagster may hand the entry back wrapped in a metadata value,
    whose `value` is the text."""
    if DEFINITION_KEY not in metadata:
        return {}
    entry = metadata[DEFINITION_KEY]
    return {DEFINITION_KEY: str(getattr(entry, "value", entry))}


def records_of(views: Mapping[str, FeatureView]) -> dict[str, ViewRecord]:
    return {name: ViewRecord.of(view) for name, view in views.items()}
