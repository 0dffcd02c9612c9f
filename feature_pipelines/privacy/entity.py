"""Which entity to forget: one join key of the catalog and its value, and how a table's rows of it are found."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import polars as pl

from feature_pipelines.features.spec import FeatureView

# The request log names the entity of every row, on-demand rows included, in a JSON text column.
ENTITY_KEY_JSON_COLUMN = "entity_key"


class UnknownEntityKeyError(ValueError):
    """A key that no feature view joins on: nothing could be found, so nothing is pretended deleted."""


def entity_join_keys(views: Mapping[str, FeatureView]) -> tuple[str, ...]:
    """Every join key of the catalog's entities, in first-appearance order."""
    return tuple(dict.fromkeys(key for view in views.values() for key in view.entity_keys))


@dataclass(frozen=True)
class ForgetTarget:
    """One entity to forget: a join key (`tailnum`) and its value (`N14228`), compared as text.

    Keys are checked against the catalog when parsed; the value is kept exactly as given (no
    trimming, no case folding: `n14228` is another entity).
    """

    key: str
    value: str

    @classmethod
    def parse(cls, text: str, views: Mapping[str, FeatureView]) -> ForgetTarget:
        """`key=value` for a join key of `views`; anything else is refused in one line."""
        key, sep, value = text.partition("=")
        known = entity_join_keys(views)
        if not sep or not key or not value:
            raise UnknownEntityKeyError(f"expected --entity KEY=VALUE with KEY one of {', '.join(known)}, got {text!r}")
        if key not in known:
            raise UnknownEntityKeyError(f"unknown entity key {key!r}: the catalog's entity keys are {', '.join(known)}")
        return cls(key, value)

    def describe(self) -> str:
        return f"{self.key}={self.value!r}"

    def views(self, views: Mapping[str, FeatureView]) -> list[FeatureView]:
        """The views keyed (wholly or partly) by this key."""
        return [view for view in views.values() if self.key in view.entity_keys]

    def json_fragment(self) -> str:
        """How the request log's `entity_key` JSON holds this entity: `"tailnum":"N14228"`."""
        return f"{json.dumps(self.key)}:{json.dumps(self.value)}"

    def applies_to(self, columns: Sequence[str]) -> bool:
        """Whether a table with these columns can hold rows of the entity."""
        return self.key in columns or ENTITY_KEY_JSON_COLUMN in columns

    def sql_predicate(self, schema: Mapping[str, pl.DataType]) -> str:
        """The Delta DELETE predicate of the entity's rows in a table of `schema`."""
        parts = []
        if self.key in schema:
            parts.append(f'"{self.key}" = {_sql_literal(self.value, schema[self.key], self.key)}')
        if schema.get(ENTITY_KEY_JSON_COLUMN) == pl.String:
            parts.append(f'strpos("{ENTITY_KEY_JSON_COLUMN}", {_quote(self.json_fragment())}) > 0')
        if not parts:
            raise ValueError(f"entity {self.describe()}: a table of columns {list(schema)} cannot hold its rows")
        return " OR ".join(parts)

    def polars_filter(self, schema: Mapping[str, pl.DataType]) -> pl.Expr:
        """The same rows as `sql_predicate`, as a polars expression (reads and the absence proof)."""
        parts = []
        if self.key in schema:
            dtype = schema[self.key]
            value: str | int = int(self.value) if dtype.is_integer() else self.value
            parts.append(pl.col(self.key).cast(pl.String if not dtype.is_integer() else dtype) == pl.lit(value))
        if schema.get(ENTITY_KEY_JSON_COLUMN) == pl.String:
            parts.append(pl.col(ENTITY_KEY_JSON_COLUMN).str.contains(self.json_fragment(), literal=True))
        if not parts:
            raise ValueError(f"entity {self.describe()}: a table of columns {list(schema)} cannot hold its rows")
        return pl.any_horizontal(parts).fill_null(False)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _sql_literal(value: str, dtype: pl.DataType, column: str) -> str:
    if dtype.is_integer():
        try:
            return str(int(value))
        except ValueError:
            raise ValueError(f"column {column!r} holds integers; {value!r} is not one") from None
    return _quote(value)
