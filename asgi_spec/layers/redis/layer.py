"""``RedisChannelLayer``: the production layer, sharded over Redis servers.

How this works:

* Placement. Every queue (``non_local_name(channel)``: all ``srv!x`` channels
  share the queue ``srv!``) and every group lives on the server that the
  consistent-hash ring (``ring.py``) picks for its name, so one channel's
  messages are always on one server and FIFO holds.
* Messages. A queue is one Redis list of envelopes ``[expires_at, channel,
  body]`` (``scripts.py``); the body is stored inline. Sends, non-blocking
  receives and group sends are single Lua scripts, so each is atomic and one
  round trip; every script gets ``now`` from the layer's clock, never from
  Redis. A send to a full queue raises ``ChannelFull``; a send never retries
  after its command was written, so a lost reply cannot duplicate a message.
* Blocking receive. From process-specific queues (``srv!``: an interface
  server's replies) on one server: one ``BLMPOP ... COUNT n`` (Redis >= 7.0),
  which returns at once with up to ``n`` waiting messages or waits for the
  first: one round trip per batch, busy or idle. Otherwise (shared queues,
  several servers, at-least-once queues, Redis 6): first one non-blocking
  pop (the oldest live message among the queues, expired heads dropped); if
  there is none, one ``BLPOP`` over all the queues of a server, keys
  shuffled per call. A popped message that
  expired meanwhile is discarded (counted, its channel evicted from its
  groups) and the wait goes on for the remaining time. With several servers
  every server is waited on at once (threads for ``receive``, tasks for
  ``receive_async``); the first message wins and the other waits are ended
  with ``CLIENT UNBLOCK``. A message that a losing wait had already popped is
  kept in this layer object's local buffer and is returned by the next
  receive that asks for its queue (before anything newer); if the process
  exits first it is lost, which at-most-once delivery allows.
* Groups. A sorted set per group (channel -> add time) and, on the channel's
  server, a set per channel of its groups, so that a channel whose message
  expires unread is evicted from all its groups. ``send_group`` on a single
  server with no ``channel_capacity`` rules is one script, one round trip,
  however many members; otherwise it reads the members, then runs one push
  script per server, pipelined across servers.
* Timeouts. A blocking receive returns once its timeout has passed on the
  Redis server's clock for blocked clients, which ticks ``hz`` times a second
  (10 by default), so it may return up to ~100 ms late; messages still wake
  it at once. Needs Redis >= 6.0 (fractional BLPOP timeouts, CLIENT UNBLOCK).
* Failure. Commands go through redis-py with exponential backoff on
  connection errors; when a server stays unreachable the call raises
  ``LayerUnavailable`` naming the server with its password redacted. A
  blocking receive never raises for that: it logs a warning and keeps
  retrying with backoff until its timeout, then returns ``(None, None)``.
  With several servers, one that is down does not stall the others: a
  blocking receive's first pass skips a server whose last wait failed (its
  wait in the race still probes it, fast: blocking connections do not
  retry), and a batch receive returns what it has rather than fail on it.

Connection pools are unbounded by default (``max_connections`` in
``connection_kwargs`` caps them): a group send to thousands of members or a
thousand blocked receivers must not fail for want of a connection.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import itertools
import logging
import math
import os
import random
import struct
import threading
import time
import weakref
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.retry
import redis.asyncio.sentinel
import redis.sentinel
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from asgi_spec import names
from asgi_spec.acks import make_receipt
from asgi_spec.base import BaseChannelLayer
from asgi_spec.base import Popped as Delivery
from asgi_spec.exceptions import (
    ChannelFull,
    ChannelLayerError,
    LayerConfigError,
    LayerUnavailable,
)
from asgi_spec.layers.redis import config
from asgi_spec.layers.redis.ring import HashRing
from asgi_spec.layers.redis.scripts import (
    SCRIPTS,
    Script,
    envelope_head,
    envelope_tail,
    make_envelope,
    read_envelope,
    schedule_record,
)
from asgi_spec.options import check_options

try:
    from hiredis import pack_command as _pack_command
except ImportError:  # pragma: no cover - redis[hiredis] is a dependency
    from redis.connection import PythonRespSerializer

    _SERIALIZER = PythonRespSerializer(6000, lambda value: (
        value if isinstance(value, bytes) else str(value).encode()))

    def _pack_command(args: tuple[Any, ...]) -> bytes:
        return b"".join(_SERIALIZER.pack(*args))

log = logging.getLogger("asgi_spec.layers.redis")

#: Extra life (s) of a key past the moment its content could still matter.
TTL_MARGIN = 60
#: Life (s) of a normal channel's counters after their last change.
STATS_TTL = 86400
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


def _seconds(wait: float) -> str:
    """A ``BLPOP`` timeout: at least 1 ms (Redis reads 0 as "wait forever")."""
    return f"{max(math.ceil(wait * 1000), 1) / 1000:.3f}"


def _pairs(flat: list[Any]) -> Iterable[tuple[str, str]]:
    for i in range(0, len(flat) - 1, 2):
        yield _text(flat[i]), _text(flat[i + 1])


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _retry(attempts: int, *, for_async: bool = False) -> Any:
    backoff = ExponentialBackoff(cap=RETRY_CAP, base=RETRY_BASE) if attempts else NoBackoff()
    cls = redis.asyncio.retry.Retry if for_async else Retry
    return cls(backoff, attempts)


def _next_retry(exc: LayerUnavailable, delay: float, remaining: float) -> float | None:
    """The pause before a blocking receive tries an unreachable server again (the last
    pause doubled, from ``RETRY_BASE`` up to ``RETRY_CAP``), logged; ``None`` when no
    time is left."""
    if remaining <= 0:
        return None
    delay = min(max(delay * 2, RETRY_BASE), RETRY_CAP)
    log.warning("blocking receive: %s; retrying in %.2f s (%.1f s left)", exc, delay,
                remaining)
    return delay


class _NoMpop(Exception):
    """The server has no ``LMPOP``/``BLMPOP``: receive the Redis 6 way."""


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
        try:
            conn = self.idle.pop()
        except IndexError:
            conn = self.pool.make_connection()
            self.made.add(conn)
        try:
            conn.connect()
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

    def put(self, conn: Any) -> None:
        self.idle.append(conn)

    def close(self) -> None:
        for conn in list(self.made):
            conn.disconnect()
        self.idle.clear()


class _AConns(_Conns):
    """``_Conns`` for one event loop's asyncio pool."""

    async def aget(self) -> Any:
        try:
            conn = self.idle.pop()
        except IndexError:
            conn = self.pool.make_connection()
            self.made.add(conn)
        try:
            await conn.connect()
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


class _Race:
    """Shared state of one multi-server blocking wait (sync: threads)."""

    def __init__(self, shards: int) -> None:
        self.cond = threading.Condition()
        self.pending = shards
        self.results: list[tuple[int, Any]] = []
        self.client_ids: dict[int, int] = {}
        self.cancelled = False
        self.has_message = False


