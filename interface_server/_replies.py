"""``ReplyRouter``: reply-channel names to the connections waiting on them.

How this works: a server process owns one process-specific prefix
``<server-id>!``. Each HTTP request and each WebSocket gets a reply channel
``<server-id>!<local>``, where ``<local>`` is a counter, never reused within
the process. The single reply loop receives everything sent to the prefix and
asks the router which connection a channel belongs to. A reply for a channel
that is gone (the client left, the request finished) is dropped and counted:
it is normal, never an error.
"""

from __future__ import annotations

import itertools
from typing import Generic, TypeVar

from asgi_spec import names

T = TypeVar("T")


def new_server_id() -> str:
    """A random id for this server process, valid as a channel-name prefix."""
    return f"interfaceserver.{names.random_suffix(12)}"


class ReplyRouter(Generic[T]):
    """Maps the local parts of ``<prefix>`` reply channels to their targets."""

    def __init__(self, server_id: str) -> None:
        self.prefix = names.validate_channel_name(server_id + "!", receive=True)
        self._targets: dict[str, T] = {}
        self._counter = itertools.count(1)
        self.dropped = 0  # replies for channels that are not (or no longer) here

    def add(self, target: T) -> str:
        """Register ``target``; return its new reply channel name."""
        local = format(next(self._counter), "x")
        self._targets[local] = target
        return self.prefix + local

    def discard(self, channel: str) -> None:
        """Forget ``channel`` (unknown channels are fine)."""
        if channel.startswith(self.prefix):
            self._targets.pop(channel[len(self.prefix):], None)

    def route(self, channel: str) -> T | None:
        """The target of ``channel``, or None (counted in ``dropped``)."""
        target = None
        if channel.startswith(self.prefix):
            target = self._targets.get(channel[len(self.prefix):])
        if target is None:
            self.dropped += 1
        return target

    def __len__(self) -> int:
        return len(self._targets)

    def __contains__(self, channel: object) -> bool:
        return (isinstance(channel, str) and channel.startswith(self.prefix)
                and channel[len(self.prefix):] in self._targets)
