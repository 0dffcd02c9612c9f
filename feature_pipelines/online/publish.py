"""Conditional, atomic publish of a feature view snapshot to Redis.

Every entity is written by a server-side Lua script that, in one step Redis never interleaves
with other commands,

1. skips the entity if `event_timestamp + ttl` is already past on the server clock (writing it
   would resurrect a value readers must treat as absent, and PEXPIREAT in the past deletes),
2. skips it if the stored `__ts` is newer than the incoming one (a backfill of old partitions
   never overwrites fresher values; an equal timestamp overwrites, so re-running a publish is
   idempotent),
3. otherwise writes every feature plus `__ts` and `__v` with one HSET and sets PEXPIREAT to
   `event_timestamp + ttl`.

A script runs to completion or not at all, and each entity's fields go in one HSET, so an
entity is never torn between two snapshots: a publish cut off half-way (connection dropped,
server killed) leaves each entity fully old or fully new, and re-running it finishes the job.

Throughput comes from batching and pipelining: one EVALSHA carries `batch_size` entities (all
their keys in KEYS, so a batch whose keys share one slot is valid on Redis Cluster, where batches
are grouped by slot), and calls are streamed on one connection with up to
`batches_per_pipeline` replies outstanding. Encoding is done per column, vectorised (see
`encoding`).

Measured (benchmarks/bench_online.py, 100k entities x 3 features, local redis-server, hiredis):
~120-170k entities/s, 1.5-2x a raw redis-py pipeline of unconditional HSETs of the same bytes;
the server's Lua (HGET + HSET + PEXPIREAT, ~5 us per entity) is the bound.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

import polars as pl
import redis
import redis.connection

from feature_pipelines.features.spec import FeatureView
from feature_pipelines.names import EVENT_TIMESTAMP
from feature_pipelines.online.encoding import (
    FORMAT_VERSION_BYTES,
    TIMESTAMP_FIELD,
    VERSION_FIELD,
    conform_column,
    encode_column,
)
from feature_pipelines.online.errors import client_password, client_target, safe_cause, unavailable
from feature_pipelines.online.keys import describe_entity, is_cluster_client
from feature_pipelines.online.table import OnlineTable
from feature_pipelines.online.transport import REFUSED, on_connection, plan_batches, send_routed

DEFAULT_BATCH_SIZE = 1000
DEFAULT_BATCHES_PER_PIPELINE = 10

# KEYS[i]: the hash of entity i.
# ARGV: format version, ttl in microseconds, n (features per entity), the n feature field names,
#       then per entity: event_timestamp in microseconds since the epoch, then its n values.
# Timestamps in microseconds are < 2^53 until the year 2255, so Lua's doubles hold them exactly.
PUBLISH_LUA = f"""
local version = ARGV[1]
local ttl_us = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now_us = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local fields = {{'{VERSION_FIELD}', version, '{TIMESTAMP_FIELD}', false}}
for j = 1, n do
  fields[3 + 2 * j] = ARGV[3 + j]
  fields[4 + 2 * j] = false
end
local written, older, expired = 0, 0, 0
local pos = 4 + n
for i = 1, #KEYS do
  local ts_raw = ARGV[pos]
  local ts = tonumber(ts_raw)
  local expire_us = ts + ttl_us
  if expire_us <= now_us then
    expired = expired + 1
  else
    local stored = tonumber(redis.call('HGET', KEYS[i], '{TIMESTAMP_FIELD}') or '')
    if stored and stored > ts then
      older = older + 1
    else
      fields[4] = ts_raw
      for j = 1, n do
        fields[4 + 2 * j] = ARGV[pos + j]
      end
      redis.call('HSET', KEYS[i], unpack(fields))
      redis.call('PEXPIREAT', KEYS[i], string.format('%d', math.ceil(expire_us / 1000)))
      written = written + 1
    end
  end
  pos = pos + n + 1
