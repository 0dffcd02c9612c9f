"""The standalone stream consumer: one consumer per streaming table, run until told to stop, with
progress and a summary read from Redis (what `feature-pipelines stream` prints); scaled out, that
many consumer processes of one group (`feature-pipelines stream --consumers N`).

Counts come from the tables' stats hashes (`StreamKeys.stats`), which the consumer's scripts
update atomically with each entry's effect: a summary's "applied" and "dead-lettered by rule" are
what this run added to them, whichever consumer of the group did the work.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping, MutableSequence, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis

from feature_pipelines.features.spec import FeatureView
from feature_pipelines.streaming.consumer import BatchReport, StreamConsumer
from feature_pipelines.streaming.defaults import DEFAULT_BATCH_SIZE, DEFAULT_GROUP
from feature_pipelines.streaming.keys import StreamKeys

APPLIED = "applied"


class StreamRunError(RuntimeError):
    """Nothing to consume (no view of the catalog declares streaming), or a consumer process failed."""


class _Stop(Protocol):
    """A threading or multiprocessing Event."""

    def is_set(self) -> bool: ...
    def set(self) -> None: ...
    def wait(self, timeout: float | None = None) -> bool: ...


def streaming_tables(views: Mapping[str, FeatureView]) -> list[str]:
    """The raw tables some streaming view reads, sorted."""
    return sorted({view.source.asset for view in views.values() if view.streaming is not None})


@dataclass(frozen=True)
class StreamLag:
    """How far the group is behind one table's stream: entries not yet delivered, the age of the
    oldest of them (by its entry id's clock), and entries delivered but not yet acknowledged."""

    undelivered: int
    oldest_seconds: float
    pending: int


@dataclass
class StreamProgress:
    """Counts this run added (entries read by this process; applied and dead-lettered by rule, from
    the tables' stats) and the lag now. An event without an entity for any view is read and
    acknowledged but neither applied nor dead-lettered, as the batch snapshots drop it."""

    seconds: float
    entries: int
    applied: int
    dead_letters: dict[str, int] = field(default_factory=dict)
    lag: dict[str, StreamLag] = field(default_factory=dict)

    @property
    def dead_lettered(self) -> int:
        return sum(self.dead_letters.values())

    def line(self) -> str:
        """One progress line."""
        lag = ", ".join(f"{t} {v.undelivered} behind ({v.oldest_seconds:.2f} s), {v.pending} pending"
                        for t, v in self.lag.items())
        rate = self.applied / self.seconds if self.seconds > 0 else 0.0
        return (f"stream {self.seconds:7.1f} s: {self.entries} entries read, {self.applied} applied "
                f"({rate:.0f}/s), {self.dead_lettered} dead-lettered; lag: {lag}")

    def summary(self) -> str:
        """The summary printed at exit."""
        rules = ", ".join(f"{rule}: {count}" for rule, count in sorted(self.dead_letters.items())) or "none"
        lag = ", ".join(f"{t}: {v.undelivered} entries ({v.oldest_seconds:.2f} s), {v.pending} pending"
                        for t, v in self.lag.items())
        return (f"stream stopped after {self.seconds:.1f} s: {self.entries} entries read, {self.applied} events applied, "
                f"{self.dead_lettered} dead-lettered (by rule: {rules}); lag at exit: {lag}")


def stream_lag(client: redis.Redis, keys: StreamKeys, table: str, *, group: str = DEFAULT_GROUP) -> StreamLag:
    """The group's lag on a table's stream (no group yet: everything is undelivered)."""
    stream = keys.events(table)
    groups = {g["name"].decode() if isinstance(g["name"], bytes) else g["name"]: g
              for g in client.xinfo_groups(stream)} if client.exists(stream) else {}
    info = groups.get(group)
    last = (info["last-delivered-id"] if info else b"0-0")
    last = last.decode() if isinstance(last, bytes) else str(last)
    following = client.xrange(stream, min=f"({last}", count=1) if client.exists(stream) else []
    if not following:
        return StreamLag(0, 0.0, int(info["pending"]) if info else 0)
    first_id = following[0][0].decode() if isinstance(following[0][0], bytes) else following[0][0]
    oldest = max(0.0, time.time() - int(first_id.split("-")[0]) / 1000)
    undelivered = info.get("lag") if info else None
    if undelivered is None:  # Redis < 7 (or an unknowable lag after trimming): count them
        undelivered = len(client.xrange(stream, min=f"({last}"))
    return StreamLag(int(undelivered), oldest, int(info["pending"]) if info else 0)


def _stats(client: redis.Redis, keys: StreamKeys, table: str) -> dict[str, int]:
    return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in client.hgetall(keys.stats(table)).items()}


def _consume(
    client_factory: Callable[[], redis.Redis], views: Mapping[str, FeatureView], keys: StreamKeys, table: str,
    name: str, batch_size: int, block_ms: int, stop: _Stop, entries: MutableSequence[int], index: int,
    errors: list[Exception],
) -> None:
    """One table's consumer, batch after batch until `stop`; a failure stops the whole run."""
    consumer = StreamConsumer(client_factory(), list(views.values()), table=table, name=name, keys=keys,
                              batch_size=batch_size, block_ms=block_ms)
    try:
        def count(report: BatchReport) -> None:
            entries[index] += report.entries

        consumer.run(stop=stop, on_batch=count)  # type: ignore[arg-type]
    except Exception as error:  # noqa: BLE001 - any failure is handed to the caller, which raises it
        errors.append(error)
        stop.set()
    finally:
        consumer.client.close()


