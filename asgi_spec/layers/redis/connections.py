"""Connections to the Redis servers: one ``_Shard`` per server, its pools and clients.

Each shard has redis-py clients (sync, and one pair per event loop for asyncio),
plus ``_Conns``/``_AConns``: lean pools that the layer's hot paths (scripts, blocking
pops) check connections out of. Commands are written already packed (``_pack``).
Nothing here decides anything about messages; ``layer.py`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import select
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from asgi_spec.layers.redis.scripts import LIBRARY, Script

try:
    from redis._parsers.hiredis import NOT_ENOUGH_DATA as _NOT_ENOUGH_DATA
    from redis._parsers.hiredis import _AsyncHiredisParser, _HiredisParser
except ImportError:  # pragma: no cover - another redis-py: _read uses read_response
    _NOT_ENOUGH_DATA, _AsyncHiredisParser, _HiredisParser = object(), None, None
try:
    from hiredis import PushNotification as _PUSH
except ImportError:  # pragma: no cover - hiredis < 3.2 has no RESP3 push type
    class _PUSH:  # type: ignore[no-redef]
        """Never a reply: hiredis without push notifications."""

try:
    from hiredis import pack_command as _pack_command
except ImportError:  # pragma: no cover - redis[hiredis] is a dependency
    from redis.connection import PythonRespSerializer

    _SERIALIZER = PythonRespSerializer(6000, lambda value: (
        value if isinstance(value, bytes) else str(value).encode()))

    def _pack_command(args: tuple[Any, ...]) -> bytes:
        return b"".join(_SERIALIZER.pack(*args))


#: Longest single ``BLPOP`` (s); longer waits re-arm it (one command per slice).
BLOCK_SLICE = 10.0
#: Socket timeout of blocking connections: always longer than a ``BLPOP``.
BLOCK_SOCKET_TIMEOUT = BLOCK_SLICE + 10.0
#: Default retries of a command on connection errors, with exponential backoff.
DEFAULT_RETRY_ATTEMPTS = 3
RETRY_BASE = 0.05
RETRY_CAP = 1.0

_NETWORK_ERRORS = (RedisConnectionError, RedisTimeoutError)
Popped = tuple["_Shard", str, bytes | None]  # envelope None: a bell (a wake-up)


def _pack(*args: Any) -> list[bytes]:
    """One command in the Redis protocol, as ``send_packed_command`` takes it
    (hiredis's packer directly: redis-py's wrapper copies every argument)."""
    return [_pack_command(args)]


async def _asend(conn: Any, command: list[bytes]) -> None:
    """Write ``command`` on an asyncio connection, as ``send_packed_command`` does
    but without its ``asyncio.wait_for``.

    With a socket timeout (a blocking connection always has one), redis-py wraps
    every write in ``asyncio.wait_for``, which on Python 3.11 is a new task and two
    more turns of the event loop per command: about a third of the interface
    server's turns on an unloaded round trip. Here the bytes go to the connection's
    stream writer at once; only when the kernel did not take them all does the
    write wait for room, bounded by ``asyncio.timeout`` (no task). A timeout or an
    OS error drops the connection and raises redis-py's own
    ``TimeoutError``/``ConnectionError``. Where redis-py keeps no stream writer
    (another version), its public ``send_packed_command`` is used.
    """
    if not conn.is_connected:
        await conn.connect()
    writer = getattr(conn, "_writer", None)
    if not isinstance(writer, asyncio.StreamWriter):
        await conn.send_packed_command(command)
        return
    await conn.check_health()
    try:
        if writer.transport.is_closing():
            raise ConnectionResetError("the connection closed before the write")
        writer.writelines(command)
        if writer.transport.get_write_buffer_size():  # the kernel did not take it all
            async with asyncio.timeout(conn.socket_timeout or None):
                await writer.drain()
    except TimeoutError as exc:
        await conn.disconnect(nowait=True)
        raise RedisTimeoutError("Timeout writing to socket") from exc
    except OSError as exc:
        await conn.disconnect(nowait=True)
        raise RedisConnectionError(f"Error while writing to socket: {exc}") from exc
    except BaseException:  # cancelled mid-write: the command may still go out
        await conn.disconnect(nowait=True)
        raise


def _parsed(reader: Any) -> Any:
    """The next whole reply in hiredis's ``reader``, RESP3 pushes passed over (as
    redis-py's default handler does; the layer's connections neither subscribe nor
    track keys, so none comes), or ``_NOT_ENOUGH_DATA``. A connection error reply
    raises."""
    reply = reader.gets()
    while isinstance(reply, _PUSH):
        reply = reader.gets()
    if isinstance(reply, RedisConnectionError):
        raise reply
    return reply


def _read_error(conn: Any, exc: BaseException) -> BaseException:
    """What a failed read raises, as redis-py would: its ``TimeoutError`` or
    ``ConnectionError`` for a timeout or an OS error, else ``exc`` itself."""
    if isinstance(exc, TimeoutError):  # socket.timeout too
        return RedisTimeoutError(f"Timeout reading from {conn.host}:{conn.port}")
    if isinstance(exc, OSError):
        return RedisConnectionError(f"Error while reading from {conn.host}:{conn.port}: "
                                    f"{exc}")
    return exc


def _delivered(conn: Any, reply: Any, now: float) -> Any:
    """``reply`` as ``read_response`` returns it: an error reply raised (the connection
    stays usable), the health-check clock moved on."""
    if conn.health_check_interval:
        conn.next_health_check = now + conn.health_check_interval
    if isinstance(reply, ResponseError):
        raise reply
    return reply


async def _aread(conn: Any) -> Any:
    """One reply on an asyncio connection, as ``conn.read_response()`` gives it, but
    without its layers.

    redis-py wraps every reply in a timeout context, two coroutines and the parser's
    own loop (about 5% of the interface server's CPU on a plain HTTP request). Here
    hiredis's reader is asked first; only when it holds no whole reply does the read
    wait for bytes, bounded by the socket timeout. Outcomes as redis-py's: a reply
    error raises its ``ResponseError`` (the connection stays usable); a connection
    error reply, a timeout, the server closing or an OS error drops the connection
    and raises ``ConnectionError``/``TimeoutError``. A connection without hiredis's
    parser takes ``read_response``.
    """
    parser = getattr(conn, "_parser", None)
    if type(parser) is not _AsyncHiredisParser or not parser._connected:
        return await conn.read_response()
    reader = parser._reader
    try:
        while (reply := _parsed(reader)) is _NOT_ENOUGH_DATA:
            if conn.socket_timeout:
                async with asyncio.timeout(conn.socket_timeout):
                    data = await parser._stream.read(parser._read_size)
            else:  # no deadline: no timeout context (five calls) around the read
                data = await parser._stream.read(parser._read_size)
            if not data:
                raise RedisConnectionError("Connection closed by server.")
            reader.feed(data)
    except BaseException as exc:  # a cancel too: a reply may still come
        await conn.disconnect(nowait=True)
        error = _read_error(conn, exc)
        if error is exc:
            raise
        raise error from exc
    return _delivered(conn, reply, asyncio.get_running_loop().time())


def _astale(conn: Any) -> bool | None:
    """What ``await conn.can_read()`` tells of a connected asyncio connection -- unread
    bytes, or closed by the server: not fit to reuse -- read off hiredis's reader and
    the stream directly (redis-py takes two coroutines for it); ``None`` for a
    connection without hiredis's parser (ask ``can_read``)."""
    parser = getattr(conn, "_parser", None)
    if type(parser) is not _AsyncHiredisParser or not parser._connected:
        return None
    stream = parser._stream
    return bool(parser._reader.has_data() or stream._buffer or stream.at_eof()
                or stream.exception() is not None)


_HAS_POLL = hasattr(select, "poll")


def _stale(conn: Any) -> bool | None:
    """What ``conn.can_read()`` tells of a connected blocking connection -- unread
    bytes, or closed by the server (or reset): not fit to reuse -- from hiredis's
    reader and one ``poll`` of the socket, as redis-py does but without its five
    calls around it; ``None`` for a connection without hiredis's parser (ask
    ``can_read``)."""
    parser = getattr(conn, "_parser", None)
    if (type(parser) is not _HiredisParser or parser._reader is None or parser._sock is None
            or not _HAS_POLL):
        return None
    sock = parser._sock
    if parser._reader.has_data() or (hasattr(sock, "pending") and sock.pending()):
        return True  # (TLS: decrypted bytes held above the socket)
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))  # readable: bytes, or the end of a closed socket
    except (OSError, ValueError):  # (ValueError: closed meanwhile, no descriptor)
        return True


