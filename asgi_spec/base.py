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
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

from asgi_spec import codec, names
from asgi_spec.capacity import CapacityRules
from asgi_spec.exceptions import (
    ChannelFull,
    InvalidChannelName,
    LayerConfigError,
    MessageTooLarge,
)
from asgi_spec.options import check_options, split_options

Clock = Callable[[], float]
Received = tuple[str, dict[str, Any]] | tuple[None, None]

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


def _positive(name: str, value: Any, *, integer: bool = False) -> Any:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value <= 0:
        kind = "a positive integer" if integer else "a positive number"
        raise LayerConfigError(f"layer option {name!r} must be {kind}, got {value!r}")
    return value


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
    * ``max_message_size`` -- bytes of encoded message before ``send`` raises
      ``MessageTooLarge`` (1 MiB);
    * ``blocking_timeout`` -- how long ``receive(..., block=True)`` waits (1 s);
    * ``clock`` -- a callable returning wall-clock seconds (``time.time``);
      tests inject ``asgi_spec.testing.FakeClock``.
    """

    #: The extensions every backend provides. ``async`` is Switchboard's
    #: asyncio face: ``receive_async`` and ``send_async`` coroutines.
    #: ``registry`` holds heartbeats of live processes (workers, servers).
    extensions: ClassVar[list[str]] = ["groups", "flush", "statistics", "async", "registry"]

    ChannelFull = ChannelFull
    MessageTooLarge = MessageTooLarge

    def __init__(
        self,
        *,
        expiry: float = 60,
        group_expiry: float = 86400,
        capacity: int = 100,
        channel_capacity: Mapping[Any, int] | None = None,
        max_message_size: int = codec.DEFAULT_MAX_MESSAGE_SIZE,
        blocking_timeout: float = 1.0,
        clock: Clock | None = None,
    ) -> None:
        self.expiry = _positive("expiry", expiry)
        self.group_expiry = _positive("group_expiry", group_expiry)
        self.capacity = _positive("capacity", capacity, integer=True)
        self.max_message_size = _positive("max_message_size", max_message_size, integer=True)
        self.blocking_timeout = _positive("blocking_timeout", blocking_timeout)
        self.capacity_rules = CapacityRules(self.capacity, channel_capacity or {})
        self.clock: Clock = clock or time.time

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
        queues = list(dict.fromkeys(names.validate_channel_name(c, receive=True)
                                    for c in channels))
        if not queues:
            raise InvalidChannelName("receive needs at least one channel name")
        return queues

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
