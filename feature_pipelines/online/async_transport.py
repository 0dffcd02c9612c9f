"""How the serving path reads Redis without a worker thread: one pipelined asyncio connection per event loop.

The blocking redis-py read runs in a worker thread, and on the feature server that thread hop
(a queue put, a wake-up, a future resolved across threads) cost more CPU than the read itself.
Here the request's coroutine writes its pipeline of commands (already packed RESP, see
`read.pack_hmgets`) on a connection shared by every request of the event loop and awaits its
replies. Redis answers a connection's commands in the order they were sent, so requests can be
in flight on one connection at once: each waits for its own `count` replies, in turn; hiredis
parses them.

Scope, on purpose small: a plain TCP server (`redis.connection.Connection`), RESP2, optional
AUTH and SELECT. `AsyncReader.for_client` says which clients that is; every other
configuration (TLS, unix sockets, Redis Cluster, a credential provider, RESP3) keeps the
redis-py path. Failures are reported as `AsyncReadError` so the caller can hand the request to
that path, which then gives the error its usual answer; this module decides no HTTP status.

A dropped connection is retried once on a fresh one (reads are idempotent), as `read.py` does.
A caller whose deadline passes calls `abandon()`: a Redis that stopped answering leaves replies
owed on the wire, and the connection is dropped rather than trusted with the next request.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import hiredis
import redis
import redis.connection

from feature_pipelines.online.keys import is_cluster_client

# A read is idempotent, so a dropped connection is retried once on a fresh one (as read.py).
CONNECTION_ATTEMPTS = 2


class AsyncReadError(Exception):
    """The async read could not be done (connection refused or lost, an error reply, a protocol
    error); the caller falls back to the blocking path, which answers it as usual."""


class ConnectionLostError(AsyncReadError):
    """The connection closed before every reply owed on it arrived."""


@dataclass(frozen=True)
class RedisAddress:
    """Where and how to connect: a plain TCP Redis server with optional credentials and database."""

    host: str
    port: int
    db: int
    username: str | None
    password: str | None
    connect_timeout_s: float | None


@dataclass(slots=True)
class _Waiter:
    future: asyncio.Future[list[Any]]
    count: int
    replies: list[Any] = field(default_factory=list)


class _RespProtocol(asyncio.Protocol):
    """One connection: writes packed commands, hands each waiter its replies in send order."""

    def __init__(self) -> None:
        self._reader = hiredis.Reader()
        self._waiting: deque[_Waiter] = deque()
        self._transport: asyncio.Transport | None = None
        self._unsent: list[bytes] = []
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        reader, waiting = self._reader, self._waiting
        try:
            reader.feed(data)
            reply = reader.gets()
            while reply is not False:
                if not waiting:
                    raise hiredis.ProtocolError("a reply arrived that no command is waiting for")
                waiter = waiting[0]
                waiter.replies.append(reply)
                if len(waiter.replies) == waiter.count:
                    waiting.popleft()
                    if not waiter.future.done():  # a caller past its deadline no longer waits
                        waiter.future.set_result(waiter.replies)
                reply = reader.gets()
        except hiredis.ProtocolError as error:
            self.abort(ConnectionLostError(f"Redis protocol error: {error}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail_all(ConnectionLostError(f"connection to Redis lost: {exc or 'closed by the server'}"))

    def _fail_all(self, error: AsyncReadError) -> None:
        self.closed = True
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.future.done():
                waiter.future.set_exception(error)

    def call(self, payload: bytes, count: int) -> asyncio.Future[list[Any]]:
        """Send `count` packed commands; the future gets their `count` replies, in order."""
        if self.closed or self._transport is None:
            raise ConnectionLostError("connection to Redis is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        self._waiting.append(_Waiter(future, count))
        # Requests that start in the same turn of the event loop share one write (one syscall):
        # under load, several requests arrive per turn, and a send per request cost ~10 us each.
        if not self._unsent:
            loop.call_soon(self._write)
        self._unsent.append(payload)
        return future

    def _write(self) -> None:
        unsent, self._unsent = self._unsent, []
        if self._transport is not None and not self.closed:
            self._transport.write(unsent[0] if len(unsent) == 1 else b"".join(unsent))

    def abort(self, error: AsyncReadError | None = None) -> None:
        """Drop the connection now; whoever still waits on it gets `error`."""
        self._fail_all(error or ConnectionLostError("connection to Redis abandoned"))
        if self._transport is not None:
            self._transport.abort()


class AsyncReader:
    """Pipelined reads on one connection per event loop, opened on first use."""

    def __init__(self, address: RedisAddress) -> None:
        self.address = address
        self._protocol: _RespProtocol | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connecting: asyncio.Future[_RespProtocol] | None = None

    @classmethod
    def for_client(cls, client: redis.Redis) -> AsyncReader | None:
        """A reader for the server `client` talks to, or None when its configuration is outside
        this module's scope (see the module docstring) and the blocking path must serve."""
        if is_cluster_client(client):
            return None
        pool = getattr(client, "connection_pool", None)
        if pool is None or pool.connection_class is not redis.connection.Connection:
            return None
        kwargs = pool.connection_kwargs
        if any(kwargs.get(name) is not None for name in ("credential_provider", "redis_connect_func", "client_name")):
            return None
        if kwargs.get("protocol") not in (None, 2, "2"):
            return None
        return cls(RedisAddress(
            host=str(kwargs.get("host", "localhost")),
            port=int(kwargs.get("port", 6379)),
            db=int(kwargs.get("db", 0) or 0),
            username=kwargs.get("username"),
            password=kwargs.get("password"),
            connect_timeout_s=kwargs.get("socket_connect_timeout"),
        ))

    async def pipeline(self, payload: bytes, count: int) -> list[Any]:
        """The replies to `count` packed commands (error replies as `hiredis.ReplyError` values).

        Raises:
            AsyncReadError: the server could not be reached, or the connection was lost twice.
        """
        for attempt in range(1, CONNECTION_ATTEMPTS + 1):
            protocol = self._protocol
            if protocol is None or protocol.closed or self._loop is not asyncio.get_running_loop():
                protocol = await self._connected()
            try:
                return await protocol.call(payload, count)
            except ConnectionLostError:
                if attempt == CONNECTION_ATTEMPTS:
                    raise
        raise AssertionError("unreachable: the last attempt returns or raises")

    def abandon(self) -> None:
        """Drop the current connection (a caller's deadline passed while replies were owed)."""
        protocol, self._protocol = self._protocol, None
        if protocol is not None and self._loop is asyncio.get_running_loop():
            protocol.abort()

    def close(self) -> None:
        """Close the connection, if any (at shutdown, from the loop that opened it)."""
        protocol, self._protocol = self._protocol, None
        if protocol is not None and not protocol.closed:
            try:
                protocol.abort()
            except RuntimeError:  # its event loop is already closed: the socket went with it
                pass

    async def _connected(self) -> _RespProtocol:
        """The loop's connection, opened once however many requests wait for it."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # A new event loop (a test client, a restarted server): the old connection is unusable.
            self._protocol, self._connecting, self._loop = None, None, loop
        if self._connecting is None or self._connecting.done():
            self._connecting = loop.create_future()
            connecting = self._connecting
            try:
                protocol = await self._open(loop)
            except BaseException as error:
                connecting.set_exception(error if isinstance(error, AsyncReadError) else AsyncReadError(str(error)))
                connecting.exception()  # retrieved: only the waiters below need it
                raise
            self._protocol = protocol
            connecting.set_result(protocol)
            return protocol
        return await asyncio.shield(self._connecting)

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _RespProtocol:
        address = self.address
        try:
            async with asyncio.timeout(address.connect_timeout_s):
                _, protocol = await loop.create_connection(_RespProtocol, address.host, address.port)
        except (OSError, TimeoutError) as error:
            raise AsyncReadError(f"cannot connect to Redis at {address.host}:{address.port}: {error}") from error
        setup = []
        if address.password is not None:
            setup.append(("AUTH", *([address.username] if address.username else []), address.password))
        if address.db:
            setup.append(("SELECT", str(address.db)))
        if setup:
            payload = b"".join(_pack(command) for command in setup)
            async with asyncio.timeout(address.connect_timeout_s):
                replies = await protocol.call(payload, len(setup))
            refused = [reply for reply in replies if isinstance(reply, hiredis.ReplyError)]
            if refused:
                protocol.abort()
                raise AsyncReadError(f"Redis refused the connection's setup: {refused[0]}")
        return protocol


def _pack(command: tuple[str, ...]) -> bytes:
    parts = [b"*%d\r\n" % len(command)]
    for argument in command:
        raw = argument.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(parts)