def _read(conn: Any) -> Any:
    """``_aread`` for blocking connections: one reply read from hiredis's reader and
    the socket directly (redis-py formats an error text for the host and walks two
    more layers on every reply), bounded by the socket's own timeout; the same
    outcomes. A connection without hiredis's parser takes ``read_response``.
    """
    parser = getattr(conn, "_parser", None)
    if type(parser) is not _HiredisParser or parser._reader is None or parser._sock is None:
        return conn.read_response()
    reader, sock, buffer = parser._reader, parser._sock, parser._buffer
    try:
        while (reply := _parsed(reader)) is _NOT_ENOUGH_DATA:
            size = sock.recv_into(buffer)
            if not size:
                raise RedisConnectionError("Connection closed by server.")
            reader.feed(buffer, 0, size)
    except BaseException as exc:
        conn.disconnect()
        error = _read_error(conn, exc)
        if error is exc:
            raise
        raise error from exc
    return _delivered(conn, reply, time.monotonic())


def _script_command(shard: _Shard, script: Script, args: list[Any], *,
                    source: bool = False) -> list[bytes]:
    """One call of ``script``: ``FCALL`` of its library function where the server
    has functions, else ``EVALSHA`` (``EVAL`` with ``source``, after ``NOSCRIPT``)."""
    if source:
        return _pack("EVAL", script.source, 0, *args)
    if shard.functions:
        return _pack("FCALL", script.function, 0, *args)
    return _pack("EVALSHA", script.sha, 0, *args)


