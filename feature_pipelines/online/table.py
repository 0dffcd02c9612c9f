"""A feature view as the online store holds it: one value that publish and read both take.

Feast's `online_write_batch(config, table: FeatureView, ...)` takes the view whole; so do
`publish(client, table, frame)` and `read_online(client, table, entity_rows, features, now)`.
What the store derives from a view (the key head, the validated schema, the TTL in
microseconds, the metadata column names) is derived and checked here, once, when the table is
built, instead of once per call site that took the view apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import polars as pl

from feature_pipelines.features.spec import FeatureView
from feature_pipelines.online.encoding import normalize_schema
from feature_pipelines.online.keys import OnlineKeyError, hash_keys, key_head, keys_under_head


class OnlineTableError(ValueError):
    """A view that cannot be held online as declared (no entity keys, a TTL that is not positive)."""


@dataclass(frozen=True)
class OnlineTable:
    """One feature view under one key prefix: its keys, features with dtypes, and TTL.

    Build it from the view with `OnlineTable.for_view(view, prefix)`; the fields are the view's
    name, entity keys, schema and TTL so that a test or a benchmark can also hold a table whose
    features do not follow the catalog's naming rules.
    """

    name: str
    entity_keys: tuple[str, ...]
    schema: Mapping[str, pl.DataType | type[pl.DataType]]
    ttl: timedelta
    prefix: str
    features: dict[str, pl.DataType] = field(init=False, repr=False, compare=False)
    key_head: str = field(init=False, repr=False, compare=False)
    ttl_us: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "entity_keys", tuple(self.entity_keys))
        object.__setattr__(self, "key_head", key_head(self.prefix, self.name))
        if not self.entity_keys:
            raise OnlineKeyError(f"feature view {self.name!r} declares no entity keys")
        if self.ttl <= timedelta(0):
            raise OnlineTableError(f"feature view {self.name!r}: ttl must be positive, got {self.ttl}")
        object.__setattr__(self, "features", normalize_schema(self.schema, view=self.name))
        object.__setattr__(self, "ttl_us", self.ttl // timedelta(microseconds=1))

    @classmethod
    def for_view(cls, view: FeatureView, prefix: str) -> OnlineTable:
        """The online table of `view` under `prefix` (an environment's key prefix)."""
        return cls(name=view.name, entity_keys=view.entity_keys, schema=view.schema(), ttl=view.ttl, prefix=prefix)

    @property
    def metadata_columns(self) -> tuple[str, str]:
        """Names of the columns `include_metadata=True` adds: event timestamp, is-expired."""
        return metadata_columns(self.name)

    def keys(self, frame: pl.DataFrame) -> list[bytes]:
        """The Redis keys of every row of `frame` (which holds the entity key columns), vectorised."""
        return hash_keys(frame, prefix=self.prefix, view=self.name, entity_keys=self.entity_keys)

    def keys_for_rows(self, rows: Iterable[Sequence[Any]]) -> list[str]:
        """The Redis keys of entities given as tuples of key values (the small-request path)."""
        return keys_under_head(self.key_head, self.name, rows)


def metadata_columns(view: str) -> tuple[str, str]:
    """Names of the per-view metadata columns added by `include_metadata=True`."""
    return f"{view}__event_timestamp", f"{view}__is_expired"