def _consume_tables(
    client_factory: Callable[[], redis.Redis], views: Mapping[str, FeatureView], keys: StreamKeys, tables: Sequence[str],
    name: str, batch_size: int, block_ms: int, stop: _Stop, entries: MutableSequence[int],
) -> tuple[list[threading.Thread], list[Exception]]:
    """Start one thread a table (entries[i] counts table i's entries); returns the threads and the
    list their failures are appended to."""
    errors: list[Exception] = []
    threads = [threading.Thread(target=_consume, name=f"stream-{t}", daemon=True,
                                args=(client_factory, views, keys, t, name, batch_size, block_ms, stop, entries, i, errors))
               for i, t in enumerate(tables)]
    for thread in threads:
        thread.start()
    return threads, errors


def _consumer_process(
    client_factory: Callable[[], redis.Redis], views: Mapping[str, FeatureView], keys: StreamKeys, tables: Sequence[str],
    name: str, batch_size: int, block_ms: int, stop: _Stop, entries: MutableSequence[int], parent: int,
) -> None:
    """A consumer process of the group: its tables' threads until the parent's `stop` (Ctrl-C is the
    parent's to handle) or until the parent is gone; exits non-zero with the traceback on a failure."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threads, errors = _consume_tables(client_factory, views, keys, tables, name, batch_size, block_ms, stop, entries)
    while not stop.wait(1.0):
        if os.getppid() != parent:  # the parent died without stopping us: stop too (entries stay pending)
            stop.set()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def run_stream(
    client_factory: Callable[[], redis.Redis],
    views: Mapping[str, FeatureView],
    *,
    keys: StreamKeys,
    stop: threading.Event,
    name: str = "consumer-1",
    processes: int = 1,
    progress_every: float = 5.0,
    on_progress: Callable[[StreamProgress], None] = lambda _progress: None,
    on_ready: Callable[[Sequence[str]], None] = lambda _tables: None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    block_ms: int = 500,
) -> StreamProgress:
    """Consume every streaming table (one thread and client each) until `stop` is set; call
    `on_progress` every `progress_every` seconds; return what the run did.

    With `processes` > 1 the group is scaled out: that many consumer processes (named
    `<name>-1` ...), each with a thread a table, share the group's entries (Redis hands each entry to
    one consumer), so the Python work of judging and folding runs on that many cores; this process
    only reports. The consumers apply their batches side by side, so a table's events are applied
    in stream order only up to the batches in flight: fine for a live stream (a batch spans seconds
    of event time, far inside a view's `max_lateness`), not for an accelerated replay whose batches
    span more event time than that (its events would be dead-lettered as late): replay with one
    process. `client_factory` must then be picklable (a bound method of a `RedisTarget`, a
    `functools.partial` of `redis.Redis.from_url`).

    A consumer error stops every consumer and is raised: the unacknowledged entries stay pending
    and the next run (this name, or another consumer after `claim_idle_ms`) finishes them.
    """
    if processes < 1:
        raise StreamRunError(f"processes must be >= 1, got {processes}")
    tables = streaming_tables(views)
    if not tables:
        raise StreamRunError("no feature view declares streaming: nothing to consume")
    watcher = client_factory()
    before = {table: _stats(watcher, keys, table) for table in tables}
    started = time.monotonic()
    if processes == 1:
        entries: Any = [0] * len(tables)
        threads, errors = _consume_tables(client_factory, views, keys, tables, name, batch_size, block_ms, stop, entries)
        group_stop: _Stop = stop
        children: list[Any] = []
    else:
        context = multiprocessing.get_context("spawn")  # no fork of a process holding threads and sockets
        group_stop, threads, errors = context.Event(), [], []
        entries = [context.Array("q", len(tables)) for _ in range(processes)]
        children = [context.Process(target=_consumer_process, name=f"{name}-{i + 1}", daemon=False, args=(
            client_factory, views, keys, tables, f"{name}-{i + 1}", batch_size, block_ms, group_stop, entries[i], os.getpid()))
            for i in range(processes)]  # fmt: skip
        for child in children:
            child.start()
    on_ready(tables)

    def read_entries() -> int:
        return sum(entries) if processes == 1 else sum(sum(counts[:]) for counts in entries)

    def progress() -> StreamProgress:
        report = StreamProgress(time.monotonic() - started, read_entries(), 0)
        for table in tables:
            added = {k: v - before[table].get(k, 0) for k, v in _stats(watcher, keys, table).items()}
            report.applied += added.pop(APPLIED, 0)
            for rule, count in added.items():
                if count:
                    report.dead_letters[rule] = report.dead_letters.get(rule, 0) + count
            report.lag[table] = stream_lag(watcher, keys, table)
        return report

    while not stop.wait(progress_every):
        if group_stop.is_set() and group_stop is not stop:  # a consumer process failed
            stop.set()
            break
        on_progress(progress())
    group_stop.set()
    for thread in threads:
        thread.join()
    for child in children:
        child.join()
        if child.exitcode != 0:
            errors.append(StreamRunError(f"consumer process {child.name} exited with code {child.exitcode} (its traceback is on stderr)"))
    if errors:
        raise errors[0]
    final = progress()
    watcher.close()
    return final
