"""The stream consumer: reads a raw table's events in a consumer group, judges them, folds them into tiles.

One batch (`run_once`):
1. entries: this consumer's own pending entries first (after a restart under the same name),
   then entries another consumer left pending longer than `claim_idle_ms` (XAUTOCLAIM: a consumer
   killed mid-batch), then new ones (XREADGROUP `>`);
2. each event is decoded against its table's contract and judged by the raw rules
   (streaming/validation.py); a rejected one is dead-lettered with its table, rule, event id and
   reason, never dropped; an event of a forgotten entity (`StreamKeys.forgotten`) is dropped by
   the `entity_forgotten` rule and counted, with neither its payload nor its event id kept;
3. the entries are applied in chunks of `chunk`, one atomic script call a chunk
   (streaming/scripts.py), each entry keyed by its entry id and its event id, so a retried entry
   changes nothing and a re-delivered event is counted once; every tile write renews the tile's
   retention (`StreamingSpec.retention`);
4. only then are the entries acknowledged (XACK).
Killed anywhere in between, the entries stay pending and the next run finishes them: no event is
lost, none counted twice.

A burst is absorbed by the stream itself: producers append at memory speed, and the consumer
reads at most `batch_size` entries per batch, so a burst waits in Redis (bounded by memory or
the producer's `max_length`) instead of in this process.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import orjson
import redis

from feature_pipelines.features.spec import FeatureView
from feature_pipelines.streaming.defaults import DEFAULT_BATCH_SIZE, DEFAULT_GROUP
from feature_pipelines.streaming.events import (
    EVENT_ID,
    PAYLOAD,
    StreamEventError,
    contract_problems,
    decode_payload,
    rows_frame,
    stream_table,
)
from feature_pipelines.streaming.keys import DEFAULT_KEYS, StreamKeys, entity_text
from feature_pipelines.streaming.scripts import APPLY_CHUNK
from feature_pipelines.streaming.tiles import TilePlan
from feature_pipelines.streaming.validation import judge_events

FORGOTTEN_RULE = "entity_forgotten"  # the rule a forgotten entity's event is dropped by (counted, nothing kept)
# An event's values are hashed as their JSON with sorted keys (orjson: the standard library's text
# for ASCII strings and finite floats, at a tenth of its cost), so a re-delivery is recognised
# whatever its producer's key order.
_SORTED = orjson.OPT_SORT_KEYS


class StreamConsumerError(RuntimeError):
    """The consumer cannot run: no streaming view reads the table, or Redis refused an update."""


@dataclass(frozen=True)
class ConsumerHooks:
    """Test seams: called after a batch is read (entry ids) and after each applied chunk (entry ids)."""

    after_read: Callable[[list[str]], None] | None = None
    after_chunk: Callable[[list[str]], None] | None = None


@dataclass
class BatchReport:
    """What one batch did: entries read (by origin), and the outcome of each."""

    own_pending: int = 0
    claimed: int = 0
    new: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)

    @property
    def entries(self) -> int:
        return self.own_pending + self.claimed + self.new


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True)
class _Entry:
    entry_id: str
    event_id: str
    payload: str


_Item = tuple[list[str], dict[str, Any]]  # an entry's own keys, and its JSON for the chunk script


class StreamConsumer:
    """A consumer of one raw table's stream for the streaming views that read it."""

    def __init__(
        self,
        client: redis.Redis,
        views: Sequence[FeatureView],
        *,
        table: str,
        name: str = "consumer-1",
        group: str = DEFAULT_GROUP,
        keys: StreamKeys = DEFAULT_KEYS,
        batch_size: int = DEFAULT_BATCH_SIZE,
        block_ms: int = 1000,
        claim_idle_ms: int = 30_000,
        chunk: int = 200,
        marker_ttl: timedelta = timedelta(days=7),
        known_keys: Mapping[str, frozenset[str]] | None = None,
        hooks: ConsumerHooks | None = None,
    ) -> None:
        self.client, self.table, self.name, self.group, self.keys = client, stream_table(table), name, group, keys
        chosen = [v for v in views if v.streaming is not None and v.source.asset == table]
        if not chosen:
            raise StreamConsumerError(
                f"no streaming view reads table {table!r} (views given: {[v.name for v in views]})"
            )
        self.plans = [TilePlan.of(view, self.table.schema) for view in chosen]
        self.batch_size, self.block_ms, self.claim_idle_ms, self.chunk = batch_size, block_ms, claim_idle_ms, chunk
        self.marker_ttl_ms = int(marker_ttl.total_seconds() * 1000)
        self.known_keys, self.hooks = known_keys, hooks or ConsumerHooks()
        self._typed_columns = sorted({c for p in self.plans for c in (*p.view.entity_keys, *p.columns)})
        # Every join key of the catalog this table holds: a forgotten entity's events are dropped whole,
        # as the raw assets leave its rows out (privacy/forget.py).
        self._entity_columns = sorted({k for v in views for k in v.entity_keys if k in self.table.schema})
        self._apply = client.register_script(APPLY_CHUNK)
        self._constants = json.dumps({
            "table": self.table.name, "redelivered_rule": self.table.redelivered_rule,
            "conflict_rule": self.table.conflict_rule,
            "views": [{"name": p.view.name, "retention_ms": str(p.retention_ms),
                       "lateness_us": str(int(p.view.streaming.max_lateness.total_seconds() * 1_000_000))}  # type: ignore[union-attr]
                      for p in self.plans],
        })
        self._own_pending_done = False
        self.ensure_group()

    @property
    def stream(self) -> str:
        return self.keys.events(self.table.name)

    def ensure_group(self) -> None:
        """Create the consumer group (from the stream's start) unless it exists."""
        try:
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    def _read(self, report: BatchReport) -> list[_Entry]:
        raw: list[Any] = []
        if not self._own_pending_done:
            own = self.client.xreadgroup(self.group, self.name, {self.stream: "0"}, count=self.batch_size)
            raw = own[0][1] if own else []
            # A pending entry the stream has since trimmed comes back without fields: nothing is left to apply.
            trimmed = [entry_id for entry_id, fields in raw if not fields]
            if trimmed:
                self.client.xack(self.stream, self.group, *trimmed)
                report.outcomes["trimmed"] = len(trimmed)
            raw = [entry for entry in raw if entry[1]]
            report.own_pending = len(raw)
            self._own_pending_done = not raw
        if not raw:
            claimed = self.client.xautoclaim(self.stream, self.group, self.name, self.claim_idle_ms, "0-0", count=self.batch_size)
            raw = [entry for entry in claimed[1] if entry[1]]
            if len(claimed) > 2 and claimed[2]:  # pending entries the stream trimmed: XAUTOCLAIM already removed them from the PEL
                report.outcomes["trimmed"] = report.outcomes.get("trimmed", 0) + len(claimed[2])
            report.claimed = len(raw)
        if not raw:
            new = self.client.xreadgroup(self.group, self.name, {self.stream: ">"}, count=self.batch_size, block=self.block_ms)
            raw = new[0][1] if new else []
            report.new = len(raw)
        entries = []
        for entry_id, fields in raw:
            decoded = {_text(k): _text(v) for k, v in fields.items()}
            entries.append(_Entry(_text(entry_id), decoded.get(EVENT_ID, ""), decoded.get(PAYLOAD, "")))
        return entries

    def run_once(self) -> BatchReport:
        """Read, judge, apply and acknowledge one batch; returns what it did (empty when nothing came)."""
        report, entries, items = self._prepare()
        if entries:
            self._apply_and_ack(report, entries, items)
        return report

    def _prepare(self) -> tuple[BatchReport, list[_Entry], list[_Item]]:
        """Read a batch and judge it (no effect in Redis yet)."""
        report = BatchReport()
        entries = self._read(report)
        if not entries:
            return report, entries, []
        if self.hooks.after_read:
            self.hooks.after_read([e.entry_id for e in entries])
        return report, entries, self._items(entries)

    def _apply_and_ack(self, report: BatchReport, entries: list[_Entry], items: list[_Item]) -> BatchReport:
        """Apply a judged batch chunk by chunk, then acknowledge it."""
        for start in range(0, len(entries), self.chunk):
            part = slice(start, start + self.chunk)
            for outcome in self._apply_chunk(items[part]):
                key = _text(outcome)
                report.outcomes[key] = report.outcomes.get(key, 0) + 1
            if self.hooks.after_chunk:
                self.hooks.after_chunk([e.entry_id for e in entries[part]])
        self.client.xack(self.stream, self.group, *[e.entry_id for e in entries])
        return report

    def run(self, *, stop: threading.Event | None = None, max_batches: int | None = None,
            on_batch: Callable[[BatchReport], None] = lambda _report: None) -> int:
        """Run batches until `stop` is set or `max_batches` ran; returns the entries processed.

        Two batches overlap: while Redis applies one (its scripts run on Redis's core; a worker
        thread waits for them), the next is read and judged here. Batches are still applied one
        after the other, in stream order, and each is acknowledged after its effect: a kill loses
        nothing (both batches stay pending). This consumer's own pending entries, read first after
        a restart, are finished before anything else is read.
        """
        done, batches = 0, 0
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"apply-{self.name}") as applier:
            applying: Future[BatchReport] | None = None
            try:
                while (stop is None or not stop.is_set()) and (max_batches is None or batches < max_batches):
                    if applying is not None and not self._own_pending_done:
                        done += self._finished(applying, on_batch)  # own pending entries are read again until acked
                        applying = None
                    report, entries, items = self._prepare()
                    if applying is not None:
                        done += self._finished(applying, on_batch)
                        applying = None
                    if entries:
                        applying = applier.submit(self._apply_and_ack, report, entries, items)
                    else:
                        on_batch(report)
                    batches += 1
            finally:
                if applying is not None:
                    done += self._finished(applying, on_batch)
        return done

    @staticmethod
    def _finished(applying: Future[BatchReport], on_batch: Callable[[BatchReport], None]) -> int:
        report = applying.result()  # a failed batch raises here: its entries stay pending
        on_batch(report)
        return report.entries

    def _items(self, entries: list[_Entry]) -> list[_Item]:
        """Each entry's effect (a rejection or an application), in stream order."""
        items: dict[int, _Item] = {}
        rows: list[dict[str, Any]] = []
        positions: list[int] = []
        for index, entry in enumerate(entries):
            try:
                row = decode_payload(entry.payload)
            except (ValueError, StreamEventError) as error:
                items[index] = self._rejection(entry, self.table.schema_rule, "fail", f"payload is not a JSON object: {error}")
                continue
            problems = contract_problems(self.table, row)
            if problems:
                reason = f"table {self.table.name!r}: the event breaks the contract: {'; '.join(problems)}"
                items[index] = self._rejection(entry, self.table.schema_rule, "fail", reason)
                continue
            rows.append(row)
            positions.append(index)
        forgotten = self._forgotten(rows)
        if forgotten:
            for row_index in sorted(forgotten, reverse=True):
                entry = entries[positions[row_index]]
                # Nothing of the event is kept: no payload, no event id (its record key).
                items[positions[row_index]] = self._rejection(
                    _Entry(entry.entry_id, "", ""), FORGOTTEN_RULE, "drop", forgotten[row_index])
                del rows[row_index], positions[row_index]
        frame = rows_frame(self.table, rows)
        rejected = {r.row: r for r in judge_events(self.table, frame, known_keys=self.known_keys)}
        typed = frame.select(self._typed_columns).to_dicts()  # only what the views read: datetimes are costly
        for row_index, index in enumerate(positions):
            entry = entries[index]
            if row_index in rejected:
                r = rejected[row_index]
                items[index] = self._rejection(entry, r.rule, r.action, r.reason)
            else:
                items[index] = self._application(entry, rows[row_index], typed[row_index])
        return [items[i] for i in range(len(entries))]

    def _forgotten(self, rows: list[dict[str, Any]]) -> dict[int, str]:
        """The rows whose entity was forgotten (by position), each with the reason (key, not value)."""
        pipe = self.client.pipeline(transaction=False)
        asked = []
        for column in self._entity_columns:
            values = sorted({str(row[column]) for row in rows if row.get(column) is not None})
            if values:
                pipe.smismember(self.keys.forgotten(column), values)
                asked.append((column, values))
        if not asked:
            return {}
        gone = {(column, value) for (column, values), flags in zip(asked, pipe.execute()) for value, flag in zip(values, flags) if flag}
        if not gone:
            return {}
        return {i: f"entity forgotten: its {column} is in the deletion ledger" for i, row in enumerate(rows)
                for column in self._entity_columns if (column, str(row.get(column))) in gone}

    def _apply_chunk(self, items: list[_Item]) -> list[bytes | str]:
        """One script call for a chunk of entries (scripts.py); each entry's outcome, in order."""
        table = self.table.name
        keys = [self.keys.watermark(), self.keys.dead_letters(table), self.keys.stats(table)]
        encoded = []
        for entry_keys, entry in items:
            entry["k"] = len(keys) + 1  # Lua's 1-based index of the entry's first key
            keys += entry_keys
            encoded.append(entry)
        args = [self.marker_ttl_ms, self._constants, orjson.dumps(encoded)]
        return self._apply(keys=keys, args=args, client=self.client)  # type: ignore[no-any-return]

    def _rejection(self, entry: _Entry, rule: str, action: str, reason: str) -> _Item:
        keys = [self.keys.entry_done(self.table.name, entry.entry_id)]
        return keys, {"e": entry.entry_id, "id": entry.event_id, "p": entry.payload, "r": [rule, action, reason]}

    def _application(self, entry: _Entry, row: Mapping[str, Any], typed: Mapping[str, Any]) -> _Item:
        table = self.table.name
        known_at = int(row[self.table.time_column])
        milliseconds, sequence = (int(p) for p in entry.entry_id.split("-"))
        order = (known_at, milliseconds, sequence)
        value_hash = hashlib.sha256(orjson.dumps(row, option=_SORTED)).hexdigest()
        keys = [self.keys.entry_done(table, entry.entry_id), self.keys.event_seen(table, entry.event_id)]
        views = []
        for number, plan in enumerate(self.plans, start=1):
            entity = [typed[k] for k in plan.view.entity_keys]
            if any(v is None for v in entity):
                continue  # no entity for this view: the batch snapshots drop such events too
            values = {c: typed[c] for c in plan.columns}
            tile = plan.tile_of(known_at)
            text = entity_text(entity)
            keys += [self.keys.tile(plan.view.name, text, tile), self.keys.tile_events(plan.view.name, text, tile)]
            views.append([number, plan.ops(values, order), orjson.dumps([list(order), values]).decode()])
        return keys, {"e": entry.entry_id, "id": entry.event_id, "p": entry.payload, "h": value_hash,
                      "t": str(known_at), "v": views}
