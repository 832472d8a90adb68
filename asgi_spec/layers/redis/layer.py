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

Code layout: this module holds the layer's construction, placement, script
arguments, sends, groups and the rest; every receive is written once, as steps
(``receiving.py``), carried out by the blocking I/O of ``sync_io.py`` or by its
asyncio twin ``async_io.py``; ``connections.py`` holds the shards and their pools.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import logging
import struct
import threading
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel

from asgi_spec import names
from asgi_spec.base import BaseChannelLayer
from asgi_spec.exceptions import (
    ChannelFull,
    ChannelLayerError,
    LayerConfigError,
    LayerUnavailable,
)
from asgi_spec.layers.redis import config
from asgi_spec.layers.redis.async_io import _AsyncIO

# (noqa: F401) names that lived in this module before its split stay importable from it.
from asgi_spec.layers.redis.connections import (  # noqa: F401
    _NETWORK_ERRORS,
    BLOCK_SLICE,
    BLOCK_SOCKET_TIMEOUT,
    DEFAULT_RETRY_ATTEMPTS,
    RETRY_BASE,
    RETRY_CAP,
    Popped,
    _AConns,
    _client_kwargs,
    _Conns,
    _LoopClients,
    _pack,
    _pack_command,
    _retry,
    _seconds,
    _Shard,
)
from asgi_spec.layers.redis.receiving import (  # noqa: F401
    SWEEP_MEMORY,
    Steps,
    _next_retry,
    _NoMpop,
    _Receiving,
)
from asgi_spec.layers.redis.ring import HashRing
from asgi_spec.layers.redis.scripts import (
    SCRIPTS,
    envelope_head,
    envelope_tail,
    make_envelope,
    read_envelope,
    schedule_record,
)
from asgi_spec.layers.redis.sync_io import (
    _Race,  # noqa: F401
    _SyncIO,
)
from asgi_spec.options import check_options

log = logging.getLogger("asgi_spec.layers.redis")

#: Extra life (s) of a key past the moment its content could still matter.
TTL_MARGIN = 60
#: Life (s) of a normal channel's counters after their last change.
STATS_TTL = 86400
#: Messages per send script call; a bigger batch is several calls, pipelined
#: (bounded, so that one call never holds Redis for long).
SEND_MANY_CHUNK = 128


def _pairs(flat: list[Any]) -> Iterable[tuple[str, str]]:
    for i in range(0, len(flat) - 1, 2):
        yield _text(flat[i]), _text(flat[i + 1])


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _full(channel: str, capacity: int) -> ChannelFull:
    return ChannelFull(f"channel {channel!r} is full ({capacity} messages)")