#: ``FUNCTION LOAD`` of the layer's library (a reload of the same code is harmless).
LOAD_LIBRARY = _pack("FUNCTION", "LOAD", "REPLACE", LIBRARY)
#: At most this many times a script call is written again for want of its code.
SCRIPT_ATTEMPTS = 4


def _missing_script(shard: _Shard, exc: ResponseError) -> str | None:
    """Why a script call was refused without running, or ``None`` (a real error).

    ``"library"``: the server lacks the function library (first use, a restart, a
    ``FUNCTION FLUSH``): load it, call again. ``"fcall"``: the server has no
    functions (Redis < 7.0): the shard uses ``EVALSHA`` from now on. ``"script"``:
    ``NOSCRIPT``: send the script's source with ``EVAL``.
    """
    if isinstance(exc, NoScriptError):
        return "script"
    message = str(exc)
    if message.startswith("Function not found"):
        return "library" if shard.functions else "fcall"
    if message.lower().startswith("unknown command") and "fcall" in message.lower():
        shard.functions = False
        return "fcall"
    return None


def _settle(shard: _Shard, todo: list[int], replies: list[Any], results: list[Any],
            last: bool) -> tuple[list[int], str | None]:
    """Put the replies to the calls ``todo`` (indexes into ``results``) where they go.

    Returns the calls refused for want of their code (they did not run: write them
    again) and why (``_missing_script``). A call that ran keeps its reply, so it is
    never written twice, even if another client loaded the code mid-pipeline.
    Raises the first real error reply, or a refusal on the ``last`` attempt.
    """
    refused: list[int] = []
    why: str | None = None
    for index, reply in zip(todo, replies, strict=True):
        if isinstance(reply, ResponseError):
            missing = _missing_script(shard, reply)
            if missing is None or last:
                raise reply
            refused.append(index)
            why = missing
        else:
            results[index] = reply
    return refused, why