end
return {{written, older, expired}}
"""
PUBLISH_SHA = hashlib.sha1(PUBLISH_LUA.encode()).hexdigest()

try:  # optional C packer; redis-py uses it too when installed
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - depends on the environment
    _hiredis_pack = None

class OnlinePublishError(ValueError):
    """A frame that cannot be published as one snapshot of the view."""


@dataclass(frozen=True)
class PublishResult:
    """What a publish did, per entity; the three counts add up to the rows given."""

    view: str
    written: int = 0
    skipped_as_older: int = 0
    skipped_as_expired: int = 0

    @property
    def total(self) -> int:
        return self.written + self.skipped_as_older + self.skipped_as_expired

    def __add__(self, other: PublishResult) -> PublishResult:
        return PublishResult(
            view=self.view,
            written=self.written + other.written,
            skipped_as_older=self.skipped_as_older + other.skipped_as_older,
            skipped_as_expired=self.skipped_as_expired + other.skipped_as_expired,
        )


@dataclass
class _Progress:
    """Entities Redis has acknowledged so far in one publish, for the error if it is cut off."""

    acknowledged: int = 0


@dataclass(frozen=True)
class EncodedSnapshot:
    """A frame turned into what the script receives: keys, timestamps and encoded columns.

    Kept separate from sending so that encoding cost and Redis cost can be measured apart, and
    so that a cluster client can regroup the same rows by slot.
    """

    view: str
    keys: list[bytes]
    timestamps_us: list[bytes]
    feature_names: tuple[str, ...]
    columns: list[list[bytes]]
    ttl_us: int

    def __len__(self) -> int:
        return len(self.keys)


def encode_snapshot(frame: pl.DataFrame, table: OnlineTable) -> EncodedSnapshot:
    """Validate a snapshot frame and encode it; every error names the view (and key/feature)."""
    view, entity_keys = table.name, list(table.entity_keys)
    needed = [*entity_keys, EVENT_TIMESTAMP, *table.features]
    missing = [name for name in needed if name not in frame.columns]
    if missing:
        raise OnlinePublishError(f"feature view {view!r}: the frame to publish lacks column(s) {missing}")
    ts_dtype = frame.schema[EVENT_TIMESTAMP]
    if not isinstance(ts_dtype, pl.Datetime) or ts_dtype.time_zone is None:
        raise OnlinePublishError(
            f"feature view {view!r}: {EVENT_TIMESTAMP} must be a timezone-aware (UTC) Datetime, got {ts_dtype}"
        )
    if frame[EVENT_TIMESTAMP].null_count():
        raise OnlinePublishError(f"feature view {view!r}: {EVENT_TIMESTAMP} has nulls")
    duplicated = frame.select(pl.struct(entity_keys).is_duplicated().arg_true())
    if duplicated.height:
        row = duplicated.item(0, 0)
        values = [frame[k][row] for k in entity_keys]
        count = frame.select(pl.struct(entity_keys).is_duplicated().sum()).item()
        raise OnlinePublishError(
            f"feature view {view!r}: entity {describe_entity(entity_keys, values)} appears more "
            f"than once ({count} rows share a key with another); publish takes one row per "
            "entity, the latest snapshot"
        )
    keys = table.keys(frame)
    timestamps = (
        frame.select(pl.col(EVENT_TIMESTAMP).dt.epoch("us").cast(pl.String).cast(pl.Binary)).to_series().to_list()
    )
    columns = [
        encode_column(conform_column(frame[name], dtype, view=view, feature=name), dtype)
        for name, dtype in table.features.items()
    ]
    return EncodedSnapshot(
        view=view,
        keys=keys,
        timestamps_us=timestamps,
        feature_names=tuple(table.features),
        columns=columns,
        ttl_us=table.ttl_us,
    )


def _script_arguments(
    snapshot: EncodedSnapshot, rows: range | list[int]
) -> tuple[list[bytes], list[bytes | str | int]]:
    header: list[bytes | str | int] = [
        FORMAT_VERSION_BYTES, snapshot.ttl_us, len(snapshot.feature_names), *snapshot.feature_names
    ]
    if isinstance(rows, range):
        window = slice(rows.start, rows.stop)
        keys = snapshot.keys[window]
        per_entity = zip(snapshot.timestamps_us[window], *(c[window] for c in snapshot.columns))
    else:
        keys = [snapshot.keys[i] for i in rows]
        per_entity = zip(
            [snapshot.timestamps_us[i] for i in rows],
            *([c[i] for i in rows] for c in snapshot.columns),
        )
    header.extend(chain.from_iterable(per_entity))
    return keys, header


def _parse_counts(view: str, reply: object) -> PublishResult:
    if not isinstance(reply, list) or len(reply) != 3:
        raise redis.RedisError(f"feature view {view!r}: unexpected publish script reply {reply!r}")
    written, older, expired = (int(x) for x in reply)
    return PublishResult(view, written, older, expired)


def _pack_evalsha(
    connection: redis.connection.AbstractConnection,
    keys: list[bytes],
    args: list[bytes | str | int],
) -> list[bytes]:
    """RESP of one EVALSHA call; with hiredis, packed in C straight from our bytes.

    redis-py's own packer first re-checks every argument in a Python generator, which for
    ~500k arguments per 100k-entity publish is a noticeable share of the client's time.
    """
    if _hiredis_pack is not None:
        return [_hiredis_pack((b"EVALSHA", PUBLISH_SHA, len(keys), *keys, *args))]
    return connection.pack_command("EVALSHA", PUBLISH_SHA, len(keys), *keys, *args)  # type: ignore[no-any-return]


def _send_pipelined(
    connection: redis.connection.AbstractConnection,
    snapshot: EncodedSnapshot,
    batches: Sequence[range | list[int]],
    window: int,
    progress: _Progress,
) -> tuple[PublishResult, list[range | list[int]]]:
    """Stream script calls on one connection with up to `window` replies outstanding.

    redis-py's Pipeline packs every command before sending the first, then waits, so Python's
    packing and the server's Lua run one after the other. Here the server executes call k
    while Python packs call k+1, so the slower of the two sets the pace, not their sum.
    Returns the counts and the batches Redis refused without running them (NOSCRIPT, or on a
    cluster MOVED/ASK/TRYAGAIN while slots migrate).
    """
    result = PublishResult(snapshot.view)
    refused: list[range | list[int]] = []
    in_flight: deque[range | list[int]] = deque()

    def collect() -> None:
        nonlocal result
        rows = in_flight.popleft()
        try:
            reply = connection.read_response()
        except REFUSED:
            refused.append(rows)
        else:
            counts = _parse_counts(snapshot.view, reply)
            result = result + counts
            progress.acknowledged += counts.total

    for index, rows in enumerate(batches):
        keys, args = _script_arguments(snapshot, rows)
        packed = _pack_evalsha(connection, keys, args)
        # A health-check PING would read a reply meant for an outstanding call.
        connection.send_packed_command(packed, check_health=index == 0)
        in_flight.append(rows)
        if len(in_flight) > window:
            collect()
    while in_flight:
        collect()
    return result, refused


def send_snapshot(
    client: redis.Redis,
    snapshot: EncodedSnapshot,
    *,
    batch_size: int | None = None,
    batches_per_pipeline: int | None = None,
) -> PublishResult:
    """Run the publish script over an encoded snapshot, pipelined.

    The script is loaded once per server up front; if Redis answers NOSCRIPT later (restarted,
    failed over, SCRIPT FLUSH), it is loaded again and only the calls that were refused are
    re-sent: a refused EVALSHA ran nothing, so nothing is applied twice (and applying twice
    would be harmless anyway, an equal timestamp rewrites the same values). On a cluster, calls
    refused with MOVED/ASK are re-planned after a topology refresh (`transport.send_routed`).

    A connection error is not retried here: it becomes an `OnlineStoreUnavailableError`
    naming the view, the (redacted) target and how many entities were acknowledged, and the
    caller re-runs the publish, which is idempotent. (The publish asset's Dagster retry policy
    does that, with backoff.)
    """
    # Defaults are looked up per call, so a test can shrink them to make one publish span many
    # round trips (and be cut between them).
    batch_size = DEFAULT_BATCH_SIZE if batch_size is None else batch_size
    window = max(1, DEFAULT_BATCHES_PER_PIPELINE if batches_per_pipeline is None else batches_per_pipeline)
    if not len(snapshot):
        return PublishResult(snapshot.view)
    planned = plan_batches(snapshot.keys, batch_size, by_slot=is_cluster_client(client))
    progress = _Progress()
    result = PublishResult(snapshot.view)

    def send(node: redis.Redis, batches: Sequence[range | list[int]]) -> list[range | list[int]]:
        nonlocal result
        sha = node.script_load(PUBLISH_LUA)
        if sha not in (PUBLISH_SHA, PUBLISH_SHA.encode()):
            raise redis.RedisError(f"SCRIPT LOAD returned sha {sha!r}, expected {PUBLISH_SHA}")
        partial, refused = on_connection(
            node, lambda connection: _send_pipelined(connection, snapshot, batches, window, progress)
        )
        result = result + partial
        return refused

    try:
        send_routed(
            client, planned, key_of=lambda rows: snapshot.keys[rows[0]], send=send,
            what=f"feature view {snapshot.view!r}: publish",
        )
    except (redis.ConnectionError, redis.TimeoutError) as error:
        password = client_password(client)
        raise unavailable(
            error,
            what=f"feature view {snapshot.view!r}: publishing {len(snapshot)} entities",
            target=client_target(client),
            password=password,
            consequence=f"{progress.acknowledged} of {len(snapshot)} entities were acknowledged "
            "before that; every entity is either fully old or fully new, and re-running the "
            "publish completes it",
        ) from safe_cause(error, password)
    return result


def latest_per_entity(view: FeatureView, features: pl.DataFrame) -> pl.DataFrame:
    """Each entity's newest snapshot in the range read (what the online store should serve)."""
    keys = list(view.entity_keys)
    return (
        features.sort(EVENT_TIMESTAMP, *keys)
        .group_by(keys, maintain_order=True)
        .last()
        .select(*keys, EVENT_TIMESTAMP, *view.feature_names)
    )


def publish(
    client: redis.Redis,
    table: OnlineTable,
    frame: pl.DataFrame,
    *,
    batch_size: int | None = None,
    batches_per_pipeline: int | None = None,
) -> PublishResult:
    """Publish one snapshot (one row per entity) of a feature view; see the module docstring.

    Columns other than the entity keys, `event_timestamp` and the table's features are ignored.
    Returns how many entities were written, skipped as older than what Redis holds, and skipped
    because their TTL had already run out. `batch_size` and `batches_per_pipeline` default to
    `DEFAULT_BATCH_SIZE` and `DEFAULT_BATCHES_PER_PIPELINE`. Raises `OnlineStoreUnavailableError`
    (a `redis.ConnectionError`) when Redis cannot be reached or goes away mid-way.
    """
    snapshot = encode_snapshot(frame, table)
    return send_snapshot(client, snapshot, batch_size=batch_size, batches_per_pipeline=batches_per_pipeline)
