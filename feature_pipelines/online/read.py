"""Online reads: feature values for a list of entities, as a typed polars frame.

One round trip per request: a pipeline of HMGETs asking for the requested features plus `__ts`
and `__v` only. Values past their TTL read as null even if Redis has not evicted the key yet,
because expiry in Redis is lazy/sampled and a model must not see a value the offline
point-in-time join would have refused (that join keeps a row while
`event_timestamp + ttl >= now`; so does this).

Small requests (the serving path: one or a few entities) are decoded value by value in Python,
which is cheaper than building polars Series; large ones are decoded per column, vectorised.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any

import polars as pl
import redis
from redis.exceptions import AskError, MovedError, TryAgainError

from feature_pipelines.online.encoding import (
    FORMAT_VERSION_BYTES,
    TIMESTAMP_FIELD,
    VERSION_FIELD,
    OnlineEncodingError,
    check_version,
    decode_expr,
    normalize_schema,
    first_invalid,
    scalar_decoder,
)
from feature_pipelines.online.keys import (
    describe_entity,
    hash_keys,
    hash_keys_for_rows,
    is_cluster_client,
)

# Up to this many entity rows, keys are built and values decoded in plain Python.
SMALL_REQUEST_ROWS = 300
# Large requests are fetched in pipelines of this many HMGETs, to bound client memory.
PIPELINE_CHUNK = 10_000

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = timedelta(microseconds=1)
TIMESTAMP_DTYPE = pl.Datetime("us", "UTC")


class OnlineReadError(ValueError):
    """A read request that names something the feature view does not have."""


def metadata_columns(view: str) -> tuple[str, str]:
    """Names of the per-view metadata columns added by `include_metadata=True`."""
    return f"{view}__event_timestamp", f"{view}__is_expired"


def _check_request(
    view: str,
    entity_keys: Sequence[str],
    schema: Mapping[str, pl.DataType],
    entity_rows: pl.DataFrame,
    features: Sequence[str],
    now: datetime,
) -> None:
    if now.tzinfo is None or now.tzinfo.utcoffset(now) is None:
        raise OnlineReadError(f"feature view {view!r}: now must be timezone-aware (UTC), got {now}")
    if not features:
        raise OnlineReadError(f"feature view {view!r}: no features requested")
    for feature in features:
        if feature not in schema:
            raise OnlineReadError(
                f"feature view {view!r} has no feature {feature!r}; it has {sorted(schema)}"
            )
    if len(set(features)) != len(features):
        repeated = sorted({f for f in features if list(features).count(f) > 1})
        raise OnlineReadError(f"feature view {view!r}: feature(s) {repeated} requested twice")
    missing = [k for k in entity_keys if k not in entity_rows.columns]
    if missing:
        raise OnlineReadError(
            f"feature view {view!r}: entity_rows lacks entity key column(s) {missing}"
        )
    clash = [f for f in features if f in entity_keys]
    if clash:
        raise OnlineReadError(f"feature view {view!r}: feature(s) {clash} shadow entity keys")


def _resp_bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


@lru_cache(maxsize=1024)
def _hmget_parts(fields: tuple[str, ...]) -> tuple[bytes, bytes]:
    head = b"*%d\r\n$5\r\nHMGET\r\n" % (len(fields) + 2)
    return head, b"".join(_resp_bulk(field.encode()) for field in fields)


def pack_hmgets(keys: Sequence[bytes | str], fields: Sequence[str]) -> bytes:
    """RESP for one HMGET per key, all asking for the same fields, as one buffer.

    The fields part is packed once and reused for every key; redis-py would re-encode and
    re-pack every argument of every command, which at 100 keys costs more than the round trip.
    """
    head, tail = _hmget_parts(tuple(fields))
    parts = []
    for key in keys:
        raw = key.encode() if isinstance(key, str) else key
        parts.append(b"%s$%d\r\n%s\r\n%s" % (head, len(raw), raw, tail))
    return b"".join(parts)


def _fetch_from_node(
    client: redis.Redis, keys: Sequence[bytes | str], fields: Sequence[str]
) -> list[list[bytes | None]]:
    pool = client.connection_pool
    for attempt in (1, 2):
        connection = pool.get_connection()
        clean = False
        try:
            replies: list[list[bytes | None]] = []
            for start in range(0, len(keys), PIPELINE_CHUNK):
                chunk = keys[start:start + PIPELINE_CHUNK]
                connection.send_packed_command([pack_hmgets(chunk, fields)])
                for _ in range(len(chunk)):
                    replies.append(connection.read_response(disable_decoding=True))
            clean = True
            return replies
        except (redis.ConnectionError, redis.TimeoutError):
            if attempt == 2:
                raise
        finally:
            if not clean:
                # Unread replies may be on the wire: the connection must not be reused.
                connection.disconnect()
            pool.release(connection)
    raise AssertionError("unreachable")


def fetch_hashes(
    client: redis.Redis, keys: Sequence[bytes | str], fields: Sequence[str]
) -> list[list[bytes | None]]:
    """HMGET `fields` of every key in pipelined round trips; values always come back as bytes.

    This is a pipeline of HMGETs written to one pooled connection directly: the same bytes a
    redis-py Pipeline would send, without its per-command Python overhead, which dominated a
    100-entity read. Replies are read undecoded (`disable_decoding`) because packed floats are
    not text, whatever `decode_responses` the caller's client has. A connection error is retried
    once on a fresh connection; reads are idempotent. On a cluster, keys are grouped by the node
    that serves their slot and each node gets its own pipeline; a MOVED reply (slots migrating)
    refreshes the topology and the read is retried once.
    """
    if not keys:
        return []
    if not is_cluster_client(client):
        return _fetch_from_node(client, keys, fields)
    for attempt in (1, 2):
        by_node: dict[str, tuple[redis.Redis, list[int]]] = {}
        for index, key in enumerate(keys):
            node = client.get_node_from_key(key)  # type: ignore[attr-defined]
            if node.name not in by_node:
                node_client = client.get_redis_connection(node)  # type: ignore[attr-defined]
                by_node[node.name] = (node_client, [])
            by_node[node.name][1].append(index)
        replies: list[list[bytes | None]] = [[] for _ in keys]
        try:
            for node_client, indices in by_node.values():
                got = _fetch_from_node(node_client, [keys[i] for i in indices], fields)
                for index, reply in zip(indices, got):
                    replies[index] = reply
            return replies
        except (MovedError, AskError, TryAgainError):
            if attempt == 2:
                raise
            client.nodes_manager.initialize()  # type: ignore[attr-defined]
    raise AssertionError("unreachable")


def read_online(
    client: redis.Redis,
    *,
    prefix: str,
    view: str,
    entity_keys: Sequence[str],
    schema: Mapping[str, pl.DataType | type[pl.DataType]],
    ttl: timedelta,
    entity_rows: pl.DataFrame,
    features: list[str],
    now: datetime,
    include_metadata: bool = False,
) -> pl.DataFrame:
    """One row per row of `entity_rows`, in its order (duplicates repeated).

    Columns: the entity keys as given, then `features` with their declared dtypes (null for
    unknown entities and for values past their TTL at `now`), then with `include_metadata`
    `{view}__event_timestamp` (Datetime us UTC, null for unknown entities) and
    `{view}__is_expired` (null for unknown entities).
    """
    declared = normalize_schema(schema, view=view)
    _check_request(view, entity_keys, declared, entity_rows, features, now)
    entity_keys = list(entity_keys)
    fields = [*features, TIMESTAMP_FIELD, VERSION_FIELD]
    n_features = len(features)
    height = entity_rows.height
    now_us = (now - _EPOCH) // _US
    ttl_us = ttl // _US
    key_columns = [entity_rows.get_column(k) for k in entity_keys]
    out_schema: dict[str, pl.DataType] = {k: c.dtype for k, c in zip(entity_keys, key_columns)}
    out_schema.update((f, declared[f]) for f in features)
    ts_name, expired_name = metadata_columns(view)
    if include_metadata:
        out_schema[ts_name] = TIMESTAMP_DTYPE
        out_schema[expired_name] = pl.Boolean()

    if height <= SMALL_REQUEST_ROWS:
        key_rows = list(zip(*(column.to_list() for column in key_columns)))
        keys: Sequence[bytes | str] = hash_keys_for_rows(prefix, view, key_rows)
        replies = fetch_hashes(client, keys, fields)
        decoders = [(f, scalar_decoder(declared[f])) for f in features]
        records: list[dict[str, Any]] = []
        for key_values, reply in zip(key_rows, replies):
            record = dict(zip(entity_keys, key_values))
            raw_ts = reply[n_features]
            raw_version = reply[n_features + 1]
            if raw_version is not None and raw_version != FORMAT_VERSION_BYTES:
                entity = describe_entity(entity_keys, key_values)
                check_version(raw_version, view=view, entity=entity)
            if raw_ts is None:
                ts, expired = None, None
            else:
                try:
                    ts = int(raw_ts)
                except ValueError:
                    raise OnlineEncodingError(
                        f"feature view {view!r}: entity {describe_entity(entity_keys, key_values)} "
                        f"has a malformed {TIMESTAMP_FIELD} {raw_ts!r}"
                    ) from None
                expired = ts + ttl_us < now_us
            if expired is False:
                for (name, decode), raw in zip(decoders, reply):
                    try:
                        record[name] = decode(raw)
                    except OnlineEncodingError as error:
                        raise OnlineEncodingError(
                            f"feature view {view!r}: entity "
                            f"{describe_entity(entity_keys, key_values)} feature {name!r}: {error}"
                        ) from error
            else:
                for name, _ in decoders:
                    record[name] = None
            if include_metadata:
                record[ts_name] = None if ts is None else _EPOCH + timedelta(microseconds=ts)
                record[expired_name] = expired
            records.append(record)
        # from_dicts is the cheapest public way to a typed frame of a few rows (~25 us for one
        # row of 12 columns, where twelve pl.Series cost ~75 us).
        return pl.from_dicts(records, schema=out_schema)

    keys = hash_keys(entity_rows, prefix=prefix, view=view, entity_keys=entity_keys)
    replies = fetch_hashes(client, keys, fields)
    readable = (None, FORMAT_VERSION_BYTES)
    for row, reply in enumerate(replies):
        if reply[n_features + 1] not in readable:
            check_version(
                reply[n_features + 1], view=view,
                entity=describe_entity(entity_keys, [column[row] for column in key_columns]),
            )
    # Raw columns get positional names so that they never clash with entity key names.
    raw_columns = [(f"__raw{i}", declared[f]) for i, f in enumerate(features)]
    raw_columns.append(("__raw_ts", pl.Int64()))
    raw = pl.DataFrame(
        [pl.Series(name, [reply[i] for reply in replies], dtype=pl.Binary)
         for i, (name, _) in enumerate(raw_columns)]
    )
    decoded = {name: decode_expr(name, dtype) for name, dtype in raw_columns}
    ts = decoded["__raw_ts"][0]
    fresh = ts + ttl_us >= now_us
    exprs = [
        pl.when(fresh).then(decoded[name][0]).alias(feature)
        for (name, _), feature in zip(raw_columns, features)
    ]
    if include_metadata:
        exprs += [ts.cast(TIMESTAMP_DTYPE).alias(ts_name), (~fresh).alias(expired_name)]
    any_invalid = pl.any_horizontal(invalid for _, invalid in decoded.values()).any()
    exprs.append(any_invalid.alias("__invalid"))
    try:
        out: pl.DataFrame | None = raw.select(exprs)
    except (pl.exceptions.InvalidOperationError, pl.exceptions.ComputeError):
        out = None  # a strict cast met a malformed value; find and name it below
    if out is None or out["__invalid"][0]:
        found = first_invalid(raw, raw_columns)
        column, row, reason = found if found else ("__raw_ts", 0, "unreadable")
        names = {name: f for (name, _), f in zip(raw_columns, features)}
        names["__raw_ts"] = TIMESTAMP_FIELD
        raise OnlineEncodingError(
            f"feature view {view!r}: entity "
            f"{describe_entity(entity_keys, [c[row] for c in key_columns])} "
            f"feature {names[column]!r}: {reason}"
        )
    return pl.DataFrame(key_columns).hstack(out.drop("__invalid"))
