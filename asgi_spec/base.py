"""``BaseChannelLayer``: the ASGI 1.0 layer API, checked once for every backend.

How this works: the public methods (``send``, ``receive``, ``send_group`` ...)
validate names and values, encode messages with ``asgi_spec.codec`` and stamp
them with an absolute expiry time from the layer's clock; then they call a
small set of ``_``-prefixed storage hooks that each backend implements. The
backends therefore never see an invalid name, an unencodable message or one
over the size limit, and every backend reports errors with the same words.

Queues are keyed on ``non_local_name(channel)``: a process-specific channel
``srv1!conn42`` lives in the queue ``srv1!`` together with its siblings, so its
reader pops all of them with one receive, and capacity is shared among them.

Two extensions change what a pop does. ``acks``: for queues that match the
``at_least_once`` option, ``receive_with_receipt`` asks the backend to keep
the popped message *in flight* (invisible, with a deadline of ``clock() +
ack_timeout``) instead of deleting it; ``ack`` deletes it; once the deadline
passes, the next operation that looks at the queue puts it back at the head,
in its original order (see ``asgi_spec.acks``). ``delay``: ``send_later``
stores a message with a due time; ``deliver_due`` moves the due ones into
their queues, each atomically, under the queue's capacity.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from typing import Any, ClassVar

from asgi_spec import codec, names
from asgi_spec.acks import AtLeastOnceRules, Receipt, split_receipt
from asgi_spec.capacity import CapacityRules
from asgi_spec.exceptions import (
    ChannelFull,
    ChannelLayerError,
    InvalidChannelName,
    LayerConfigError,
    MessageTooLarge,
)
from asgi_spec.options import check_options, split_options

Clock = Callable[[], float]
Received = tuple[str, dict[str, Any]] | tuple[None, None]
ReceivedWithReceipt = (
    tuple[str, dict[str, Any], Receipt | None] | tuple[None, None, None]
)
#: What a backend's pop returns: ``(channel, body, receipt or None)``.
Popped = tuple[str, bytes, Receipt | None]

#: How many due scheduled messages one ``deliver_due`` call moves at most, by default.
DELIVER_DUE_LIMIT = 1000

#: Keys of ``global_statistics`` and ``channel_statistics`` (which adds
#: ``capacity``). Per-channel counters are kept for normal and process-specific
#: channels; single-reader (``?``) channels count toward the totals only.
STATISTICS_KEYS = (
    "messages_count",
    "messages_pending",
    "messages_max_age",
    "channel_full_count",
    "messages_expired_count",
    "group_send_dropped_count",
)


def _check_batch(max_messages: Any) -> None:
    if isinstance(max_messages, bool) or not isinstance(max_messages, int) or max_messages < 1:
        raise ValueError(f"max_messages must be a positive int, got {max_messages!r}")


def _positive(name: str, value: Any, *, integer: bool = False) -> Any:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value <= 0:
        kind = "a positive integer" if integer else "a positive number"
        raise LayerConfigError(f"layer option {name!r} must be {kind}, got {value!r}")
    return value


@lru_cache(maxsize=256)
def _checked_queues(channels: tuple[str, ...]) -> tuple[str, ...]:
    """The distinct queues of ``channels``, each name checked (raises for a bad one);
    remembered, since a worker or a reply loop asks with the same list every time."""
    queues = tuple(dict.fromkeys(names.validate_channel_name(c, receive=True)
                                 for c in channels))
    if not queues:
        raise InvalidChannelName("receive needs at least one channel name")
    return queues


class BaseChannelLayer:
    """The synchronous ASGI 1.0 channel-layer API plus its extensions.

    Options (every backend):

    * ``expiry`` -- seconds a message may wait unread before it is dropped (60);
    * ``group_expiry`` -- seconds a group membership lasts after its last
      ``group_add`` (86400);
    * ``capacity`` -- unexpired messages a channel may hold before ``send``
      raises ``ChannelFull`` (100);
    * ``channel_capacity`` -- ``{glob or compiled regex: capacity}``, first
      match wins, overriding ``capacity`` for matching channels;
    * ``process_capacity`` -- capacity of a process-specific queue ``srv!``,
      shared by every ``srv!local`` channel of one process (100,000: an
      interface server with thousands of connections must not drop a group
      broadcast); a ``channel_capacity`` rule matching ``srv!`` wins;
    * ``max_message_size`` -- bytes of encoded message before ``send`` raises
      ``MessageTooLarge`` (1 MiB);
    * ``blocking_timeout`` -- how long ``receive(..., block=True)`` waits (1 s);
    * ``clock`` -- a callable returning wall-clock seconds (``time.time``);
      tests inject ``asgi_spec.testing.FakeClock``;
    * ``at_least_once`` -- globs or compiled regexes (or one comma-separated
      str) of the normal channels whose messages ``receive_with_receipt``
      keeps until acknowledged (none);
    * ``ack_timeout`` -- seconds an unacknowledged delivery stays in flight
      before the message is receivable again (60).
    """

    #: The extensions every backend provides. ``async`` is Switchboard's
    #: asyncio face: ``receive_async`` and ``send_async`` coroutines.
    #: ``registry`` holds heartbeats of live processes (workers, servers).
    #: ``acks`` is at-least-once delivery (``receive_with_receipt``, ``ack``);
    #: ``delay`` is scheduled sending (``send_later``, ``deliver_due``).
    extensions: ClassVar[list[str]] = [
        "groups", "flush", "statistics", "async", "registry", "acks", "delay",
    ]

    ChannelFull = ChannelFull
    MessageTooLarge = MessageTooLarge

    def __init__(
        self,
        *,
        expiry: float = 60,
        group_expiry: float = 86400,
        capacity: int = 100,
        channel_capacity: Mapping[Any, int] | None = None,
        process_capacity: int = 100_000,
        max_message_size: int = codec.DEFAULT_MAX_MESSAGE_SIZE,
        blocking_timeout: float = 1.0,
        clock: Clock | None = None,
        at_least_once: Any = None,
        ack_timeout: float = 60,
    ) -> None:
        self.expiry = _positive("expiry", expiry)
        self.group_expiry = _positive("group_expiry", group_expiry)
        self.capacity = _positive("capacity", capacity, integer=True)
        self.process_capacity = _positive("process_capacity", process_capacity, integer=True)
        self.max_message_size = _positive("max_message_size", max_message_size, integer=True)
        self.blocking_timeout = _positive("blocking_timeout", blocking_timeout)
        self.capacity_rules = CapacityRules(self.capacity, channel_capacity or {},
                                            self.process_capacity)
        self.clock: Clock = clock or time.time
        self.at_least_once_rules = AtLeastOnceRules(at_least_once)
        self.ack_timeout = _positive("ack_timeout", ack_timeout)

    # -- the core API ------------------------------------------------------

    def send(self, channel: str, message: dict[str, Any]) -> None:
        """Queue ``message`` on ``channel``; never waits for a receiver.

        Raises ``InvalidChannelName``, ``InvalidMessage``, ``MessageTooLarge``
        or ``ChannelFull``; in each case nothing was queued.
        """
        names.validate_channel_name(channel)
        body = codec.encode(message, self.max_message_size)
        queue = names.non_local_name(channel)
        self._send(channel, queue, body, self.clock() + self.expiry, self.get_capacity(queue))

    def send_many(
        self, items: Iterable[tuple[str, dict[str, Any]]],
    ) -> list[ChannelLayerError | None]:
        """``send`` each ``(channel, message)`` in order; report each outcome.

        Returns one entry per item: ``None`` when it was queued, else the
        error ``send`` would have raised (``ChannelFull``, ``InvalidMessage``
        ...). One bad or refused item never stops the others. A backend may
        queue them all in one round trip (the Redis layer pipelines them).
        """
        results, prepared = self._prepare_sends(items)
        outcomes = self._send_many([args for _, args in prepared])
        for (index, _), outcome in zip(prepared, outcomes, strict=True):
            results[index] = outcome
        return results

    def _prepare_sends(self, items: Iterable[tuple[str, dict[str, Any]]],
                       ) -> tuple[list[ChannelLayerError | None],
                                  list[tuple[int, tuple[str, str, bytes, float, int]]]]:
        """Validate and encode ``items``: the outcome list (errors filled in) and the
        ``(slot, _send arguments)`` of every item that can be sent."""
        results: list[ChannelLayerError | None] = []
        prepared = []
        for channel, message in items:
            try:
                names.validate_channel_name(channel)
                body = codec.encode(message, self.max_message_size)
            except ChannelLayerError as exc:
                results.append(exc)
                continue
            queue = names.non_local_name(channel)
            prepared.append((len(results), (channel, queue, body, self.clock() + self.expiry,
                                            self.get_capacity(queue))))
            results.append(None)
        return results, prepared

    def receive(
        self, channels: Iterable[str], block: bool = False, *, timeout: float | None = None
    ) -> Received:
        """Pop the next message from any of ``channels``: ``(channel, message)``.

        Returns ``(None, None)`` when nothing is waiting. With ``block`` it
        first waits up to ``timeout`` seconds (default: ``blocking_timeout``).
        A ``prefix!`` entry receives every ``prefix!local`` channel and the
        full name is returned. Each message is returned at most once.
        """
        queues = self._receive_queues(channels)
        wait = 0.0 if not block else self.blocking_timeout if timeout is None else max(timeout, 0)
        got = self._receive(queues, wait)
        if got is None:
            return None, None
        return got[0], codec.decode(got[1])

    receive_many = receive  # the pre-asgiref-1.0 name, still called by 1.x code

    def receive_batch(
        self, channels: Iterable[str], max_messages: int = 100, block: bool = False, *,
        timeout: float | None = None,
    ) -> list[tuple[str, dict[str, Any]]]:
        """Pop up to ``max_messages`` waiting messages from ``channels`` at once.

        Waits (with ``block``, like ``receive``) only for the first; then
        takes what else is already there, in the order ``receive`` would.
        Meant for a channel's only reader -- an interface server draining its
        ``prefix!`` queue: on a shared channel it takes messages that other
        readers would have had. Each message is returned at most once.
        """
        queues = self._receive_queues(channels)
        _check_batch(max_messages)
        wait = 0.0 if not block else self.blocking_timeout if timeout is None else max(timeout, 0)
        return [(channel, codec.decode(body))
                for channel, body in self._receive_batch(queues, max_messages, wait)]

    def new_channel(self, pattern: str) -> str:
        """A new, unused single-reader channel name: ``pattern`` plus a random id."""
        return names.new_channel_name(pattern)

    def get_capacity(self, channel: str) -> int:
        """The capacity of ``channel`` (of its queue, for ``prefix!local``)."""
        return self.capacity_rules.for_channel(names.non_local_name(channel))

    # -- extension: groups -------------------------------------------------

    def group_add(self, group: str, channel: str) -> None:
        """Make ``channel`` a member of ``group`` for the next ``group_expiry`` s."""
        names.validate_group_name(group)
        names.validate_channel_name(channel)
        self._group_add(group, channel, self.clock())

    def group_discard(self, group: str, channel: str) -> None:
        """Remove ``channel`` from ``group``; a non-member is no error."""
        names.validate_group_name(group)
        names.validate_channel_name(channel)
        self._group_discard(group, channel)

    def group_channels(self, group: str) -> list[str]:
        """The live members of ``group``.

        Memberships older than ``group_expiry`` and channels that let a
        message expire unread are not members.
        """
        names.validate_group_name(group)
        return self._group_channels(group, self.clock())

    def send_group(self, group: str, message: dict[str, Any]) -> int:
        """Send ``message`` to every member of ``group``; return how many got it.

        Never raises ``ChannelFull``: a full member misses this message, and
        the miss is counted in ``group_send_dropped_count``. The message is
        checked and encoded once, for all members.
        """
        names.validate_group_name(group)
        body = codec.encode(message, self.max_message_size)
        return self._send_group(group, body, self.clock())

    # -- extension: flush --------------------------------------------------

    def flush(self) -> None:
        """Drop every message, group, counter and process registration of this layer."""
        self._flush()

    # -- extension: statistics ---------------------------------------------

    def global_statistics(self) -> dict[str, Any]:
        """Totals over all channels: counts sent, pending, full, expired, dropped."""
        return self._statistics(None)

    def groups(self) -> list[str]:
        """The names of the groups that have members, sorted.

        A group is listed while at least one of its memberships is younger
        than ``group_expiry``; ``group_channels(name)`` gives its live members
        (a member whose channel let a message expire unread may keep a group
        listed until something looks at that channel's queue). Meant for
        operators' tools (``switchboard status``), not for application logic.
        """
        return sorted(self._group_names(self.clock()))

    def channel_statistics(self, channel: str) -> dict[str, Any]:
        """Counters for one channel (its queue, for ``prefix!local``).

        Keys: ``STATISTICS_KEYS`` plus ``capacity``; ``messages_max_age`` is
        the age in seconds of the oldest pending message (0 when none).
        """
        prefix_only = isinstance(channel, str) and channel.endswith("!")
        queue = names.non_local_name(names.validate_channel_name(channel, receive=prefix_only))
        stats = self._statistics(queue)
        stats["capacity"] = self.get_capacity(queue)
        return stats

    # -- extension: registry -----------------------------------------------

    def register_process(self, kind: str, name: str, info: dict[str, Any],
                         ttl: float) -> None:
        """Announce (or renew) process ``name`` of ``kind`` for the next ``ttl`` s.

        Workers call this as a heartbeat with ``info`` such as the channels
        they consume; the interface server asks ``live_processes("worker")``
        whether anyone consumes ``http.request`` before making a client wait.
        """
        names.validate_group_name(kind)
        names.validate_group_name(name)
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl <= 0:
            raise ValueError(f"register_process ttl must be a positive number, got {ttl!r}")
        body = codec.encode(info, self.max_message_size)
        self._register(kind, name, body, self.clock() + ttl)

    def unregister_process(self, kind: str, name: str) -> None:
        """Remove ``name`` from the registry (a clean shutdown); unknown names are fine."""
        names.validate_group_name(kind)
        names.validate_group_name(name)
        self._unregister(kind, name)

    def live_processes(self, kind: str) -> dict[str, dict[str, Any]]:
        """``{name: info}`` of every process of ``kind`` whose heartbeat is current."""
        names.validate_group_name(kind)
        return {name: codec.decode(body)
                for name, body in self._live_processes(kind, self.clock()).items()}

    # -- extension: async --------------------------------------------------

    async def send_async(self, channel: str, message: dict[str, Any]) -> None:
        """``send`` for asyncio callers; never blocks the event loop."""
        names.validate_channel_name(channel)
        body = codec.encode(message, self.max_message_size)
        queue = names.non_local_name(channel)
        await self._send_async(
            channel, queue, body, self.clock() + self.expiry, self.get_capacity(queue)
        )

    async def send_many_async(
        self, items: Iterable[tuple[str, dict[str, Any]]],
    ) -> list[ChannelLayerError | None]:
        """``send_many`` for asyncio callers: one outcome per item, in order.

        Each channel's messages are queued in the order given; the Redis layer
        writes them all in one round trip per server.
        """
        results, prepared = self._prepare_sends(items)
        outcomes = await self._send_many_async([args for _, args in prepared])
        for (index, _), outcome in zip(prepared, outcomes, strict=True):
            results[index] = outcome
        return results

    async def receive_async(
        self, channels: Iterable[str], *, timeout: float | None = None
    ) -> Received:
        """Wait up to ``timeout`` s (default ``blocking_timeout``) for a message.

        The event loop keeps running while it waits. Returns ``(None, None)``
        on timeout. Cancelling the wait loses no message: one that was being
        popped when the cancel landed is kept by the layer and returned by
        the next receive on its channel.
        """
        queues = self._receive_queues(channels)
        wait = self.blocking_timeout if timeout is None else max(timeout, 0)
        got = await self._receive_async(queues, wait)
        if got is None:
            return None, None
        return got[0], codec.decode(got[1])

    async def receive_batch_async(
        self, channels: Iterable[str], max_messages: int = 100, *,
        timeout: float | None = None,
    ) -> list[tuple[str, dict[str, Any]]]:
        """``receive_batch`` for asyncio callers: waits up to ``timeout`` for the first."""
        queues = self._receive_queues(channels)
        _check_batch(max_messages)
        wait = self.blocking_timeout if timeout is None else max(timeout, 0)
        return [(channel, codec.decode(body))
                for channel, body in await self._receive_batch_async(queues, max_messages, wait)]

    # -- extension: acks (at-least-once delivery) ---------------------------

    def is_at_least_once(self, channel: str) -> bool:
        """``True`` if ``channel`` (its queue) matches ``at_least_once``.

        Single-reader (``?``) and process-specific (``!``) channels never are.
        """
        return self.at_least_once_rules.matches(names.non_local_name(channel))

    def receive_with_receipt(
        self, channels: Iterable[str], block: bool = False, *, timeout: float | None = None
    ) -> ReceivedWithReceipt:
        """``receive``, plus a receipt: ``(channel, message, receipt)``.

        For an at-least-once channel the receipt is a ``Receipt`` and the
        message stays in the layer, invisible to other receivers, until
        ``ack(receipt)``; without an ack within ``ack_timeout`` seconds it is
        delivered again, before newer messages of its channel. For other
        channels the receipt is ``None`` and the message is gone, as with
        ``receive``. ``(None, None, None)`` when nothing came.
        """
        queues = self._receive_queues(channels)
        wait = 0.0 if not block else self.blocking_timeout if timeout is None else max(timeout, 0)
        got = self._receive_receipt(queues, wait, self._acked(queues))
        if got is None:
            return None, None, None
        return got[0], codec.decode(got[1]), got[2]

    def ack(self, receipt: str) -> bool:
        """Acknowledge one delivery: the message is removed for good.

        Returns ``False`` (and changes nothing) when the receipt is unknown,
        was acknowledged already, belongs to a delivery whose ``ack_timeout``
        has passed (the message is receivable again) or to a message that
        expired.
        """
        parsed = self._split_receipt(receipt)
        if parsed is None:
            return False
        return self._ack(parsed[0], parsed[1], self.clock())

    async def receive_with_receipt_async(
        self, channels: Iterable[str], *, timeout: float | None = None
    ) -> ReceivedWithReceipt:
        """``receive_with_receipt`` for asyncio callers (waits like ``receive_async``).

        Cancelling the wait loses no at-least-once message: one popped for a
        cancelled call is delivered again after ``ack_timeout``.
        """
        queues = self._receive_queues(channels)
        wait = self.blocking_timeout if timeout is None else max(timeout, 0)
        got = await self._receive_receipt_async(queues, wait, self._acked(queues))
        if got is None:
            return None, None, None
        return got[0], codec.decode(got[1]), got[2]

    async def ack_async(self, receipt: str) -> bool:
        """``ack`` for asyncio callers; never blocks the event loop."""
        parsed = self._split_receipt(receipt)
        if parsed is None:
            return False
        return await self._ack_async(parsed[0], parsed[1], self.clock())

    def _acked(self, queues: list[str]) -> frozenset[str]:
        if not self.at_least_once_rules:
            return frozenset()
        return frozenset(queue for queue in queues if self.is_at_least_once(queue))

    @staticmethod
    def _split_receipt(receipt: Any) -> tuple[str, str] | None:
        if not isinstance(receipt, str):
            raise TypeError(
                "ack takes the receipt that receive_with_receipt returned (a str), "
                f"got {receipt!r}"
            )
        return split_receipt(receipt)

    # -- extension: delay (scheduled messages) ------------------------------

    def send_later(self, channel: str, message: dict[str, Any], delay: float) -> None:
        """Store ``message`` in the layer, to be sent to ``channel`` in ``delay`` s.

        The message is checked now (``InvalidChannelName``, ``InvalidMessage``,
        ``MessageTooLarge``; a negative or non-finite ``delay`` raises
        ``ValueError``). ``deliver_due`` moves it into ``channel`` once it is
        due; its expiry counts from that due time.
        """
        names.validate_channel_name(channel)
        if (isinstance(delay, bool) or not isinstance(delay, int | float)
                or not math.isfinite(delay) or delay < 0):
            raise ValueError(f"send_later delay must be a finite number of seconds >= 0, "
                             f"got {delay!r}")
        body = codec.encode(message, self.max_message_size)
        queue = names.non_local_name(channel)
        due_at = self.clock() + delay
        self._send_later(channel, queue, body, due_at, due_at + self.expiry,
                         self.get_capacity(queue))

    def deliver_due(self, limit: int = DELIVER_DUE_LIMIT) -> int:
        """Move up to ``limit`` due scheduled messages into their channels; return how many.

        Earliest due first (ties in scheduling order), each move atomic, so
        several processes may call this at once. A due message whose channel
        is full stays scheduled and is tried again by the next call; one that
        is still undelivered ``expiry`` s after its due time is dropped and
        counted in ``messages_expired_count``.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
            raise ValueError(f"deliver_due limit must be a positive integer, got {limit!r}")
        return self._deliver_due(self.clock(), limit)

    def next_due(self) -> float | None:
        """When (by the layer's clock) the earliest scheduled message is due; ``None``
        when nothing is scheduled. A time in the past means ``deliver_due`` has work."""
        return self._next_due()

    def close(self) -> None:
        """Release connections and files. The layer must not be used after."""

    def check(self) -> None:
        """Raise ``LayerUnavailable`` now if the storage cannot be reached.

        Commands call this at startup so that a wrong URL fails fast.
        """

    @classmethod
    def from_url(cls, url: str, **options: Any) -> BaseChannelLayer:
        """Build a layer from its URL; query parameters become options."""
        _, query = split_options(url)
        merged = {**query, **options}
        check_options(cls, merged)
        return cls(**merged)

    # -- helpers -----------------------------------------------------------

    @staticmethod
    def _receive_queues(channels: Iterable[str]) -> list[str]:
        if isinstance(channels, str):
            raise InvalidChannelName(
                f"receive takes a list of channel names, not the str {channels!r}"
            )
        key = tuple(channels)
        if not all(type(c) is str for c in key):  # unhashable or not a name: unremembered
            return list(_checked_queues.__wrapped__(key))
        return list(_checked_queues(key))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} expiry={self.expiry} capacity={self.capacity}>"

    # -- storage hooks each backend implements -----------------------------
    # ``queue`` is always ``non_local_name(channel)``; ``body`` is encoded.

    def _send(self, channel: str, queue: str, body: bytes, expires_at: float,
              capacity: int) -> None:
        raise NotImplementedError

    def _receive(self, queues: list[str], timeout: float) -> tuple[str, bytes] | None:
        raise NotImplementedError

    async def _send_async(self, channel: str, queue: str, body: bytes, expires_at: float,
                          capacity: int) -> None:
        raise NotImplementedError

    async def _receive_async(self, queues: list[str],
                             timeout: float) -> tuple[str, bytes] | None:
        raise NotImplementedError

    def _send_many(self, sends: list[tuple[str, str, bytes, float, int]],
                   ) -> list[ChannelLayerError | None]:
        """One ``_send`` per ``(channel, queue, body, expires_at, capacity)``; backends may
        pipeline. Never raises a ``ChannelLayerError``: it is returned in its slot."""
        outcomes: list[ChannelLayerError | None] = []
        for args in sends:
            try:
                self._send(*args)
                outcomes.append(None)
            except ChannelLayerError as exc:
                outcomes.append(exc)
        return outcomes

    async def _send_many_async(self, sends: list[tuple[str, str, bytes, float, int]],
                               ) -> list[ChannelLayerError | None]:
        """``_send_many`` for asyncio callers: one ``_send_async`` after another."""
        outcomes: list[ChannelLayerError | None] = []
        for args in sends:
            try:
                await self._send_async(*args)
                outcomes.append(None)
            except ChannelLayerError as exc:
                outcomes.append(exc)
        return outcomes

    def _receive_batch(self, queues: list[str], max_messages: int,
                       timeout: float) -> list[tuple[str, bytes]]:
        """One (possibly blocking) receive, then non-blocking ones; backends may batch."""
        first = self._receive(queues, timeout)
        got = [] if first is None else [first]
        while 0 < len(got) < max_messages and (more := self._receive(queues, 0)) is not None:
            got.append(more)
        return got

    async def _receive_batch_async(self, queues: list[str], max_messages: int,
                                   timeout: float) -> list[tuple[str, bytes]]:
        first = await self._receive_async(queues, timeout)
        got = [] if first is None else [first]
        while 0 < len(got) < max_messages:
            more = await self._receive_async(queues, 0)
            if more is None:
                break
            got.append(more)
        return got

    def _group_add(self, group: str, channel: str, now: float) -> None:
        raise NotImplementedError

    def _group_discard(self, group: str, channel: str) -> None:
        raise NotImplementedError

    def _group_channels(self, group: str, now: float) -> list[str]:
        raise NotImplementedError

    def _send_group(self, group: str, body: bytes, now: float) -> int:
        raise NotImplementedError

    def _flush(self) -> None:
        raise NotImplementedError

    def _register(self, kind: str, name: str, body: bytes, expires_at: float) -> None:
        raise NotImplementedError

    def _unregister(self, kind: str, name: str) -> None:
        raise NotImplementedError

    def _live_processes(self, kind: str, now: float) -> dict[str, bytes]:
        raise NotImplementedError

    def _statistics(self, queue: str | None) -> dict[str, Any]:
        raise NotImplementedError

    def _group_names(self, now: float) -> list[str]:
        """Names of groups with a membership added after ``now - group_expiry``."""
        raise NotImplementedError(f"{type(self).__name__} cannot list its groups")

    def _receive_receipt(self, queues: list[str], timeout: float,
                         acked: frozenset[str]) -> Popped | None:
        """Pop like ``_receive``; messages of ``acked`` queues go in flight with a receipt.

        This default serves backends written before the ``acks`` extension, as
        long as no queue is at-least-once.
        """
        if acked:
            raise NotImplementedError(f"{type(self).__name__} has no at-least-once delivery")
        got = self._receive(queues, timeout)
        return None if got is None else (got[0], got[1], None)

    async def _receive_receipt_async(self, queues: list[str], timeout: float,
                                     acked: frozenset[str]) -> Popped | None:
        if acked:
            raise NotImplementedError(f"{type(self).__name__} has no at-least-once delivery")
        got = await self._receive_async(queues, timeout)
        return None if got is None else (got[0], got[1], None)

    def _ack(self, queue: str, key: str, now: float) -> bool:
        raise NotImplementedError

    async def _ack_async(self, queue: str, key: str, now: float) -> bool:
        raise NotImplementedError

    def _send_later(self, channel: str, queue: str, body: bytes, due_at: float,
                    expires_at: float, capacity: int) -> None:
        raise NotImplementedError

    def _deliver_due(self, now: float, limit: int) -> int:
        raise NotImplementedError

    def _next_due(self) -> float | None:
        raise NotImplementedError