class RedisChannelLayer(BaseChannelLayer):
    """A channel layer on one or more Redis servers (or Sentinel services).

    ``hosts`` -- list of ``redis://`` / ``rediss://`` URLs, ``(host, port)``
    pairs or dicts of redis-py connection arguments; several hosts shard the
    layer. ``sentinel`` -- instead of ``hosts``: a ``redis+sentinel://`` URL
    or a dict (see ``config.sentinel_spec``). ``prefix`` -- start of every key
    (``flush`` deletes every key that starts with it, so give each layer a
    prefix that no other prefix starts with). ``symmetric_encryption_keys``
    -- encrypt bodies at rest (the first key encrypts, all decrypt).
    ``connection_kwargs`` -- more redis-py arguments for every connection
    (``socket_timeout``, ``max_connections``, ``retry_attempts`` ...).
    """

    def __init__(
        self,
        hosts: Any = None,
        prefix: str = "switchboard:",
        symmetric_encryption_keys: Iterable[str | bytes] | None = None,
        sentinel: Any = None,
        connection_kwargs: Mapping[str, Any] | None = None,
        **base_options: Any,
    ) -> None:
        super().__init__(**base_options)
        if not isinstance(prefix, str | int) or not str(prefix):
            raise LayerConfigError(f"prefix must be a non-empty string, got {prefix!r}")
        self.prefix = str(prefix)
        self._fernet = _make_fernet(symmetric_encryption_keys)
        self.shards = self._make_shards(hosts, sentinel, dict(connection_kwargs or {}))
        self._ring = HashRing([shard.node for shard in self.shards])
        self._single = len(self.shards) == 1
        self._mpop = True  # until the server says it has no BLMPOP (Redis < 7.0)
        self._qkey_start = len(self.prefix) + 2
        self._list_ttl = str(int((self.expiry + TTL_MARGIN) * 1000))
        self._flight_ttl = str(int((max(self.expiry, self.ack_timeout) + TTL_MARGIN) * 1000))
        self._bell_tag = f"{self.prefix}w:".encode()
        self._group_ttl = int((self.group_expiry + TTL_MARGIN) * 1000)
        self._turn = itertools.count()
        self._buffer: dict[str, deque[tuple[int, bytes]]] = {}
        self._buffer_lock = threading.Lock()
        self._closed = False

    # -- construction ------------------------------------------------------

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisChannelLayer:
        """Build a layer from ``redis://``, ``rediss://``, several comma-separated
        URLs, or ``redis+sentinel://``; keyword options win over query options."""
        parsed = config.parse_url(url)
        clash = sorted({"hosts", "sentinel"} & set(options))
        if clash:
            raise LayerConfigError(
                f"from_url takes the servers from the URL; do not also pass {', '.join(clash)}"
            )
        merged = {**parsed.layer_options, **options}
        check_options(cls, merged)
        if parsed.sentinel is not None:
            return cls(sentinel=parsed.sentinel, **merged)
        return cls(hosts=parsed.hosts, **merged)

    def _make_shards(self, hosts: Any, sentinel: Any,
                     connection_kwargs: dict[str, Any]) -> list[_Shard]:
        if hosts is not None and sentinel is not None:
            raise LayerConfigError("give the Redis layer hosts= or sentinel=, not both")
        if sentinel is not None:
            spec = config.sentinel_spec(sentinel)
            return [self._sentinel_shard(i, spec, service, connection_kwargs)
                    for i, service in enumerate(spec.services)]
        if hosts is None:
            hosts = ["redis://127.0.0.1:6379/0"]
        elif isinstance(hosts, str):
            parsed = config.parse_url(hosts)
            if parsed.layer_options or parsed.sentinel:
                raise LayerConfigError(
                    "hosts= takes server URLs only; pass layer options as arguments "
                    "and Sentinel as sentinel="
                )
            hosts = parsed.hosts
        specs = [config.host_spec(host) for host in hosts]
        if not specs:
            raise LayerConfigError("the Redis layer needs at least one host")
        seen = [spec.node_name for spec in specs]
        if len(set(seen)) != len(seen):
            raise LayerConfigError(f"the same Redis server is listed twice in hosts: {seen}")
        return [self._host_shard(i, spec, connection_kwargs) for i, spec in enumerate(specs)]

    @staticmethod
    def _host_shard(index: int, spec: config.HostSpec,
                    connection_kwargs: dict[str, Any]) -> _Shard:
        base = {**spec.connection_kwargs(), **connection_kwargs}
        attempts = int(base.pop("retry_attempts", DEFAULT_RETRY_ATTEMPTS))

        def make(for_async: bool, blocking: bool) -> Any:
            kwargs = _client_kwargs(base, attempts, for_async, blocking)
            cls = redis.asyncio.Redis if for_async else redis.Redis
            return cls(**kwargs)

        return _Shard(index, spec.node_name, spec.display, spec.password, make)

    @staticmethod
    def _sentinel_shard(index: int, spec: config.SentinelSpec, service: str,
                        connection_kwargs: dict[str, Any]) -> _Shard:
        base = {**spec.options, **connection_kwargs, "db": spec.db}
        if spec.username is not None:
            base["username"] = spec.username
        if spec.password is not None:
            base["password"] = spec.password
        attempts = int(base.pop("retry_attempts", DEFAULT_RETRY_ATTEMPTS))
        sentinel_kwargs = dict(spec.sentinel_kwargs) or {
            k: v for k, v in base.items() if k.startswith("socket_")
        }
        sync_sentinel = redis.sentinel.Sentinel(
            list(spec.sentinels), sentinel_kwargs=sentinel_kwargs)

        def make(for_async: bool, blocking: bool) -> Any:
            kwargs = _client_kwargs(base, attempts, for_async, blocking)
            if for_async:
                sentinel = redis.asyncio.sentinel.Sentinel(
                    list(spec.sentinels), sentinel_kwargs=sentinel_kwargs)
                return sentinel.master_for(service, **kwargs)
            return sync_sentinel.master_for(service, **kwargs)

        return _Shard(index, spec.node_name(service), spec.display(service), spec.password,
                      make)

    # -- small helpers -----------------------------------------------------

    def _shard_of(self, name: str) -> _Shard:
        return self.shards[self._ring.index_of(name)]

    def _args(self, *rest: Any) -> list[Any]:
        return [self.prefix, repr(float(self.clock())), self._list_ttl, STATS_TTL, *rest]

    def _qkey(self, queue: str) -> str:
        return f"{self.prefix}q:{queue}"

    def _by_shard(self, queues: list[str]) -> dict[int, list[str]]:
        grouped: dict[int, list[str]] = {}
        for queue in queues:
            grouped.setdefault(self._ring.index_of(queue), []).append(queue)
        return grouped

    def _rotated(self, items: list[Any]) -> list[Any]:
        """``items`` rotated by a per-call turn, so no queue or server always goes first."""
        if len(items) < 2:
            return items
        turn = next(self._turn) % len(items)
        return items[turn:] + items[:turn]

    def _unavailable(self, shard: _Shard, exc: BaseException) -> LayerUnavailable:
        return LayerUnavailable(
            f"Redis at {shard.display} is unreachable: {shard.redact(str(exc))}"
        )

    def _encrypt(self, body: bytes) -> bytes:
        return self._fernet.encrypt(body) if self._fernet is not None else body

    def _open(self, channel: str, body: bytes) -> tuple[str, bytes] | None:
        """``(channel, body)`` decrypted; ``None`` (logged) if it cannot be."""
        if self._fernet is None:
            return channel, body
        try:
            return channel, self._fernet.decrypt(body)
        except Exception as exc:  # InvalidToken, or a body that is not a token at all
            log.error("dropped a message on %r that could not be decrypted (%s): it was "
                      "altered, or written with a key not in symmetric_encryption_keys",
                      channel, type(exc).__name__)
            return None

    def _check_open(self) -> None:
        if self._closed:
            raise LayerUnavailable("this Redis layer was closed")

    # -- running scripts (sync) --------------------------------------------

    def _call_many(self, calls: list[tuple[_Shard, Script, list[Any]]], *,
                   retry: bool) -> list[Any]:
        """Run scripts, one per entry, in one round trip per server (pipelined).

        With ``retry`` a failure after the commands were written is retried once
        on fresh connections (safe for idempotent scripts and for pops, where a
        lost reply only drops a message). Pushes pass ``retry=False``: a reply
        lost after the server ran the script must not make a second copy.
        """
        attempts = 2 if retry else 1
        for attempt in range(attempts):
            conns: list[tuple[Any, Any]] = []
            current = calls[0][0]
            try:
                for current, script, args in calls:
                    pool = current.conns
                    conns.append((pool, pool.get()))
                    conns[-1][1].send_packed_command(_pack("EVALSHA", script.sha, 0, *args))
                results = []
                for (_, conn), call in zip(conns, calls, strict=True):
                    current, script, args = call
                    try:
                        results.append(conn.read_response())
                    except NoScriptError:
                        conn.send_packed_command(_pack("EVAL", script.source, 0, *args))
                        results.append(conn.read_response())
                return results
            except _NETWORK_ERRORS as exc:
                for _, conn in conns:
                    conn.disconnect()
                if attempt + 1 == attempts:
                    raise self._unavailable(current, exc) from exc
            finally:
                for pool, conn in conns:
                    pool.put(conn)
        raise AssertionError("unreachable")

    def _call(self, shard: _Shard, name: str, args: list[Any], *, retry: bool) -> Any:
        return self._call_many([(shard, SCRIPTS[name], args)], retry=retry)[0]

    def _redis(self, shard: _Shard, fn: Callable[[redis.Redis], Any]) -> Any:
        """Run ``fn(client)`` (idempotent commands; redis-py retries them)."""
        try:
            return fn(shard.client)
        except _NETWORK_ERRORS as exc:
            raise self._unavailable(shard, exc) from exc

    def _apply_evictions(self, source: _Shard, evicted: list[Any]) -> None:
        """Remove evicted members from groups that live on other servers."""
        if self._single or not evicted:
            return
        for index, pairs in self._remote_evictions(source, evicted).items():
            shard = self.shards[index]

            def remove(client: redis.Redis, pairs: list[tuple[str, str]] = pairs) -> Any:
                pipe = client.pipeline(transaction=False)
                for channel, group in pairs:
                    pipe.zrem(f"{self.prefix}g:{group}", channel)
                return pipe.execute()

            self._redis(shard, remove)

    def _remote_evictions(self, source: _Shard,
                          evicted: list[Any]) -> dict[int, list[tuple[str, str]]]:
        remote: dict[int, list[tuple[str, str]]] = defaultdict(list)
        for channel, group in _pairs(evicted):
            index = self._ring.index_of(group)
            if index != source.index:
                remote[index].append((channel, group))
        return remote

    # -- send --------------------------------------------------------------

    def _send_args(self, channel: str, queue: str, body: bytes, expires_at: float,
                   capacity: int) -> list[Any]:
        envelope = make_envelope(expires_at, channel, self._encrypt(body))
        return self._args(queue, envelope, capacity, "1" if self.is_at_least_once(queue) else "0")

    def _sent(self, channel: str, capacity: int, reply: list[Any]) -> None:
        if not reply[0]:
            raise ChannelFull(f"channel {channel!r} is full ({capacity} messages)")

    def _send(self, channel: str, queue: str, body: bytes, expires_at: float,
              capacity: int) -> None:
        self._check_open()
        shard = self._shard_of(queue)
        reply = self._call(shard, "send",
                           self._send_args(channel, queue, body, expires_at, capacity),
                           retry=False)
        self._apply_evictions(shard, reply[1])
        self._sent(channel, capacity, reply)

    def _send_many(self, sends: list[tuple[str, str, bytes, float, int]],
                   ) -> list[ChannelLayerError | None]:
        """Every send script of a server on one connection, in one write: one round
        trip per server, and each channel's messages run in the order given."""
        self._check_open()
        outcomes: list[ChannelLayerError | None] = [None] * len(sends)
        for shard, indexes, args in self._sends_by_shard(sends):
            try:
                replies = self._pipeline(shard, SCRIPTS["send"], args)
            except LayerUnavailable as exc:
                for i in indexes:
                    outcomes[i] = exc
                continue
            for i, reply in zip(indexes, replies, strict=True):
                self._apply_evictions(shard, reply[1])
                outcomes[i] = self._send_outcome(sends[i], reply)
        return outcomes

    def _sends_by_shard(self, sends: list[tuple[str, str, bytes, float, int]],
                        ) -> list[tuple[_Shard, list[int], list[list[Any]]]]:
        """``(shard, indexes into sends, send-script arguments)`` per server."""
        by_shard: dict[int, list[int]] = defaultdict(list)
        for index, send in enumerate(sends):
            by_shard[self._ring.index_of(send[1])].append(index)
        return [(self.shards[shard_index], indexes,
                 [self._send_args(*sends[i]) for i in indexes])
                for shard_index, indexes in by_shard.items()]

    def _send_outcome(self, send: tuple[str, str, bytes, float, int],
                      reply: list[Any]) -> ChannelFull | None:
        try:
            self._sent(send[0], send[4], reply)
        except ChannelFull as exc:
            return exc
        return None

    def _pipeline(self, shard: _Shard, script: Script, arg_lists: list[list[Any]]) -> list[Any]:
        """Run ``script`` once per argument list on one connection, in order; never
        retried once written (these are pushes). If the server lost its scripts
        (a restart), none of them ran, so all are sent again, in order, as EVAL."""

        def write(verb: str, ref: str) -> None:
            conn.send_packed_command(
                [b"".join(_pack_command((verb, ref, 0, *args)) for args in arg_lists)])

        pool = shard.conns
        conn = pool.get()
        try:
            write("EVALSHA", script.sha)
            try:
                return [conn.read_response() for _ in arg_lists]
            except NoScriptError:
                for _ in range(len(arg_lists) - 1):  # the rest are NOSCRIPT replies too
                    with contextlib.suppress(NoScriptError):
                        conn.read_response()
            write("EVAL", script.source)
            return [conn.read_response() for _ in arg_lists]
        except _NETWORK_ERRORS as exc:
            conn.disconnect()
            raise self._unavailable(shard, exc) from exc
        except BaseException:
            conn.disconnect()  # replies may be left unread: never reuse this connection
            raise
        finally:
            pool.put(conn)

    # -- receive (sync) ----------------------------------------------------

    def _take_buffered(self, queues: list[str]) -> tuple[_Shard, str, bytes] | None:
        if not self._buffer:
            return None
        with self._buffer_lock:
            for queue in queues:
                entries = self._buffer.get(queue)
                if entries:
                    index, envelope = entries.popleft()
                    if not entries:
                        del self._buffer[queue]
                    return self.shards[index], queue, envelope
        return None

    def _keep(self, shard: _Shard, key: bytes, envelope: bytes) -> None:
        queue = key[self._qkey_start:].decode()
        with self._buffer_lock:
            self._buffer.setdefault(queue, deque()).append((shard.index, envelope))

    def _popped(self, shard: _Shard, key: bytes, envelope: bytes) -> Popped:
        """A ``BLPOP`` result; the envelope is ``None`` when it was a bell (a wake-up)."""
        bell = key.startswith(self._bell_tag)
        return shard, key[self._qkey_start:].decode(), None if bell else envelope

    def _check_popped(self, popped: Popped) -> tuple[tuple[str, bytes] | None, list[Any]]:
        """Decide on a message popped outside Lua: ``(result, discard args)``."""
        _shard, queue, envelope = popped
        expires_at, channel, body = read_envelope(envelope)
        if expires_at <= self.clock():
            return None, self._args(queue, channel)
        return self._open(channel, body), []

    def _accept(self, popped: Popped) -> Delivery | None:
        got, discard = self._check_popped(popped)
        if discard:
            shard = popped[0]
            reply = self._call(shard, "discard", discard, retry=True)
            self._apply_evictions(shard, reply[0])
        return None if got is None else (got[0], got[1], None)

    def _pop_buffered(self, queues: list[str]) -> Delivery | None:
        while (popped := self._take_buffered(queues)) is not None:
            got = self._accept(popped)
            if got is not None:
                return got
        return None

    def _receive_args(self, queues: list[str], acked: frozenset[str]) -> tuple[str, list[Any]]:
        """The receive script's token and arguments (each queue with its mode)."""
        token = names.random_suffix(16) if acked else ""
        now = self.clock()
        args: list[Any] = [self.prefix, repr(float(now)), self._list_ttl, STATS_TTL, token,
                           repr(float(now + self.ack_timeout)), self._flight_ttl]
        for queue in queues:
            args += [queue, "2" if queue in acked else
                     "1" if self.is_at_least_once(queue) else "0"]
        return token, args

    def _delivery(self, item: bytes, token: str,
                  deliveries: int) -> tuple[Delivery | None, list[Any]]:
        """A popped item as ``(channel, body, receipt)``, or ``None`` and the ack
        arguments that drop an in-flight item no key can decrypt."""
        _, channel, body = read_envelope(item)
        queue = names.non_local_name(channel)
        opened = self._open(channel, body)
        if opened is None:
            return None, self._args(queue, token) if deliveries else []
        receipt = make_receipt(queue, token, int(deliveries)) if deliveries else None
        return (opened[0], opened[1], receipt), []

    def _pop_now(self, by_shard: dict[int, list[str]],
                 acked: frozenset[str] = frozenset(), *,
                 tolerant: bool = False) -> Delivery | None:
        """One non-blocking pass: the oldest live message of each server in turn.

        ``tolerant`` (the first pass of a blocking receive over several servers): a
        server marked ``down`` is skipped and one that fails now is marked and skipped,
        so the others are still read; the race that follows waits on every server, so
        it reports a total outage and notices a server that is back.
        """
        for index in self._rotated(list(by_shard)):
            shard = self.shards[index]
            if tolerant and shard.down:
                continue
            queues = self._rotated(by_shard[index])
            try:
                while True:
                    token, args = self._receive_args(queues, acked)
                    found, item, evicted, deliveries = self._call(
                        shard, "receive", args, retry=True)
                    self._apply_evictions(shard, evicted)
                    if not found:
                        break
                    got, drop = self._delivery(item, token, deliveries)
                    if got is not None:
                        return got
                    if drop:
                        self._call(shard, "ack", drop, retry=True)
            except LayerUnavailable:
                if not tolerant:
                    raise
                shard.down = True
        return None

    def _receive(self, queues: list[str], timeout: float) -> tuple[str, bytes] | None:
        keys = self._mpop_keys(queues)
        if keys is not None:
            with contextlib.suppress(_NoMpop):
                got_many = self._receive_mpop(keys, 1, timeout)
                return got_many[0] if got_many else None
        got = self._receive_receipt(queues, timeout, frozenset())
        return None if got is None else (got[0], got[1])

    # -- receive with (B)LMPOP: one server, plain queues -------------------

    def _mpop_keys(self, queues: list[str]) -> list[str] | None:
        """The keys for one ``LMPOP``/``BLMPOP``, shuffled; ``None`` where it does not
        apply: several servers, a shared queue (its pops go through the receive script,
        which also brings back messages whose at-least-once delivery timed out in any
        process), an at-least-once queue, messages in the local buffer, or a server
        without it. So: an interface server's reply queue (``prefix!``) on one server."""
        if not self._mpop or not self._single or self._buffer:
            return None
        if not all(names.is_process_specific(queue) for queue in queues) or any(
                self.is_at_least_once(queue) for queue in queues):
            return None
        keys = [self._qkey(queue) for queue in queues]
        random.shuffle(keys)
        return keys

    @staticmethod
    def _mpop_command(keys: list[str], count: int, wait: float) -> list[bytes]:
        if wait <= 0:
            return _pack("LMPOP", len(keys), *keys, "LEFT", "COUNT", count)
        return _pack("BLMPOP", _seconds(wait), len(keys), *keys, "LEFT", "COUNT", count)

    def _mpop_reply(self, shard: _Shard, reply: Any) -> list[Popped]:
        if isinstance(reply, ResponseError):
            raise reply
        if reply is None:
            return []
        key, envelopes = reply
        return [self._popped(shard, key, envelope) for envelope in envelopes]

    def _no_mpop(self, exc: ResponseError) -> _NoMpop:
        if "unknown command" not in str(exc).lower():
            raise exc
        log.info("this Redis server has no BLMPOP (Redis < 7.0): receiving with BLPOP")
        self._mpop = False
        return _NoMpop()

    def _mpop_accept(self, popped: list[Popped]) -> tuple[list[tuple[str, bytes]],
                                                          list[list[Any]]]:
        """Popped messages as ``(channel, body)`` and the discard-script arguments
        of the ones that expired."""
        got, discards = [], []
        for one in popped:
            opened, discard = self._check_popped(one)
            if discard:
                discards.append(discard)
            elif opened is not None:
                got.append(opened)
        return got, discards

    def _receive_mpop(self, keys: list[str], count: int,
                      timeout: float) -> list[tuple[str, bytes]]:
        """Up to ``count`` messages, waiting up to ``timeout`` for the first; a server
        that is unreachable is retried with backoff until then (``[]`` at the end)."""
        self._check_open()
        shard = self.shards[0]
        deadline = time.monotonic() + timeout
        delay = 0.0
        while True:
            wait = min(max(deadline - time.monotonic(), 0.0), BLOCK_SLICE)
            try:
                popped = self._mpop_once(shard, keys, count, wait)
            except LayerUnavailable as exc:
                if timeout <= 0:
                    raise
                remaining = deadline - time.monotonic()
                if (delay := _next_retry(exc, delay, remaining)) is None:
                    return []
                time.sleep(min(delay, remaining))
                continue
            got, discards = self._mpop_accept(popped)
            for args in discards:
                self._apply_evictions(shard, self._call(shard, "discard", args, retry=True)[0])
            if got or (not popped and time.monotonic() >= deadline):
                return got  # (popped only expired messages: look again at once)

    def _mpop_once(self, shard: _Shard, keys: list[str], count: int,
                   wait: float) -> list[Popped]:
        pool = shard.bconns
        try:
            conn = pool.get()
        except _NETWORK_ERRORS as exc:
            raise self._unavailable(shard, exc) from exc
        try:
            conn.send_packed_command(self._mpop_command(keys, count, wait))
            return self._mpop_reply(shard, conn.read_response())
        except ResponseError as exc:
            raise self._no_mpop(exc) from exc
        except _NETWORK_ERRORS as exc:
            conn.disconnect()
            raise self._unavailable(shard, exc) from exc
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.put(conn)

    def _receive_batch(self, queues: list[str], max_messages: int,
                       timeout: float) -> list[tuple[str, bytes]]:
        """One ``BLMPOP`` where it applies; else the first message as ``receive`` gets
        it, then the rest in one script per server."""
        keys = self._mpop_keys(queues)
        if keys is not None:
            with contextlib.suppress(_NoMpop):
                return self._receive_mpop(keys, max_messages, timeout)
        if self._takes_many_first(queues):
            try:
                envelopes, evicted = self._call(self.shards[0], "receive_many",
                                                self._args(max_messages, *queues), retry=True)
            except LayerUnavailable:
                if timeout <= 0:
                    raise
                envelopes, evicted = [], []  # the blocking receive rides out the outage
            self._apply_evictions(self.shards[0], evicted)
            if got := self._opened(envelopes):
                return got
            first = self._receive(queues, timeout)
            return [] if first is None else [first]
        first = self._receive(queues, timeout)
        if first is None:
            return []
        got = [first]
        while len(got) < max_messages and (kept := self._pop_buffered(queues)) is not None:
            got.append(kept[:2])
        for shard, args in self._receive_many_calls(queues, max_messages - len(got)):
            if shard.down and not self._single:
                continue
            try:
                envelopes, evicted = self._call(shard, "receive_many", args, retry=True)
            except LayerUnavailable:  # what was received already is returned, not lost
                shard.down = not self._single
                continue
            self._apply_evictions(shard, evicted)
            got += self._opened(envelopes)
        return got

    def _takes_many_first(self, queues: list[str]) -> bool:
        """A batch from shared plain queues on one server: first one ``receive_many``
        (a busy worker's batch in one round trip); only when it finds nothing, the
        blocking receive, whose first message is then the whole batch (no third round
        trip after a wake-up; the next batch takes what came meanwhile)."""
        return self._single and not self._buffer and not any(
            self.is_at_least_once(queue) for queue in queues)

    def _receive_many_calls(self, queues: list[str],
                            room: int) -> list[tuple[_Shard, list[Any]]]:
        plain = [queue for queue in queues if not self.is_at_least_once(queue)]
        if room <= 0 or not plain:
            return []
        return [(self.shards[index], self._args(room, *shard_queues))
                for index, shard_queues in self._by_shard(plain).items()]

    def _opened(self, envelopes: list[bytes]) -> list[tuple[str, bytes]]:
        opened = []
        for envelope in envelopes:
            _, channel, body = read_envelope(envelope)
            message = self._open(channel, body)
            if message is not None:
                opened.append(message)
        return opened

    def _receive_receipt(self, queues: list[str], timeout: float,
                         acked: frozenset[str]) -> Delivery | None:
        self._check_open()
        got = self._pop_buffered(queues)
        if got is not None:
            return got
        by_shard = self._by_shard(queues)
        if timeout <= 0:
            return self._pop_now(by_shard, acked)
        deadline = time.monotonic() + timeout
        delay = 0.0
        while True:
            try:
                return self._receive_until(queues, by_shard, deadline, acked)
            except LayerUnavailable as exc:
                remaining = deadline - time.monotonic()
                if (delay := _next_retry(exc, delay, remaining)) is None:
                    return None
                time.sleep(min(delay, remaining))

    def _receive_until(self, queues: list[str], by_shard: dict[int, list[str]],
                       deadline: float, acked: frozenset[str]) -> Delivery | None:
        got = self._pop_now(by_shard, acked, tolerant=len(by_shard) > 1)
        while got is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            wait = min(remaining, BLOCK_SLICE)
            if len(by_shard) == 1:
                [(index, shard_queues)] = by_shard.items()
                popped = self._blpop(self.shards[index], shard_queues, wait)
            else:
                popped = self._race(by_shard, wait)
            if popped is not None:
                shard = popped[0]
                if popped[2] is None:  # a bell: a message waits in an at-least-once queue
                    got = self._pop_now({shard.index: by_shard[shard.index]}, acked)
                else:
                    got = self._accept(popped)
            if got is None:
                got = self._pop_buffered(queues)
        return got

    def _blpop_keys(self, queues: list[str]) -> list[str]:
        """What a blocking pop waits on: each queue's list, or its bell list when
        the queue is at-least-once (so its messages only leave Redis by script)."""
        keys = [f"{self.prefix}w:{queue}" if self.is_at_least_once(queue)
                else self._qkey(queue) for queue in queues]
        random.shuffle(keys)
        return keys

    def _blpop(self, shard: _Shard, queues: list[str], wait: float) -> Popped | None:
        pool = shard.bconns
        try:
            conn = pool.get()
        except _NETWORK_ERRORS as exc:
            raise self._unavailable(shard, exc) from exc
        try:
            conn.send_packed_command(
                _pack("BLPOP", *self._blpop_keys(queues), _seconds(wait)))
            reply = conn.read_response()
        except _NETWORK_ERRORS as exc:
            conn.disconnect()
            raise self._unavailable(shard, exc) from exc
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.put(conn)
        if reply is None:
            return None
        key, envelope = reply
        return self._popped(shard, key, envelope)

    def _race(self, by_shard: dict[int, list[str]], wait: float) -> Popped | None:
        """Wait on every server at once; the first message wins (see module doc)."""
        race = _Race(len(by_shard))
        threads = [
            threading.Thread(target=self._race_wait,
                             args=(race, self.shards[index], queues, wait),
                             name=f"redis-layer-wait-{index}", daemon=True)
            for index, queues in by_shard.items()
        ]
        for thread in threads:
            thread.start()
        with race.cond:
            race.cond.wait_for(lambda: race.has_message or race.pending == 0,
                               timeout=wait + BLOCK_SOCKET_TIMEOUT)
            race.cancelled = True
        for _ in range(100):
            with race.cond:
                if race.pending == 0:
                    break
                waiting = [(index, cid) for index, cid in race.client_ids.items()
                           if index not in {i for i, _ in race.results}]
            for index, cid in waiting:
                with contextlib.suppress(_NETWORK_ERRORS):
                    self.shards[index].client.client_unblock(cid)
            with race.cond:
                race.cond.wait_for(lambda: race.pending == 0, timeout=0.05)
        lost_bells: dict[_Shard, list[str]] = {}
        winner = self._race_outcome(race.results, lost_bells)
        for shard, queues in lost_bells.items():
            with contextlib.suppress(LayerUnavailable):
                self._call(shard, "ring", self._args(*queues), retry=True)
        return winner

    def _race_outcome(self, results: list[tuple[int, Any]],
                      lost_bells: dict[_Shard, list[str]] | None = None) -> Popped | None:
        """The winning pop; losing messages go to the local buffer, and the
        queues whose bells losing waits took go to ``lost_bells``, to be rung again."""
        winner: Popped | None = None
        error: BaseException | None = None
        for index, result in results:
            shard = self.shards[index]
            shard.down = isinstance(result, LayerUnavailable)
            if isinstance(result, BaseException):
                error = error or result
            elif result is not None:
                key, envelope = result
                popped = self._popped(shard, key, envelope)
                if winner is None:
                    winner = popped
                elif popped[2] is None:
                    if lost_bells is not None:
                        lost_bells.setdefault(shard, []).append(popped[1])
                else:
                    self._keep(shard, key, envelope)
        if winner is None and error is not None:
            if isinstance(error, LayerUnavailable):
                raise error
            raise LayerUnavailable(str(error)) from error
        return winner

    def _race_wait(self, race: _Race, shard: _Shard, queues: list[str], wait: float) -> None:
        result: Any = None
        pool = shard.bconns
        conn = None
        try:
            with race.cond:
                if race.cancelled:
                    return
            conn = pool.get()
            conn.send_packed_command(conn.pack_commands(
                [("CLIENT", "ID"), ("BLPOP", *self._blpop_keys(queues), _seconds(wait))]))
            client_id = conn.read_response()
            with race.cond:
                race.client_ids[shard.index] = client_id
                late = race.cancelled
            if late:
                shard.client.client_unblock(client_id)
            result = conn.read_response()
        except _NETWORK_ERRORS as exc:
            if conn is not None:
                conn.disconnect()
            result = self._unavailable(shard, exc)
        except BaseException as exc:  # report, never kill the waiting caller
            if conn is not None:
                conn.disconnect()
            result = exc
        finally:
            if conn is not None:
                pool.put(conn)
            with race.cond:
                race.results.append((shard.index, result))
                race.pending -= 1
                if result is not None and not isinstance(result, BaseException):
                    race.has_message = True
                race.cond.notify_all()

    # -- async -------------------------------------------------------------

    async def _acall_many(self, calls: list[tuple[_Shard, Script, list[Any]]], *,
                          retry: bool) -> list[Any]:
        """``_call_many`` for asyncio callers."""
        attempts = 2 if retry else 1
        for attempt in range(attempts):
            conns: list[tuple[Any, Any]] = []
            current = calls[0][0]
            try:
                for current, script, args in calls:
                    pool = (await current.aclients()).conns
                    conns.append((pool, await pool.aget()))
                    await conns[-1][1].send_packed_command(_pack("EVALSHA", script.sha, 0, *args))
                results = []
                for (_, conn), call in zip(conns, calls, strict=True):
                    current, script, args = call
                    try:
                        results.append(await conn.read_response())
                    except NoScriptError:
                        await conn.send_packed_command(_pack("EVAL", script.source, 0, *args))
                        results.append(await conn.read_response())
                return results
            except _NETWORK_ERRORS as exc:
                for _, conn in conns:
                    await conn.disconnect()
                if attempt + 1 == attempts:
                    raise self._unavailable(current, exc) from exc
            finally:
                for pool, conn in conns:
                    pool.put(conn)
        raise AssertionError("unreachable")

    async def _acall(self, shard: _Shard, name: str, args: list[Any], *, retry: bool) -> Any:
        return (await self._acall_many([(shard, SCRIPTS[name], args)], retry=retry))[0]

    async def _aapply_evictions(self, source: _Shard, evicted: list[Any]) -> None:
        if self._single or not evicted:
            return
        for index, pairs in self._remote_evictions(source, evicted).items():
            shard = self.shards[index]
            try:
                pipe = (await shard.aclients()).client.pipeline(transaction=False)
                for channel, group in pairs:
                    pipe.zrem(f"{self.prefix}g:{group}", channel)
                await pipe.execute()
            except _NETWORK_ERRORS as exc:
                raise self._unavailable(shard, exc) from exc

    async def _send_async(self, channel: str, queue: str, body: bytes, expires_at: float,
                          capacity: int) -> None:
        self._check_open()
        shard = self._shard_of(queue)
        reply = await self._acall(shard, "send",
                                  self._send_args(channel, queue, body, expires_at, capacity),
                                  retry=False)
        await self._aapply_evictions(shard, reply[1])
        self._sent(channel, capacity, reply)

    async def _send_many_async(self, sends: list[tuple[str, str, bytes, float, int]],
                               ) -> list[ChannelLayerError | None]:
        """``_send_many`` for asyncio callers: one round trip per server."""
        self._check_open()
        outcomes: list[ChannelLayerError | None] = [None] * len(sends)
        for shard, indexes, args in self._sends_by_shard(sends):
            try:
                replies = await self._apipeline(shard, SCRIPTS["send"], args)
            except LayerUnavailable as exc:
                for i in indexes:
                    outcomes[i] = exc
                continue
            for i, reply in zip(indexes, replies, strict=True):
                await self._aapply_evictions(shard, reply[1])
                outcomes[i] = self._send_outcome(sends[i], reply)
        return outcomes

    async def _apipeline(self, shard: _Shard, script: Script,
                         arg_lists: list[list[Any]]) -> list[Any]:
        """``_pipeline`` for asyncio callers."""
        pool = (await shard.aclients()).conns
        try:
            conn = await pool.aget()
        except _NETWORK_ERRORS as exc:
            raise self._unavailable(shard, exc) from exc

        async def write(verb: str, ref: str) -> None:
            await conn.send_packed_command(
                [b"".join(_pack_command((verb, ref, 0, *args)) for args in arg_lists)])

        try:
            await write("EVALSHA", script.sha)
            try:
                return [await conn.read_response() for _ in arg_lists]
            except NoScriptError:
                for _ in range(len(arg_lists) - 1):  # the rest are NOSCRIPT replies too
                    with contextlib.suppress(NoScriptError):
                        await conn.read_response()
            await write("EVAL", script.source)
            return [await conn.read_response() for _ in arg_lists]
        except _NETWORK_ERRORS as exc:
            await conn.disconnect()
            raise self._unavailable(shard, exc) from exc
        except BaseException:
            await conn.disconnect()  # replies may be left unread: never reuse this connection
            raise
        finally:
            pool.put(conn)

    async def _aaccept(self, popped: Popped) -> Delivery | None:
        got, discard = self._check_popped(popped)
        if discard:
            shard = popped[0]
            reply = await self._acall(shard, "discard", discard, retry=True)
            await self._aapply_evictions(shard, reply[0])
        return None if got is None else (got[0], got[1], None)

    async def _apop_buffered(self, queues: list[str]) -> Delivery | None:
        while (popped := self._take_buffered(queues)) is not None:
            got = await self._aaccept(popped)
            if got is not None:
                return got
        return None

    async def _apop_now(self, by_shard: dict[int, list[str]],
                        acked: frozenset[str] = frozenset(), *,
                        tolerant: bool = False) -> Delivery | None:
        """``_pop_now`` for asyncio callers."""
        for index in self._rotated(list(by_shard)):
            shard = self.shards[index]
            if tolerant and shard.down:
                continue
            queues = self._rotated(by_shard[index])
            try:
                while True:
                    token, args = self._receive_args(queues, acked)
                    found, item, evicted, deliveries = await self._acall(
                        shard, "receive", args, retry=True)
                    await self._aapply_evictions(shard, evicted)
                    if not found:
                        break
                    got, drop = self._delivery(item, token, deliveries)
                    if got is not None:
                        return got
                    if drop:
                        await self._acall(shard, "ack", drop, retry=True)
            except LayerUnavailable:
                if not tolerant:
                    raise
                shard.down = True
        return None

    async def _receive_async(self, queues: list[str],
                             timeout: float) -> tuple[str, bytes] | None:
        keys = self._mpop_keys(queues)
        if keys is not None:
            with contextlib.suppress(_NoMpop):
                got_many = await self._areceive_mpop(keys, 1, timeout)
                return got_many[0] if got_many else None
        got = await self._receive_receipt_async(queues, timeout, frozenset())
        return None if got is None else (got[0], got[1])

    async def _areceive_mpop(self, keys: list[str], count: int,
                             timeout: float) -> list[tuple[str, bytes]]:
        """``_receive_mpop`` for asyncio callers."""
        self._check_open()
        shard = self.shards[0]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = 0.0
        while True:
            wait = min(max(deadline - loop.time(), 0.0), BLOCK_SLICE)
            try:
                popped = await self._ampop_once(shard, keys, count, wait)
            except LayerUnavailable as exc:
                if timeout <= 0:
                    raise
                remaining = deadline - loop.time()
                if (delay := _next_retry(exc, delay, remaining)) is None:
                    return []
                await asyncio.sleep(min(delay, remaining))
                continue
            got, discards = self._mpop_accept(popped)
            for args in discards:
                reply = await self._acall(shard, "discard", args, retry=True)
                await self._aapply_evictions(shard, reply[0])
            if got or (not popped and loop.time() >= deadline):
                return got  # (popped only expired messages: look again at once)

    async def _ampop_once(self, shard: _Shard, keys: list[str], count: int,
                          wait: float) -> list[Popped]:
        pool = (await shard.aclients()).bconns
        try:
            conn = await pool.aget()
        except _NETWORK_ERRORS as exc:
            raise self._unavailable(shard, exc) from exc
        try:
            await conn.send_packed_command(self._mpop_command(keys, count, wait))
            return self._mpop_reply(shard, await conn.read_response())
        except ResponseError as exc:
            raise self._no_mpop(exc) from exc
        except _NETWORK_ERRORS as exc:
            await conn.disconnect()
            raise self._unavailable(shard, exc) from exc
        except BaseException:
            await conn.disconnect()
            raise
        finally:
            pool.put(conn)

    async def _receive_batch_async(self, queues: list[str], max_messages: int,
                                   timeout: float) -> list[tuple[str, bytes]]:
        keys = self._mpop_keys(queues)
        if keys is not None:
            with contextlib.suppress(_NoMpop):
                return await self._areceive_mpop(keys, max_messages, timeout)
        if self._takes_many_first(queues):
            try:
                envelopes, evicted = await self._acall(self.shards[0], "receive_many",
                                                       self._args(max_messages, *queues),
                                                       retry=True)
            except LayerUnavailable:
                if timeout <= 0:
                    raise
                envelopes, evicted = [], []  # the blocking receive rides out the outage
            await self._aapply_evictions(self.shards[0], evicted)
            if got := self._opened(envelopes):
                return got
            first = await self._receive_async(queues, timeout)
            return [] if first is None else [first]
        first = await self._receive_async(queues, timeout)
        if first is None:
            return []
        got = [first]
        while len(got) < max_messages and (kept := await self._apop_buffered(queues)):
            got.append(kept[:2])
        for shard, args in self._receive_many_calls(queues, max_messages - len(got)):
            if shard.down and not self._single:
                continue
            try:
                envelopes, evicted = await self._acall(shard, "receive_many", args,
                                                       retry=True)
            except LayerUnavailable:  # what was received already is returned, not lost
                shard.down = not self._single
                continue
            await self._aapply_evictions(shard, evicted)
            got += self._opened(envelopes)
        return got

    async def _receive_receipt_async(self, queues: list[str], timeout: float,
                                     acked: frozenset[str]) -> Delivery | None:
        self._check_open()
        got = await self._apop_buffered(queues)
        if got is not None:
            return got
        by_shard = self._by_shard(queues)
        if timeout <= 0:
            return await self._apop_now(by_shard, acked)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = 0.0
        while True:
            try:
                return await self._areceive_until(queues, by_shard, deadline, acked)
            except LayerUnavailable as exc:
                remaining = deadline - loop.time()
                if (delay := _next_retry(exc, delay, remaining)) is None:
                    return None
                await asyncio.sleep(min(delay, remaining))

    async def _areceive_until(self, queues: list[str], by_shard: dict[int, list[str]],
                              deadline: float, acked: frozenset[str]) -> Delivery | None:
        loop = asyncio.get_running_loop()
        got = await self._apop_now(by_shard, acked, tolerant=len(by_shard) > 1)
        while got is None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            wait = min(remaining, BLOCK_SLICE)
            if len(by_shard) == 1:
                [(index, shard_queues)] = by_shard.items()
                popped = await self._ablpop(self.shards[index], shard_queues, wait)
            else:
                popped = await self._arace(by_shard, wait)
            if popped is not None:
                shard = popped[0]
                if popped[2] is None:  # a bell: a message waits in an at-least-once queue
                    got = await self._apop_now({shard.index: by_shard[shard.index]}, acked)
                else:
                    got = await self._aaccept(popped)
            if got is None:
                got = await self._apop_buffered(queues)
        return got

    async def _ablpop(self, shard: _Shard, queues: list[str], wait: float) -> Popped | None:
        pool = (await shard.aclients()).bconns
        try:
            conn = await pool.aget()
        except _NETWORK_ERRORS as exc:
            raise self._unavailable(shard, exc) from exc
        try:
            await conn.send_packed_command(
                _pack("BLPOP", *self._blpop_keys(queues), _seconds(wait)))
            reply = await conn.read_response()
        except _NETWORK_ERRORS as exc:
            await conn.disconnect()
            raise self._unavailable(shard, exc) from exc
        finally:
            pool.put(conn)
        if reply is None:
            return None
        key, envelope = reply
        return self._popped(shard, key, envelope)

    async def _arace(self, by_shard: dict[int, list[str]], wait: float) -> Popped | None:
        """``_race`` with one task per server."""
        client_ids: dict[int, int] = {}
        cancelled = [False]

        async def wait_on(shard: _Shard, queues: list[str]) -> Any:
            clients = await shard.aclients()
            pool = clients.bconns
            try:
                conn = await pool.aget()
            except _NETWORK_ERRORS as exc:
                return self._unavailable(shard, exc)
            try:
                await conn.send_packed_command(conn.pack_commands(
                    [("CLIENT", "ID"), ("BLPOP", *self._blpop_keys(queues), _seconds(wait))]))
                client_ids[shard.index] = await conn.read_response()
                if cancelled[0]:
                    await clients.client.client_unblock(client_ids[shard.index])
                return await conn.read_response()
            except _NETWORK_ERRORS as exc:
                await conn.disconnect()
                return self._unavailable(shard, exc)
            finally:
                pool.put(conn)

        tasks = {asyncio.ensure_future(wait_on(self.shards[index], queues)): index
                 for index, queues in by_shard.items()}
        results: list[tuple[int, Any]] = []
        pending = set(tasks)
        try:
            while pending and not any(r is not None and not isinstance(r, BaseException)
                                      for _, r in results):
                done, pending = await asyncio.wait(pending,
                                                   return_when=asyncio.FIRST_COMPLETED)
                results.extend((tasks[task], task.result()) for task in done)
            cancelled[0] = True
            for _ in range(100):
                if not pending:
                    break
                for task in pending:
                    index = tasks[task]
                    if index in client_ids:
                        with contextlib.suppress(_NETWORK_ERRORS):
                            await (await self.shards[index].aclients()).client.client_unblock(
                                client_ids[index])
                done, pending = await asyncio.wait(pending, timeout=0.05)
                results.extend((tasks[task], task.result()) for task in done)
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        lost_bells: dict[_Shard, list[str]] = {}
        winner = self._race_outcome(results, lost_bells)
        for shard, queues in lost_bells.items():
            with contextlib.suppress(LayerUnavailable):
                await self._acall(shard, "ring", self._args(*queues), retry=True)
        return winner

    # -- groups ------------------------------------------------------------

    def _group_add(self, group: str, channel: str, now: float) -> None:
        self._check_open()
        gshard = self._shard_of(group)
        cshard = self._shard_of(names.non_local_name(channel))
        gkey, ckey = f"{self.prefix}g:{group}", f"{self.prefix}cg:{channel}"

        def add_member(client: redis.Redis, also_index: bool) -> Any:
            pipe = client.pipeline(transaction=False)
            pipe.zadd(gkey, {channel: now})
            pipe.pexpire(gkey, self._group_ttl)
            if also_index:
                pipe.sadd(ckey, group)
                pipe.pexpire(ckey, self._group_ttl)
            return pipe.execute()

        def add_index(client: redis.Redis) -> Any:
            pipe = client.pipeline(transaction=False)
            pipe.sadd(ckey, group)
            pipe.pexpire(ckey, self._group_ttl)
            return pipe.execute()

        self._redis(gshard, lambda client: add_member(client, gshard is cshard))
        if gshard is not cshard:
            self._redis(cshard, add_index)

    def _group_discard(self, group: str, channel: str) -> None:
        self._check_open()
        gshard = self._shard_of(group)
        cshard = self._shard_of(names.non_local_name(channel))
        gkey, ckey = f"{self.prefix}g:{group}", f"{self.prefix}cg:{channel}"
        self._redis(gshard, lambda client: client.zrem(gkey, channel))
        self._redis(cshard, lambda client: client.srem(ckey, group))

    def _members(self, group: str, now: float, *, expire_here: bool) -> list[str]:
        shard = self._shard_of(group)
        members, evicted = self._call(
            shard, "group_members",
            self._args(group, repr(float(now - self.group_expiry)), "1" if expire_here else "0"),
            retry=True)
        self._apply_evictions(shard, evicted)
        return [_text(member) for member in members]

    def _group_channels(self, group: str, now: float) -> list[str]:
        self._check_open()
        members = self._members(group, now, expire_here=self._single)
        if self._single or not members:
            return members
        by_shard = self._by_shard(list(dict.fromkeys(
            names.non_local_name(member) for member in members)))
        calls = [(self.shards[index], SCRIPTS["expire_queues"], self._args(*queues))
                 for index, queues in by_shard.items()]
        gone: set[str] = set()
        for (shard, _, _), (_, _, evicted) in zip(
                calls, self._call_many(calls, retry=True), strict=True):
            self._apply_evictions(shard, evicted)
            gone.update(channel for channel, name in _pairs(evicted) if name == group)
        return [member for member in members if member not in gone]

    def _send_group(self, group: str, body: bytes, now: float) -> int:
        self._check_open()
        head = envelope_head(now + self.expiry)
        tail = envelope_tail(self._encrypt(body))
        cutoff = repr(float(now - self.group_expiry))
        if self._single and not self.capacity_rules.rules:
            shard = self.shards[0]
            delivered, evicted = self._call(
                shard, "group_send",
                self._args(group, cutoff, self.capacity, head, tail, self.process_capacity),
                retry=False)
            return int(delivered)
        members = self._members(group, now, expire_here=self._single)
        if not members:
            return 0
        by_shard: dict[int, list[Any]] = defaultdict(list)
        for member in members:
            queue = names.non_local_name(member)
            by_shard[self._ring.index_of(queue)] += [
                member, self.get_capacity(queue), "1" if self.is_at_least_once(queue) else "0"]
        calls = [(self.shards[index], SCRIPTS["push_many"], self._args(head, tail, *pairs))
                 for index, pairs in by_shard.items()]
        delivered = 0
        for (shard, _, _), (count, evicted) in zip(
                calls, self._call_many(calls, retry=False), strict=True):
            self._apply_evictions(shard, evicted)
            delivered += int(count)
        return delivered

    # -- acks and delay ----------------------------------------------------

    def _ack(self, queue: str, key: str, now: float) -> bool:
        self._check_open()
        shard = self._shard_of(queue)
        acked, evicted = self._call(shard, "ack", self._args(queue, key), retry=True)
        self._apply_evictions(shard, evicted)
        return bool(acked)

    async def _ack_async(self, queue: str, key: str, now: float) -> bool:
        self._check_open()
        shard = self._shard_of(queue)
        acked, evicted = await self._acall(shard, "ack", self._args(queue, key), retry=True)
        await self._aapply_evictions(shard, evicted)
        return bool(acked)

    def _send_later(self, channel: str, queue: str, body: bytes, due_at: float,
                    expires_at: float, capacity: int) -> None:
        self._check_open()
        record = schedule_record(self.is_at_least_once(queue), capacity,
                                 make_envelope(expires_at, channel, self._encrypt(body)))
        ttl_ms = int((max(expires_at - self.clock(), 0) + TTL_MARGIN) * 1000)
        self._call(self._shard_of(queue), "schedule",
                   self._args(repr(float(due_at)), record, ttl_ms), retry=False)

    def _deliver_due(self, now: float, limit: int) -> int:
        self._check_open()
        moved = 0
        for shard in self._rotated(list(self.shards)):
            if moved >= limit:
                break
            count, evicted = self._call(shard, "deliver", self._args(limit - moved),
                                        retry=True)
            self._apply_evictions(shard, evicted)
            moved += int(count)
        return moved

    def _next_due(self) -> float | None:
        self._check_open()
        key = f"{self.prefix}sched"
        firsts = [self._redis(shard, lambda client: client.zrange(key, 0, 0, withscores=True))
                  for shard in self.shards]
        due = [first[0][1] for first in firsts if first]
        return min(due) if due else None

    # -- the process registry ----------------------------------------------

    def _register(self, kind: str, name: str, body: bytes, expires_at: float) -> None:
        self._check_open()
        ttl_ms = int((max(expires_at - self.clock(), 0) + TTL_MARGIN) * 1000)
        value = struct.pack(">d", float(expires_at)) + body
        self._call(self._shard_of(kind), "register", self._args(kind, name, value, ttl_ms),
                   retry=True)

    def _unregister(self, kind: str, name: str) -> None:
        self._check_open()
        self._redis(self._shard_of(kind),
                    lambda client: client.hdel(f"{self.prefix}reg:{kind}", name))

    def _live_processes(self, kind: str, now: float) -> dict[str, bytes]:
        self._check_open()
        flat = self._call(self._shard_of(kind), "live_processes", self._args(kind), retry=True)
        return {_text(flat[i]): flat[i + 1][8:] for i in range(0, len(flat), 2)}

    # -- flush, statistics, check, close -----------------------------------

    def _scan(self, shard: _Shard, pattern: str) -> list[bytes]:
        return self._redis(shard, lambda client: list(client.scan_iter(match=pattern,
                                                                       count=1000)))

    def _pattern(self, tail: str) -> str:
        escaped = "".join("\\" + c if c in "*?[]\\" else c for c in self.prefix)
        return escaped + tail

    def _group_names(self, now: float) -> list[str]:
        """Every server's ``g:*`` sorted sets with a member added after the cutoff
        (read only: stale members are trimmed by the next call on their group)."""
        self._check_open()
        cutoff = f"({float(now - self.group_expiry)!r}"
        start = len(self.prefix) + 2
        found: list[str] = []
        for shard in self.shards:
            keys = self._scan(shard, self._pattern("g:*"))

            def live(client: redis.Redis, keys: list[bytes] = keys) -> list[Any]:
                pipe = client.pipeline(transaction=False)
                for key in keys:
                    pipe.zcount(key, cutoff, "+inf")
                return pipe.execute()

            counts = self._redis(shard, live) if keys else []
            found += [key[start:].decode() for key, count in zip(keys, counts, strict=True)
                      if count]
        return found

    def _flush(self) -> None:
        self._check_open()
        with self._buffer_lock:
            self._buffer.clear()
        for shard in self.shards:
            keys = self._scan(shard, self._pattern("*"))
            for first in range(0, len(keys), 500):
                batch = keys[first:first + 500]
                self._redis(shard, lambda client, batch=batch: client.unlink(*batch))

    def _statistics(self, queue: str | None) -> dict[str, Any]:
        self._check_open()
        now = self.clock()
        counters: dict[str, int] = defaultdict(int)
        pending = 0
        oldest: float | None = None
        if queue is not None:
            shard = self._shard_of(queue)
            flat, pending, head, evicted = self._call(
                shard, "channel_stats", self._args(queue), retry=True)
            self._apply_evictions(shard, evicted)
            for field, value in _pairs(flat):
                counters[field] += int(value)
            oldest = float(head) if head else None
        else:
            with self._buffer_lock:
                buffered = [envelope for entries in self._buffer.values()
                            for _, envelope in entries]
            pending += len(buffered)
            for envelope in buffered:
                expires_at = read_envelope(envelope)[0]
                oldest = expires_at if oldest is None else min(oldest, expires_at)
            for shard in self.shards:
                keys = self._scan(shard, self._pattern("q:*"))
                queues = [key[self._qkey_start:].decode() for key in keys]
                for first in range(0, len(queues), 200):
                    count, head, evicted = self._call(
                        shard, "expire_queues", self._args(*queues[first:first + 200]),
                        retry=True)
                    self._apply_evictions(shard, evicted)
                    pending += int(count)
                    if head:
                        oldest = float(head) if oldest is None else min(oldest, float(head))
                totals = self._redis(shard, lambda c: c.hgetall(f"{self.prefix}stats"))
                for field, value in totals.items():
                    counters[_text(field)] += int(value)
        return {
            "messages_count": counters["messages_count"],
            "messages_pending": int(pending),
            "messages_max_age": 0.0 if oldest is None else max(
                0.0, now - (oldest - self.expiry)),
            "channel_full_count": counters["channel_full_count"],
            "messages_expired_count": counters["messages_expired_count"],
            "group_send_dropped_count": counters["group_send_dropped_count"],
        }

    def check(self) -> None:
        """Ping every server; raise ``LayerUnavailable`` naming the first that fails."""
        self._check_open()
        for shard in self.shards:
            self._redis(shard, lambda client: client.ping())

    def close(self) -> None:
        """Disconnect every pool (sync, and asyncio ones best effort)."""
        if self._closed:
            return
        self._closed = True
        for shard in self.shards:
            shard.close()

    def __repr__(self) -> str:
        hosts = ", ".join(shard.display for shard in self.shards)
        return f"<RedisChannelLayer [{hosts}] prefix={self.prefix!r} expiry={self.expiry}>"


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


def _make_fernet(keys: Iterable[str | bytes] | None) -> Any:
    """A ``MultiFernet`` over ``sha256(key)`` of each key, or ``None``."""
    if keys is None:
        return None
    if isinstance(keys, str | bytes):
        raise LayerConfigError("symmetric_encryption_keys must be a list of keys, not one key")
    keys = list(keys)
    if not keys:
        raise LayerConfigError("symmetric_encryption_keys is empty; pass None to not encrypt")
    try:
        from cryptography.fernet import Fernet, MultiFernet
    except ImportError:
        raise LayerConfigError(
            "symmetric_encryption_keys needs the 'cryptography' package "
            "(pip install 'switchboard[encryption]')"
        ) from None
    fernets = []
    for key in keys:
        raw = key.encode() if isinstance(key, str) else bytes(key)
        fernets.append(Fernet(base64.urlsafe_b64encode(hashlib.sha256(raw).digest())))
    return MultiFernet(fernets)
