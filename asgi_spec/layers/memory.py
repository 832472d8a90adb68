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

Time comes from the injected clock, so expiry is deterministic in tests; only
``block=True`` waits use real time.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import Counter, deque
from typing import Any, NamedTuple

from asgi_spec import names
from asgi_spec.base import BaseChannelLayer
from asgi_spec.exceptions import ChannelFull


class _Entry(NamedTuple):
    seq: int
    expires_at: float
    channel: str
    body: bytes


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

    # -- internals (call with self._cond held) -----------------------------

    def _count(self, queue: str, key: str, n: int = 1) -> None:
        if not names.is_single_reader(queue):
            self._counts.setdefault(queue, Counter())[key] += n
        self._totals[key] += n

    def _expire(self, queue: str, now: float) -> None:
        entries = self._queues.get(queue)
        while entries and entries[0].expires_at <= now:
            dead = entries.popleft()
            self._count(queue, "messages_expired_count")
            self._evict(dead.channel)
        if entries is not None and not entries:
            del self._queues[queue]

    def _evict(self, channel: str) -> None:
        for group in list(self._member_of.get(channel, ())):
            self._remove_member(group, channel)

    def _push(self, channel: str, queue: str, body: bytes, expires_at: float,
              capacity: int, now: float) -> bool:
        self._expire(queue, now)
        entries = self._queues.get(queue)
        if entries is not None and len(entries) >= capacity:
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

    def _pop(self, queues: list[str]) -> tuple[str, bytes] | None:
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
        return entry.channel, entry.body

    # -- storage hooks -----------------------------------------------------

    def _send(self, channel: str, queue: str, body: bytes, expires_at: float,
              capacity: int) -> None:
        with self._cond:
            if not self._push(channel, queue, body, expires_at, capacity, self.clock()):
                self._count(queue, "channel_full_count")
                raise ChannelFull(f"channel {channel!r} is full ({capacity} messages)")
            self._notify({queue})

    def _receive(self, queues: list[str], timeout: float) -> tuple[str, bytes] | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = self._pop(queues)
                remaining = deadline - time.monotonic()
                if got is not None or remaining <= 0:
                    return got
                self._cond.wait(remaining)

    async def _send_async(self, channel: str, queue: str, body: bytes, expires_at: float,
                          capacity: int) -> None:
        self._send(channel, queue, body, expires_at, capacity)

    async def _receive_async(self, queues: list[str],
                             timeout: float) -> tuple[str, bytes] | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            with self._cond:
                got = self._pop(queues)
                remaining = deadline - loop.time()
                if got is not None or remaining <= 0:
                    return got
                waiter = _Waiter(loop, loop.create_future(), frozenset(queues))
                self._waiters.append(waiter)
            try:
                await asyncio.wait_for(asyncio.shield(waiter.future), remaining)
            except TimeoutError:
                pass
            finally:
                with self._cond:
                    self._waiters.remove(waiter)

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

    def _flush(self) -> None:
        with self._cond:
            self._queues.clear()
            self._groups.clear()
            self._member_of.clear()
            self._counts.clear()
            self._totals.clear()
            self._registry.clear()

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
                for name in list(self._queues):
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