def _seconds(wait: float) -> str:
    """A ``BLPOP`` timeout: at least 1 ms (Redis reads 0 as "wait forever")."""
    return f"{max(math.ceil(wait * 1000), 1) / 1000:.3f}"


def _retry(attempts: int, *, for_async: bool = False) -> Any:
    backoff = ExponentialBackoff(cap=RETRY_CAP, base=RETRY_BASE) if attempts else NoBackoff()
    cls = redis.asyncio.retry.Retry if for_async else Retry
    return cls(backoff, attempts)


class _Conns:
    """A lean pool of connections for the hot path (scripts and BLPOP).

    redis-py's pool does bookkeeping on every checkout that costs more than a
    loopback round trip; this keeps idle connections in a deque instead. The
    connections are made by (and configured like) ``pool``'s, and each
    checkout still reconnects a connection the server has closed.
    """

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.idle: deque[Any] = deque()
        self.made: weakref.WeakSet[Any] = weakref.WeakSet()
        self.pid = os.getpid()

    def get(self) -> Any:
        if self.pid != os.getpid():  # forked: never share a socket with the parent
            self.idle, self.made, self.pid = deque(), weakref.WeakSet(), os.getpid()
        conn = self._take()
        try:
            if getattr(conn, "_sock", None) is None:  # (connect() says so too, in 5 calls)
                conn.connect()
            stale = _stale(conn)
            if stale is None:
                try:
                    stale = conn.can_read()  # unread data, or closed by the server (raises)
                except (*_NETWORK_ERRORS, OSError):
                    stale = True
            if stale:
                conn.disconnect()
                conn.connect()
        except BaseException:
            self.idle.append(conn)
            raise
        return conn

    def _take(self) -> Any:
        """An idle connection, else a new one (neither checked nor connected yet)."""
        try:
            return self.idle.pop()
        except IndexError:
            conn = self.pool.make_connection()
            self.made.add(conn)
            return conn

    def put(self, conn: Any) -> None:
        self.idle.append(conn)

    def close(self) -> None:
        for conn in list(self.made):
            conn.disconnect()
        self.idle.clear()


class _AConns(_Conns):
    """``_Conns`` for one event loop's asyncio pool."""

    async def aget(self) -> Any:
        conn = self._take()
        try:
            if not conn.is_connected:  # (connect() says so too, through five calls)
                await conn.connect()
            stale = _astale(conn)
            if stale is None:
                try:
                    stale = await conn.can_read()
                except (*_NETWORK_ERRORS, OSError):
                    stale = True
            if stale:
                await conn.disconnect()
                await conn.connect()
        except BaseException:
            self.idle.append(conn)
            raise
        return conn

    async def aclose(self) -> None:
        for conn in list(self.made):
            with contextlib.suppress(Exception):
                await conn.disconnect()
        self.idle.clear()


class _LoopClients:
    """One event loop's asyncio clients for a shard (closed with the loop)."""

    def __init__(self, client: Any, blocking: Any) -> None:
        self.client = client
        self.blocking = blocking
        self.conns = _AConns(client.connection_pool)
        self.bconns = _AConns(blocking.connection_pool)
        self.guard: Any = None

    async def aclose(self) -> None:
        for conns in (self.conns, self.bconns):
            await conns.aclose()
        for client in (self.client, self.blocking):
            with contextlib.suppress(Exception):
                await client.aclose()

    def abandon(self) -> None:
        """Close the sockets of a loop that closed without telling us, quietly.

        A closed loop can no longer close its transports, so the socket under
        each one is closed directly, and the guard generator is finished here
        (its ``finally`` does nothing once the loop is closed).
        """
        guard, self.guard = self.guard, None
        if guard is not None:
            with contextlib.suppress(StopIteration, RuntimeError):
                guard.aclose().send(None)
        for conns in (self.conns, self.bconns, self.client, self.blocking):
            pool = conns.pool if isinstance(conns, _Conns) else conns.connection_pool
            found = list(conns.made) if isinstance(conns, _Conns) else [
                *pool._available_connections, *pool._in_use_connections]
            for conn in found:
                writer = getattr(conn, "_writer", None)
                raw = getattr(getattr(writer, "transport", None), "_sock", None)
                if raw is not None:
                    with contextlib.suppress(OSError):
                        raw.close()
                conn._writer = conn._reader = None