class RedisChannelLayer(_Receiving, _SyncIO, _AsyncIO, BaseChannelLayer):
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
        self._swept: dict[tuple[str, ...], float] = {}  # shared queues -> last sweep
        self._facts_of = lru_cache(maxsize=SWEEP_MEMORY)(self._work_out_facts)
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

    def _remote_evictions(self, source: _Shard,
                          evicted: list[Any]) -> dict[int, list[tuple[str, str]]]:
        remote: dict[int, list[tuple[str, str]]] = defaultdict(list)
        for channel, group in _pairs(evicted):
            index = self._ring.index_of(group)
            if index != source.index:
                remote[index].append((channel, group))
        return remote

    # -- send --------------------------------------------------------------
    # Direct twins, not steps as receives are: sends are the hot path (one script, or
    # one pipeline, per call), and what they decide is shared already (_send_args ...).

    def _send_args(self, channel: str, queue: str, body: bytes, expires_at: float,
                   capacity: int) -> list[Any]:
        """The send script's arguments for one message."""
        return [*self._args(), *self._send_tail(channel, queue, body, expires_at, capacity)]

    def _send_tail(self, channel: str, queue: str, body: bytes, expires_at: float,
                   capacity: int) -> tuple[Any, ...]:
        """One message's arguments to the send script (after the common head)."""
        envelope = make_envelope(expires_at, channel, self._encrypt(body))
        return queue, envelope, capacity, "1" if self.is_at_least_once(queue) else "0"

    def _sent(self, channel: str, capacity: int, reply: list[Any]) -> None:
        if not reply[0][0]:
            raise _full(channel, capacity)

    def _send(self, channel: str, queue: str, body: bytes, expires_at: float,
              capacity: int) -> None:
        self._check_open()
        shard = self._shard_of(queue)
        reply = self._call(shard, "send",
                           self._send_args(channel, queue, body, expires_at, capacity),
                           retry=False)
        self._apply_evictions(shard, reply[1])
        self._sent(channel, capacity, reply)

    async def _send_async(self, channel: str, queue: str, body: bytes, expires_at: float,
                          capacity: int) -> None:
        self._check_open()
        shard = self._shard_of(queue)
        reply = await self._acall(shard, "send",
                                  self._send_args(channel, queue, body, expires_at, capacity),
                                  retry=False)
        await self._aapply_evictions(shard, reply[1])
        self._sent(channel, capacity, reply)

    def _send_many(self, sends: list[tuple[str, str, bytes, float, int]],
                   ) -> list[ChannelLayerError | None]:
        """The sends of each server in send script calls on one connection, in one
        write: one round trip per server, each channel's messages in the order given."""
        self._check_open()
        outcomes: list[ChannelLayerError | None] = [None] * len(sends)
        for shard, indexes, calls in self._sends_by_shard(sends):
            try:
                replies = self._pipeline(shard, SCRIPTS["send"], calls)
            except LayerUnavailable as exc:
                for i in indexes:
                    outcomes[i] = exc
                continue
            for reply in replies:
                self._apply_evictions(shard, reply[1])
            self._send_outcomes(sends, indexes, replies, outcomes)
        return outcomes

    async def _send_many_async(self, sends: list[tuple[str, str, bytes, float, int]],
                               ) -> list[ChannelLayerError | None]:
        """``_send_many`` for asyncio callers: one round trip per server."""
        self._check_open()
        outcomes: list[ChannelLayerError | None] = [None] * len(sends)
        for shard, indexes, calls in self._sends_by_shard(sends):
            try:
                replies = await self._apipeline(shard, SCRIPTS["send"], calls)
            except LayerUnavailable as exc:
                for i in indexes:
                    outcomes[i] = exc
                continue
            for reply in replies:
                await self._aapply_evictions(shard, reply[1])
            self._send_outcomes(sends, indexes, replies, outcomes)
        return outcomes

    def _sends_by_shard(self, sends: list[tuple[str, str, bytes, float, int]],
                        ) -> list[tuple[_Shard, list[int], list[list[Any]]]]:
        """``(shard, indexes into sends, send_many arguments)`` per server: one call per
        ``SEND_MANY_CHUNK`` messages. The sends go out together, so they share one
        reading of the clock."""
        by_shard: dict[int, list[int]] = defaultdict(list)
        for index, send in enumerate(sends):
            by_shard[self._ring.index_of(send[1])].append(index)
        head = self._args()
        grouped = []
        for shard_index, indexes in by_shard.items():
            calls = []
            for first in range(0, len(indexes), SEND_MANY_CHUNK):
                args = list(head)
                for i in indexes[first:first + SEND_MANY_CHUNK]:
                    args += self._send_tail(*sends[i])
                calls.append(args)
            grouped.append((self.shards[shard_index], indexes, calls))
        return grouped

    def _send_outcomes(self, sends: list[tuple[str, str, bytes, float, int]],
                       indexes: list[int], replies: list[Any],
                       outcomes: list[ChannelLayerError | None]) -> None:
        """Put each message's outcome (``None``: sent; ``ChannelFull``) where it goes."""
        sent = [flag for reply in replies for flag in reply[0]]
        for i, flag in zip(indexes, sent, strict=True):
            if not flag:
                outcomes[i] = _full(sends[i][0], sends[i][4])

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
        return self._run(self._ack_steps(queue, key))

    async def _ack_async(self, queue: str, key: str, now: float) -> bool:
        return await self._arun(self._ack_steps(queue, key))

    def _ack_steps(self, queue: str, key: str) -> Steps[bool]:
        self._check_open()
        shard = self._shard_of(queue)
        acked, evicted = yield ("_call", shard, "ack", self._args(queue, key), True)
        yield ("_apply_evictions", shard, evicted)
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
