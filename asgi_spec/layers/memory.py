"""The in-memory layer: one process, for tests and the all-in-one dev mode.

How this works: every queue (a channel, or a ``prefix!`` shared by its local
channels) is a deque of entries ``(seq, expires_at, channel, body)`` guarded
by one ``threading.Condition``. ``seq`` is a global send counter, so a receive
over several queues takes the oldest head, which is FIFO per channel and fair
across channels. Expired heads are dropped whenever a queue is touched, and
their channels are evicted from every group (a reverse index maps channel to
groups). Blocked threads wait on the condition; asyncio callers park a future
that a send resolves through ``call_soon_threadsafe``, so worker threads and an
event loop can share one layer.

At-least-once queues (the ``acks`` extension): a message popped by
``receive_with_receipt`` moves from its deque into the queue's in-flight map
(delivery key -> entry and deadline). ``ack`` deletes it from there. Whenever
a queue is touched, in-flight entries whose deadline has passed go back into
the deque at the position their ``seq`` gives them, which is the head unless
older redeliveries are there: redelivered messages keep their send order and
come before newer ones. In-flight entries count against capacity but not as
pending. Scheduled messages (the ``delay`` extension) wait in a heap ordered
by (due time, scheduling seq); ``deliver_due`` pushes the due ones.

Time comes from the injected clock, so expiry is deterministic in tests; only
``block=True`` waits use real time.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
import time
from collections import Counter, deque
from typing import Any, NamedTuple

from asgi_spec import names
from asgi_spec.acks import make_receipt
from asgi_spec.base import BaseChannelLayer, Popped
from asgi_spec.exceptions import ChannelFull


class _Entry(NamedTuple):
    seq: int
    expires_at: float
    channel: str
    body: bytes
    deliveries: int = 0


class _Flight(NamedTuple):
    entry: _Entry
    deadline: float


class _Scheduled(NamedTuple):
    due_at: float
    seq: int
    channel: str
    queue: str
    body: bytes
    expires_at: float
    capacity: int


class _Waiter(NamedTuple):
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]
    queues: frozenset[str]


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class MemoryChannelLayer(BaseChannelLayer):
    """A channel layer that lives in this process's memory.

    Messages are stored encoded, so they are copied on send exactly as a
    networked layer would copy them, and every value-type rule applies.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._queues: dict[str, deque[_Entry]] = {}
        self._groups: dict[str, dict[str, float]] = {}
        self._member_of: dict[str, set[str]] = {}
        self._counts: dict[str, Counter[str]] = {}
        self._totals: Counter[str] = Counter()
        self._waiters: list[_Waiter] = []
        self._registry: dict[str, dict[str, tuple[float, bytes]]] = {}
        self._inflight: dict[str, dict[str, _Flight]] = {}
        self._flight_ids = itertools.count(1)
        self._scheduled: list[_Scheduled] = []

    # -- internals (call with self._cond held) -----------------------------

    def _count(self, queue: str, key: str, n: int = 1) -> None:
        if not names.is_single_reader(queue):
            self._counts.setdefault(queue, Counter())[key] += n
        self._totals[key] += n

    def _expire(self, queue: str, now: float) -> None:
        if self._inflight:
            self._requeue(queue, now)
        entries = self._queues.get(queue)
        while entries and entries[0].expires_at <= now:
            dead = entries.popleft()
            self._count(queue, "messages_expired_count")
            self._evict(dead.channel)
        if entries is not None and not entries:
            del self._queues[queue]

    def _requeue(self, queue: str, now: float) -> None:
        """Put in-flight entries of ``queue`` whose deadline passed back, in seq order."""
        flights = self._inflight.get(queue)
        if not flights:
            return
        due = [key for key, flight in flights.items() if flight.deadline <= now]
        if not due:
            return
        entries = self._queues.setdefault(queue, deque())
        for key in due:
            entry = flights.pop(key).entry
            index = 0
            while index < len(entries) and entries[index].seq < entry.seq:
                index += 1
            entries.insert(index, entry)
        if not flights:
            del self._inflight[queue]
        self._notify({queue})

    def _next_redelivery(self, queues: list[str], now: float) -> float | None:
        """Seconds until the first in-flight deadline among ``queues`` (``None``: none)."""
        deadlines = [flight.deadline for queue in queues
                     for flight in self._inflight.get(queue, {}).values()]
        return max(min(deadlines) - now, 0.001) if deadlines else None

    def _evict(self, channel: str) -> None:
        for group in list(self._member_of.get(channel, ())):
            self._remove_member(group, channel)

    def _push(self, channel: str, queue: str, body: bytes, expires_at: float,
              capacity: int, now: float) -> bool:
        self._expire(queue, now)
        entries = self._queues.get(queue)
        held = (len(entries) if entries is not None else 0) + len(self._inflight.get(queue, ()))
        if held >= capacity:
            return False
        if entries is None:
            entries = self._queues[queue] = deque()
        entries.append(_Entry(next(self._seq), expires_at, channel, body))
        self._count(queue, "messages_count")
        return True

    def _notify(self, queues: set[str]) -> None:
        self._cond.notify_all()
        if self._waiters:
            for waiter in self._waiters:
                if not waiter.queues.isdisjoint(queues):
                    waiter.loop.call_soon_threadsafe(_wake, waiter.future)

    def _pop(self, queues: list[str], acked: frozenset[str] = frozenset()) -> Popped | None:
        now = self.clock()
        best: deque[_Entry] | None = None
        best_queue = ""
        for queue in queues:
            self._expire(queue, now)
            entries = self._queues.get(queue)
            if entries and (best is None or entries[0].seq < best[0].seq):
                best, best_queue = entries, queue
        if best is None:
            return None
        entry = best.popleft()
        if not best:
            del self._queues[best_queue]
        if best_queue not in acked:
            return entry.channel, entry.body, None
        key = str(next(self._flight_ids))
        entry = entry._replace(deliveries=entry.deliveries + 1)
        self._inflight.setdefault(best_queue, {})[key] = _Flight(entry, now + self.ack_timeout)
        return entry.channel, entry.body, make_receipt(best_queue, key, entry.deliveries)

    # -- storage hooks -----------------------------------------------------

    def _send(self, channel: str, queue: str, body: bytes, expires_at: float,
              capacity: int) -> None:
        with self._cond:
            if not self._push(channel, queue, body, expires_at, capacity, self.clock()):
                self._count(queue, "channel_full_count")
                raise ChannelFull(f"channel {channel!r} is full ({capacity} messages)")
            self._notify({queue})

    def _receive(self, queues: list[str], timeout: float) -> tuple[str, bytes] | None:
        got = self._receive_receipt(queues, timeout, frozenset())
        return None if got is None else (got[0], got[1])

    def _receive_receipt(self, queues: list[str], timeout: float,
                         acked: frozenset[str]) -> Popped | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = self._pop(queues, acked)
                remaining = deadline - time.monotonic()
                if got is not None or remaining <= 0:
                    return got
                redelivery = self._next_redelivery(queues, self.clock())
                self._cond.wait(remaining if redelivery is None else min(remaining, redelivery))

    async def _send_async(self, channel: str, queue: str, body: bytes, expires_at: float,
                          capacity: int) -> None:
        self._send(channel, queue, body, expires_at, capacity)

    async def _receive_async(self, queues: list[str],
                             timeout: float) -> tuple[str, bytes] | None:
        got = await self._receive_receipt_async(queues, timeout, frozenset())
        return None if got is None else (got[0], got[1])

    async def _receive_receipt_async(self, queues: list[str], timeout: float,
                                     acked: frozenset[str]) -> Popped | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            with self._cond:
                got = self._pop(queues, acked)
                remaining = deadline - loop.time()
                if got is not None or remaining <= 0:
                    return got
                redelivery = self._next_redelivery(queues, self.clock())
                if redelivery is not None:
                    remaining = min(remaining, redelivery)
                waiter = _Waiter(loop, loop.create_future(), frozenset(queues))
                self._waiters.append(waiter)
            try:
                await asyncio.wait_for(asyncio.shield(waiter.future), remaining)
            except TimeoutError:
                pass
            finally:
                with self._cond:
                    self._waiters.remove(waiter)

    def _ack(self, queue: str, key: str, now: float) -> bool:
        with self._cond:
            flights = self._inflight.get(queue)
            flight = flights.get(key) if flights else None
            if flight is None:
                return False
            if flight.deadline <= now:
                self._expire(queue, now)  # it is receivable again
                return False
            del flights[key]
            if not flights:
                del self._inflight[queue]
            if flight.entry.expires_at <= now:
                self._count(queue, "messages_expired_count")
                self._evict(flight.entry.channel)
                return False
            return True

    async def _ack_async(self, queue: str, key: str, now: float) -> bool:
        return self._ack(queue, key, now)

    def _send_later(self, channel: str, queue: str, body: bytes, due_at: float,
                    expires_at: float, capacity: int) -> None:
        with self._cond:
            heapq.heappush(self._scheduled, _Scheduled(
                due_at, next(self._seq), channel, queue, body, expires_at, capacity))

    def _deliver_due(self, now: float, limit: int) -> int:
        moved = 0
        waiting: list[_Scheduled] = []
        touched: set[str] = set()
        with self._cond:
            while self._scheduled and self._scheduled[0].due_at <= now and moved < limit:
                item = heapq.heappop(self._scheduled)
                if item.expires_at <= now:
                    self._count(item.queue, "messages_expired_count")
                elif self._push(item.channel, item.queue, item.body, item.expires_at,
                                item.capacity, now):
                    moved += 1
                    touched.add(item.queue)
                else:
                    waiting.append(item)  # its channel is full: try again next time
            for item in waiting:
                heapq.heappush(self._scheduled, item)
            if touched:
                self._notify(touched)
        return moved

    def _next_due(self) -> float | None:
        with self._cond:
            return self._scheduled[0].due_at if self._scheduled else None

    def _group_add(self, group: str, channel: str, now: float) -> None:
        with self._cond:
            self._groups.setdefault(group, {})[channel] = now
            self._member_of.setdefault(channel, set()).add(group)

    def _group_discard(self, group: str, channel: str) -> None:
        with self._cond:
            self._remove_member(group, channel)

    def _remove_member(self, group: str, channel: str) -> None:
        members = self._groups.get(group)
        if members is None or members.pop(channel, None) is None:
            return
        if not members:
            del self._groups[group]
        groups = self._member_of.get(channel)
        if groups is not None:
            groups.discard(group)
            if not groups:
                del self._member_of[channel]

    def _live_members(self, group: str, now: float) -> list[str]:
        """Members of ``group`` after dropping stale and dead ones."""
        for channel, added in list(self._groups.get(group, {}).items()):
            if added + self.group_expiry <= now:
                self._remove_member(group, channel)
            else:
                self._expire(names.non_local_name(channel), now)
        return list(self._groups.get(group, {}))

    def _group_channels(self, group: str, now: float) -> list[str]:
        with self._cond:
            return self._live_members(group, now)

    def _send_group(self, group: str, body: bytes, now: float) -> int:
        delivered = 0
        touched: set[str] = set()
        with self._cond:
            for channel in self._live_members(group, now):
                queue = names.non_local_name(channel)
                if self._push(channel, queue, body, now + self.expiry,
                              self.get_capacity(queue), now):
                    delivered += 1
                    touched.add(queue)
                else:
                    self._count(queue, "group_send_dropped_count")
            if touched:
                self._notify(touched)
        return delivered

    def _group_names(self, now: float) -> list[str]:
        with self._cond:
            for group, members in list(self._groups.items()):
                for channel, added in list(members.items()):
                    if added + self.group_expiry <= now:
                        self._remove_member(group, channel)
            return list(self._groups)

    def _flush(self) -> None:
        with self._cond:
            self._queues.clear()
            self._groups.clear()
            self._member_of.clear()
            self._counts.clear()
            self._totals.clear()
            self._registry.clear()
            self._inflight.clear()
            self._scheduled.clear()

    def _register(self, kind: str, name: str, body: bytes, expires_at: float) -> None:
        with self._cond:
            self._registry.setdefault(kind, {})[name] = (expires_at, body)

    def _unregister(self, kind: str, name: str) -> None:
        with self._cond:
            self._registry.get(kind, {}).pop(name, None)

    def _live_processes(self, kind: str, now: float) -> dict[str, bytes]:
        with self._cond:
            entries = self._registry.get(kind, {})
            for name in [n for n, (expires_at, _) in entries.items() if expires_at <= now]:
                del entries[name]
            return {name: body for name, (_, body) in entries.items()}

    def _statistics(self, queue: str | None) -> dict[str, Any]:
        with self._cond:
            now = self.clock()
            if queue is None:
                for name in set(self._queues) | set(self._inflight):
                    self._expire(name, now)
                counts = self._totals
                heads = [entries[0] for entries in self._queues.values()]
                size = sum(len(entries) for entries in self._queues.values())
            else:
                self._expire(queue, now)
                counts = self._counts.get(queue, Counter())
                entries = self._queues.get(queue, deque())
                heads = [entries[0]] if entries else []
                size = len(entries)
            oldest = min((e.expires_at for e in heads), default=None)
            return {
                "messages_count": counts["messages_count"],
                "messages_pending": size,
                "messages_max_age": 0.0 if oldest is None else now - (oldest - self.expiry),
                "channel_full_count": counts["channel_full_count"],
                "messages_expired_count": counts["messages_expired_count"],
                "group_send_dropped_count": counts["group_send_dropped_count"],
            }