class _Shard:
    """One Redis server (or Sentinel service): its clients, sync and per event loop."""

    def __init__(self, index: int, node: str, display: str, password: str | None,
                 make_client: Callable[[bool, bool], Any]) -> None:
        self.index = index
        self.node = node
        self.display = display
        self.password = password
        #: The last blocking wait on this server failed (set and cleared by the race
        #: of a multi-server receive): the first, non-blocking pass of a blocking
        #: receive skips it, so one server down does not stall the others.
        self.down = False
        #: Scripts are called as functions of ``LIBRARY`` (``FCALL``, Redis >= 7.0),
        #: whose helpers are defined once, not on every call; ``False`` once the
        #: server has shown it has no functions or refused to load the library:
        #: ``EVALSHA`` from then on.
        self.functions = True
        self._make_client = make_client
        self.client: redis.Redis = make_client(False, False)
        self.blocking: redis.Redis = make_client(False, True)
        self.conns = _Conns(self.client.connection_pool)
        self.bconns = _Conns(self.blocking.connection_pool)
        self._loops: weakref.WeakKeyDictionary[Any, _LoopClients] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    async def aclients(self) -> _LoopClients:
        """The asyncio clients for the running event loop.

        They are closed when the loop shuts down its async generators (as
        ``asyncio.run`` does): a started generator's ``finally`` closes them.
        """
        loop = asyncio.get_running_loop()
        clients = self._loops.get(loop)
        if clients is None:
            with self._lock:
                for old in [old for old in self._loops if old.is_closed()]:
                    self._loops.pop(old).abandon()
                clients = _LoopClients(self._make_client(True, False),
                                       self._make_client(True, True))
                self._loops[loop] = clients
            clients.guard = self._close_with_loop(loop, clients)
            await clients.guard.__anext__()
        return clients

    async def _close_with_loop(self, loop: Any, clients: _LoopClients) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if not loop.is_closed():  # the loop is shutting down: close properly
                with self._lock:
                    if self._loops.get(loop) is clients:
                        del self._loops[loop]
                await clients.aclose()

    def redact(self, text: str) -> str:
        if self.password:
            text = text.replace(self.password, "***")
        return text

    def close(self) -> None:
        self.conns.close()
        self.bconns.close()
        for client in (self.client, self.blocking):
            client.connection_pool.disconnect()
        with self._lock:
            loops = list(self._loops.items())
            self._loops.clear()
        for loop, clients in loops:
            if loop.is_closed():
                clients.abandon()
            elif loop.is_running():
                asyncio.run_coroutine_threadsafe(clients.aclose(), loop)
            else:
                loop.run_until_complete(clients.aclose())



def _client_kwargs(base: dict[str, Any], attempts: int, for_async: bool,
                   blocking: bool) -> dict[str, Any]:
    """redis-py client arguments: retries with backoff, or none for blocking waits
    (the receive loop does its own backoff) with a socket timeout above BLPOP's."""
    kwargs = dict(base)
    if blocking:
        kwargs["retry"] = _retry(0, for_async=for_async)
        timeout = kwargs.get("socket_timeout")
        kwargs["socket_timeout"] = max(timeout or 0, BLOCK_SOCKET_TIMEOUT)
    elif "retry" not in kwargs:
        kwargs["retry"] = _retry(attempts, for_async=for_async)
    return kwargs
