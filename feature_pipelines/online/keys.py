"""Redis key layout: one hash per (feature view, entity).

    {prefix}:{view}:{<entity>}        e.g.  fp:prod:route_delay_stats:{JFK|LAX}

* `prefix` scopes a project/environment (it may contain ':'; it may not contain braces).
* `view` is the feature view name (no ':' and no braces), so the split between prefix and view
  is never ambiguous: the view is what lies between the last ':' before the '{' and that '{'.
* `<entity>` is the entity's key values in the view's key-column order, joined by '|', each
  value percent-escaped for '%', '|', '{' and '}'. Escaping makes the encoding injective
  (("a|b", "c") and ("a", "b|c") differ) and keeps a '}' inside a value from closing the Redis
  Cluster hash tag early. The braces are that hash tag: the slot is computed from the entity part
  only, so all views of one entity hash to the same slot and a batch of entities can be grouped
  by slot for a cluster.

Integer key values are written in decimal. A view's key columns have one dtype, so the integer 5
and the string "5" never meet within a view.

Fields (one per feature, plus `__ts` and `__v`) rather than one packed blob per hash: a read of 3
features out of 10 fetches only those 3 values (HMGET), a field is added to a view without
rewriting old hashes, and small hashes are stored by Redis as a compact listpack anyway, so the
per-field overhead a blob would save is a few bytes per feature.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import polars as pl
from redis.cluster import RedisCluster
from redis.crc import key_slot as _redis_key_slot

SEPARATOR = "|"
_ESCAPES = (("%", "%25"), ("|", "%7C"), ("{", "%7B"), ("}", "%7D"))
_ESCAPE_TABLE = str.maketrans(dict(_ESCAPES))


class OnlineKeyError(ValueError):
    """An entity key, prefix or view name that cannot be mapped to a Redis key."""


def validate_prefix_and_view(prefix: str, view: str) -> None:
    """Refuse names that would make two different (prefix, view) pairs share keys."""
    if not prefix or any(ch in prefix for ch in "{}"):
        raise OnlineKeyError(f"online key prefix {prefix!r} must be non-empty and brace-free")
    if not view or any(ch in view for ch in ":{}"):
        raise OnlineKeyError(f"feature view name {view!r} must be non-empty and free of ':{{}}'")


def key_head(prefix: str, view: str) -> str:
    """Everything before the entity hash tag, shared by all keys of a view."""
    validate_prefix_and_view(prefix, view)
    return f"{prefix}:{view}:"


def _escape_scalar(value: Any) -> str:
    if isinstance(value, bool):
        raise OnlineKeyError(f"boolean entity key value {value!r} is not supported")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value.translate(_ESCAPE_TABLE)
    raise OnlineKeyError(f"entity key value {value!r} must be a string or an integer")


def entity_part(values: Sequence[Any]) -> str:
    """The escaped entity part of the key (inside the braces) for one entity's key values."""
    return SEPARATOR.join(_escape_scalar(value) for value in values)


def hash_key(prefix: str, view: str, values: Sequence[Any]) -> str:
    """The Redis key of one entity's hash."""
    return hash_keys_for_rows(prefix, view, [values])[0]


def hash_keys_for_rows(prefix: str, view: str, rows: Iterable[Sequence[Any]]) -> list[str]:
    """Keys of entities given as Python tuples; the serving path, where polars costs more."""
    return keys_under_head(key_head(prefix, view), view, rows)


def keys_under_head(head: str, view: str, rows: Iterable[Sequence[Any]]) -> list[str]:
    """`hash_keys_for_rows` for a `key_head` already validated (an `OnlineTable` holds one)."""
    head = head + "{"
    keys = []
    for values in rows:
        if None in values:
            raise OnlineKeyError(
                f"feature view {view!r}: entity key values {tuple(values)!r} contain a null"
            )
        keys.append(head + SEPARATOR.join(map(_escape_scalar, values)) + "}")
    return keys


def describe_entity(entity_keys: Sequence[str], values: Sequence[Any]) -> str:
    """An entity as people read it in error messages: (origin='JFK', dest='LAX')."""
    return "(" + ", ".join(f"{k}={v!r}" for k, v in zip(entity_keys, values)) + ")"


def _key_column_expr(name: str, dtype: pl.DataType, view: str) -> pl.Expr:
    if dtype == pl.String or isinstance(dtype, (pl.Categorical, pl.Enum)):
        expr = pl.col(name).cast(pl.String)
        for raw, escaped in _ESCAPES:
            expr = expr.str.replace_all(raw, escaped, literal=True)
        return expr
    if dtype.is_integer():
        return pl.col(name).cast(pl.String)
    raise OnlineKeyError(
        f"feature view {view!r}: entity key column {name!r} has dtype {dtype}; online keys must "
        "be strings or integers"
    )


def hash_keys(
    frame: pl.DataFrame, *, prefix: str, view: str, entity_keys: Sequence[str]
) -> list[bytes]:
    """The Redis keys of every row of `frame`, vectorised (bytes, as redis-py sends them as is)."""
    head = key_head(prefix, view)
    if not entity_keys:
        raise OnlineKeyError(f"feature view {view!r} declares no entity keys")
    missing = [k for k in entity_keys if k not in frame.columns]
    if missing:
        raise OnlineKeyError(f"feature view {view!r}: entity key column(s) {missing} are missing")
    if frame.height == 0:
        return []
    nulls = frame.select(pl.any_horizontal(pl.col(list(entity_keys)).is_null()).arg_true())
    if nulls.height:
        row = nulls.item(0, 0)
        values = [frame[k][row] for k in entity_keys]
        raise OnlineKeyError(
            f"feature view {view!r}: row {row} has a null entity key "
            f"{describe_entity(entity_keys, values)}"
        )
    parts = [_key_column_expr(k, frame.schema[k], view) for k in entity_keys]
    entity = pl.concat_str(parts, separator=SEPARATOR)
    key = pl.concat_str([pl.lit(head + "{"), entity, pl.lit("}")])
    return frame.select(key.cast(pl.Binary)).to_series().to_list()


def key_slot(key: bytes | str) -> int:
    """The Redis Cluster slot of a key (CRC16 of its hash tag, modulo 16384)."""
    return int(_redis_key_slot(key.encode() if isinstance(key, str) else key))


def is_cluster_client(client: object) -> bool:
    """Whether keys must be routed by slot (a redis-py RedisCluster client)."""
    return isinstance(client, RedisCluster)
