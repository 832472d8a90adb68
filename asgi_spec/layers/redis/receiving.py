"""Receiving: each receive of the Redis layer, written once for both I/O flavours.

A receive (``_receive``, ``_receive_batch``, ``_receive_receipt``) is a generator
of *steps* (``..._steps``): it decides, without I/O, what to do next and yields
that as a step, a call of one I/O method; ``_run`` carries the steps out with the
blocking methods of ``sync_io.py``, ``_arun`` with their asyncio twins in
``async_io.py``. So the logic (what to pop, retries and backoff, expired messages,
the local buffer) exists once; the two entry points of each receive are one line
each. The decisions that need no I/O at all are plain methods below the steps.

Which pop: on one Redis >= 7.0 server, a blocking receive from queues none of which
is at-least-once is one ``BLMPOP ... COUNT n``: it returns what waits at once, or
waits for the first message -- one round trip per wake-up or per busy batch. Shared
queues (a worker's) need one more duty, which only the receive script does: bring
back messages whose at-least-once delivery timed out in *another* process (one that
treats the queue as at-least-once). So a blocking receive from shared queues runs
the script's ``receive_many`` first when the last such sweep of those queues is
``SWEEP_INTERVAL`` old (a worker idles in receives of ``blocking_timeout``, 1 s by
default, so an idle or busy worker sweeps about once a second); a non-blocking
receive from shared queues is always the script. Everything else -- several
servers, at-least-once queues, a local buffer, Redis 6 -- pops through the receive
script and ``BLPOP``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Generator
from typing import Any, NamedTuple, TypeVar

from redis.exceptions import ResponseError

from asgi_spec import names
from asgi_spec.acks import make_receipt
from asgi_spec.base import Popped as Delivery
from asgi_spec.exceptions import LayerUnavailable
from asgi_spec.layers.redis.connections import (
    BLOCK_SLICE,
    RETRY_BASE,
    RETRY_CAP,
    Popped,
    _pack,
    _seconds,
    _Shard,
)
from asgi_spec.layers.redis.scripts import read_envelope

log = logging.getLogger("asgi_spec.layers.redis")

T = TypeVar("T")
#: A blocking receive from shared queues runs the receive script (which brings back
#: timed-out in-flight messages of other processes) before its ``BLMPOP`` when the
#: last such sweep of the same queues is at least this old, in seconds.
SWEEP_INTERVAL = 1.0
#: Queue sets whose last sweep (or whose facts) are remembered, at most.
SWEEP_MEMORY = 256
#: One step: the name of a blocking I/O method of the layer (``_call``, ``_blpop``,
#: ``_sleep`` ...) and its arguments. The method's reply comes back at the ``yield``,
#: and what it raises is raised there; ``_run`` calls the method, ``_arun`` awaits its
#: asyncio twin (``_acall``, ``_ablpop``, ``_asleep`` ...).
Step = tuple[Any, ...]
Steps = Generator[Step, Any, T]
#: Where a receive reads the time for its deadline (monotonic, in seconds).
Clock = Callable[[], float]


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


class _QueueFacts(NamedTuple):
    """What the receive steps need to know of one list of queues (``_queue_facts``)."""

    any_at_least_once: bool
    all_process_specific: bool
    keys: tuple[str, ...]  # the queues' list keys, in order
    shared: tuple[str, ...]  # the shared (sweepable) queues, sorted


class _NoMpop(Exception):
    """The server has no ``LMPOP``/``BLMPOP``: receive the Redis 6 way."""


class _Receiving:
    """The receives of ``RedisChannelLayer`` (mixed into it, with ``_SyncIO`` and
    ``_AsyncIO``, whose methods the steps name): entry points, steps, decisions."""

    shards: list[_Shard]
    _facts_of: Callable[[tuple[str, ...]], _QueueFacts]  # _work_out_facts, remembered

    # -- running steps -------------------------------------------------------

    def _run(self, steps: Steps[T]) -> T:
        """Carry out ``steps`` with blocking I/O: call the method each step names, send
        its reply back (or raise its error there); the generator's return value."""
        reply, error = None, None
        try:
            while True:
                step = steps.send(reply) if error is None else steps.throw(error)
                try:
                    reply, error = getattr(self, step[0])(*step[1:]), None
                except BaseException as exc:  # raised where the step was yielded
                    reply, error = None, exc
        except StopIteration as done:
            return done.value

    async def _arun(self, steps: Steps[T]) -> T:
        """``_run`` for asyncio callers: each step ``_x`` is carried out by awaiting
        ``_ax``, nothing more (no extra task, no extra turn of the event loop)."""
        reply, error = None, None
        try:
            while True:
                step = steps.send(reply) if error is None else steps.throw(error)
                try:
                    reply, error = await getattr(self, "_a" + step[0][1:])(*step[1:]), None
                except BaseException as exc:  # raised where the step was yielded
                    reply, error = None, exc
        except StopIteration as done:
            return done.value

    # -- entry points: one per I/O flavour, the same steps -----------------

    def _receive(self, queues: list[str], timeout: float) -> tuple[str, bytes] | None:
        return self._run(self._receive_steps(queues, timeout, time.monotonic))

    async def _receive_async(self, queues: list[str],
                             timeout: float) -> tuple[str, bytes] | None:
        return await self._arun(
            self._receive_steps(queues, timeout, asyncio.get_running_loop().time))

    def _receive_batch(self, queues: list[str], max_messages: int,
                       timeout: float) -> list[tuple[str, bytes]]:
        return self._run(
            self._receive_batch_steps(queues, max_messages, timeout, time.monotonic))

    async def _receive_batch_async(self, queues: list[str], max_messages: int,
                                   timeout: float) -> list[tuple[str, bytes]]:
        return await self._arun(self._receive_batch_steps(
            queues, max_messages, timeout, asyncio.get_running_loop().time))

    def _receive_receipt(self, queues: list[str], timeout: float,
                         acked: frozenset[str]) -> Delivery | None:
        return self._run(self._receive_receipt_steps(queues, timeout, acked, time.monotonic))

    async def _receive_receipt_async(self, queues: list[str], timeout: float,
                                     acked: frozenset[str]) -> Delivery | None:
        return await self._arun(self._receive_receipt_steps(
            queues, timeout, acked, asyncio.get_running_loop().time))

    # -- steps ---------------------------------------------------------------

    def _receive_steps(self, queues: list[str], timeout: float,
                       now: Clock) -> Steps[tuple[str, bytes] | None]:
        keys = self._mpop_keys(queues, timeout)
        if keys is not None:
            with contextlib.suppress(_NoMpop):
                got_many = yield from self._swept_mpop_steps(queues, keys, 1, timeout, now)
                return got_many[0] if got_many else None
        got = yield from self._receive_receipt_steps(queues, timeout, frozenset(), now)
        return None if got is None else (got[0], got[1])

    def _receive_batch_steps(self, queues: list[str], max_messages: int, timeout: float,
                             now: Clock) -> Steps[list[tuple[str, bytes]]]:
        """One ``BLMPOP`` where it applies; else the first message as ``receive`` gets
        it, then the rest in one script per server."""
        keys = self._mpop_keys(queues, timeout)
        if keys is not None:
            with contextlib.suppress(_NoMpop):
                return (yield from self._swept_mpop_steps(queues, keys, max_messages,
                                                          timeout, now))
        if self._takes_many_first(queues):
            if got := (yield from self._receive_many_steps(queues, max_messages, timeout)):
                return got
            first = yield from self._receive_steps(queues, timeout, now)
            return [] if first is None else [first]
        first = yield from self._receive_steps(queues, timeout, now)
        if first is None:
            return []
        got = [first]
        while len(got) < max_messages:
            kept = yield from self._pop_buffered_steps(queues)
            if kept is None:
                break
            got.append(kept[:2])
        for shard, args in self._receive_many_calls(queues, max_messages - len(got)):
            if shard.down and not self._single:
                continue
            try:
                envelopes, evicted = yield ("_call", shard, "receive_many", args, True)
            except LayerUnavailable:  # what was received already is returned, not lost
                shard.down = not self._single
                continue
            yield ("_apply_evictions", shard, evicted)
            got += self._opened(envelopes)
        return got

    def _swept_mpop_steps(self, queues: list[str], keys: list[str], count: int,
                          timeout: float, now: Clock) -> Steps[list[tuple[str, bytes]]]:
        """``_receive_mpop_steps``, after the receive script's sweep of the shared
        queues among ``queues`` when one is due (what it finds is returned at once)."""
        shared = self._sweep_due(queues, now)
        if shared is not None:
            got = yield from self._receive_many_steps(queues, count, timeout)
            if got is not None:
                self._swept[shared] = now()
            if got:
                return got
        return (yield from self._receive_mpop_steps(keys, count, timeout, now))

    def _receive_many_steps(self, queues: list[str], count: int,
                            timeout: float) -> Steps[list[tuple[str, bytes]] | None]:
        """One ``receive_many`` script on the only server: what it took, or ``None``
        when the server is unreachable and a blocking receive will ride the outage
        out (a non-blocking one, ``timeout`` 0, raises ``LayerUnavailable``)."""
        shard = self.shards[0]
        try:
            envelopes, evicted = yield ("_call", shard, "receive_many",
                                        self._args(count, *queues), True)
        except LayerUnavailable:
            if timeout <= 0:
                raise
            return None
        yield ("_apply_evictions", shard, evicted)
        return self._opened(envelopes)

    def _receive_mpop_steps(self, keys: list[str], count: int, timeout: float,
                            now: Clock) -> Steps[list[tuple[str, bytes]]]:
        """Up to ``count`` messages, waiting up to ``timeout`` for the first; a server
        that is unreachable is retried with backoff until then (``[]`` at the end)."""
        self._check_open()
        shard = self.shards[0]
        deadline = now() + timeout
        delay = 0.0
        while True:
            wait = min(max(deadline - now(), 0.0), BLOCK_SLICE)
            try:
                popped = yield ("_mpop_once", shard, keys, count, wait)
            except LayerUnavailable as exc:
                if timeout <= 0:
                    raise
                remaining = deadline - now()
                if (delay := _next_retry(exc, delay, remaining)) is None:
                    return []
                yield ("_sleep", min(delay, remaining))
                continue
            got, discards = self._mpop_accept(popped)
            for args in discards:
                yield from self._discard_steps(shard, args)
            if got or (not popped and now() >= deadline):
                return got  # (popped only expired messages: look again at once)

    def _receive_receipt_steps(self, queues: list[str], timeout: float,
                               acked: frozenset[str], now: Clock) -> Steps[Delivery | None]:
        self._check_open()
        got = yield from self._pop_buffered_steps(queues)
        if got is not None:
            return got
        by_shard = self._by_shard(queues)
        if timeout <= 0:
            return (yield from self._pop_now_steps(by_shard, acked))
        deadline = now() + timeout
        delay = 0.0
        while True:
            try:
                return (yield from self._receive_until_steps(queues, by_shard, deadline,
                                                             acked, now))
            except LayerUnavailable as exc:
                remaining = deadline - now()
                if (delay := _next_retry(exc, delay, remaining)) is None:
                    return None
                yield ("_sleep", min(delay, remaining))

    def _receive_until_steps(self, queues: list[str], by_shard: dict[int, list[str]],
                             deadline: float, acked: frozenset[str],
                             now: Clock) -> Steps[Delivery | None]:
        got = yield from self._pop_now_steps(by_shard, acked, tolerant=len(by_shard) > 1)
        while got is None:
            remaining = deadline - now()
            if remaining <= 0:
                return None
            wait = min(remaining, BLOCK_SLICE)
            if len(by_shard) == 1:
                [(index, shard_queues)] = by_shard.items()
                popped = yield ("_blpop", self.shards[index], shard_queues, wait)
            else:
                popped = yield ("_race", by_shard, wait)
            if popped is not None:
                shard = popped[0]
                if popped[2] is None:  # a bell: a message waits in an at-least-once queue
                    got = yield from self._pop_now_steps(
                        {shard.index: by_shard[shard.index]}, acked)
                else:
                    got = yield from self._accept_steps(popped)
            if got is None:
                got = yield from self._pop_buffered_steps(queues)
        return got

    def _pop_now_steps(self, by_shard: dict[int, list[str]],
                       acked: frozenset[str] = frozenset(), *,
                       tolerant: bool = False) -> Steps[Delivery | None]:
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
                    found, item, evicted, deliveries = yield ("_call", shard, "receive",
                                                              args, True)
                    yield ("_apply_evictions", shard, evicted)
                    if not found:
                        break
                    got, drop = self._delivery(item, token, deliveries)
                    if got is not None:
                        return got
                    if drop:
                        yield ("_call", shard, "ack", drop, True)
            except LayerUnavailable:
                if not tolerant:
                    raise
                shard.down = True
        return None

    def _pop_buffered_steps(self, queues: list[str]) -> Steps[Delivery | None]:
        while (popped := self._take_buffered(queues)) is not None:
            got = yield from self._accept_steps(popped)
            if got is not None:
                return got
        return None

    def _accept_steps(self, popped: Popped) -> Steps[Delivery | None]:
        got, discard = self._check_popped(popped)
        if discard:
            yield from self._discard_steps(popped[0], discard)
        return None if got is None else (got[0], got[1], None)

    def _discard_steps(self, shard: _Shard, args: list[Any]) -> Steps[None]:
        """Drop a message that expired after it was popped (counted as expired)."""
        reply = yield ("_call", shard, "discard", args, True)
        yield ("_apply_evictions", shard, reply[0])

    # -- decisions (no I/O) --------------------------------------------------

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

    def _mpop_keys(self, queues: list[str], timeout: float) -> list[str] | None:
        """The keys for one ``LMPOP``/``BLMPOP``, shuffled; ``None`` where it does not
        apply: several servers, an at-least-once queue, messages in the local buffer,
        a server without it, or a non-blocking receive from a queue that is not
        process-specific (that one is the receive script, which sweeps as it pops).
        So: an interface server's reply queue (``prefix!``), and a worker's blocking
        receive, on one server."""
        if not self._mpop or not self._single or self._buffer:
            return None
        facts = self._queue_facts(queues)
        if facts.any_at_least_once or (timeout <= 0 and not facts.all_process_specific):
            return None
        keys = list(facts.keys)
        random.shuffle(keys)
        return keys

    def _queue_facts(self, queues: list[str]) -> _QueueFacts:
        """What ``_mpop_keys`` and ``_sweep_due`` need to know of ``queues``, worked
        out once per list (a worker receives from the same list every time)."""
        return self._facts_of(tuple(queues))

    def _work_out_facts(self, queues: tuple[str, ...]) -> _QueueFacts:
        return _QueueFacts(
            any_at_least_once=any(self.is_at_least_once(queue) for queue in queues),
            all_process_specific=all(names.is_process_specific(q) for q in queues),
            keys=tuple(self._qkey(queue) for queue in queues),
            shared=tuple(sorted({q for q in queues if not names.is_process_specific(q)
                                 and not names.is_single_reader(q)})))

    def _sweep_due(self, queues: list[str], now: Clock) -> tuple[str, ...] | None:
        """The shared queues among ``queues`` if their receive-script sweep is due
        (never swept, or ``SWEEP_INTERVAL`` ago); ``None`` if not, or if there are none
        (process-specific and single-reader queues are never in flight)."""
        shared = self._queue_facts(queues).shared
        if not shared:
            return None
        last = self._swept.get(shared)
        if last is not None and now() - last < SWEEP_INTERVAL:
            return None
        if len(self._swept) >= SWEEP_MEMORY:
            self._swept.clear()
        return shared

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

    def _blpop_keys(self, queues: list[str]) -> list[str]:
        """What a blocking pop waits on: each queue's list, or its bell list when
        the queue is at-least-once (so its messages only leave Redis by script)."""
        keys = [f"{self.prefix}w:{queue}" if self.is_at_least_once(queue)
                else self._qkey(queue) for queue in queues]
        random.shuffle(keys)
        return keys

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
