"""Atomic consumers: the sends a consumer makes are held, then flushed when it returns.

How this works: the worker runs each consumer inside ``Outbox.activate()``,
which sets a ``ContextVar`` for the current thread (or asyncio task). While it
is set, ``Channel.send`` and ``Group.send`` append to the outbox instead of
touching the layer. When the consumer returns, the worker calls ``flush()``,
which sends everything in order; when it raises, the outbox is dropped and
nothing is sent. ``send(..., immediately=True)`` bypasses the outbox.

A flushed send that meets ``ChannelFull`` (or a lost layer connection) is
retried after growing delays adding up to ``retry_total`` seconds (2 s), then
logged and dropped. Later held sends to a channel that was given up on are
dropped too, so a client never sees frame 3 after a lost frame 2. Flushing
never raises: a worker must not die because a reply could not be delivered.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

from asgi_spec.exceptions import ChannelFull, ChannelLayerError
from worker.backoff import retry_delays

logger = logging.getLogger("worker.outbox")

Sleep = Callable[[float], None]

_active: ContextVar[Outbox | None] = ContextVar("switchboard_outbox", default=None)

#: Errors worth retrying: backpressure and a layer that went away for a moment.
RETRYABLE = (ChannelFull, ConnectionError)


def current_outbox() -> Outbox | None:
    """The outbox of the consumer running in this thread or task, if any."""
    return _active.get()


def send_with_retry(layer: Any, channel: str, content: dict[str, Any], *,
                    sleep: Sleep = time.sleep, retry_total: float = 2.0) -> bool:
    """Send now, retrying ChannelFull/connection errors for up to ``retry_total`` s.

    Returns ``True`` when sent; logs and returns ``False`` when it gave up or
    the message itself is bad. Never raises a layer error.
    """
    delays = retry_delays(total=retry_total)
    tries = 0
    while True:
        tries += 1
        try:
            layer.send(channel, content)
            return True
        except RETRYABLE as exc:
            delay = next(delays, None)
            if delay is None:
                logger.error("dropped a message to %r after %d tries over %.1f s: %s: %s",
                             channel, tries, retry_total, type(exc).__name__, exc)
                return False
            sleep(delay)
        except (ChannelLayerError, ValueError, TypeError) as exc:
            logger.error("dropped a message to %r: %s: %s", channel, type(exc).__name__, exc)
            return False


class Outbox:
    """The held sends of one consumer run."""

    def __init__(self, layer: Any, *, sleep: Sleep = time.sleep,
                 retry_total: float = 2.0) -> None:
        self.layer = layer
        self.sleep = sleep
        self.retry_total = retry_total
        #: ``(kind, layer, name, content)`` with kind ``"channel"``, ``"group"`` or
        #: ``"discard"`` (a group membership to end, ``content["channel"]``).
        self.pending: list[tuple[str, Any, str, dict[str, Any]]] = []

    @contextlib.contextmanager
    def activate(self) -> Iterator[Outbox]:
        """Hold sends made in this thread (or task) until ``flush``."""
        token = _active.set(self)
        try:
            yield self
        finally:
            _active.reset(token)

    def hold(self, kind: str, layer: Any, name: str, content: dict[str, Any]) -> None:
        """Hold a send (kind ``"channel"`` or ``"group"``), or a ``"discard"`` of
        ``content["channel"]`` from group ``name``, until ``flush``."""
        self.pending.append((kind, layer, name, content))

    def discard(self) -> None:
        """Forget every held send (the consumer raised)."""
        self.pending.clear()

    def flush(self) -> int:
        """Send the held messages in order; return how many were sent. Never raises."""
        pending, self.pending = self.pending, []
        sent = 0
        given_up: set[str] = set()
        for kind, layer, name, content in pending:
            if kind == "group":
                sent += self._send_group(layer, name, content)
            elif kind == "discard":
                self._group_discard(layer, name, content["channel"])
            elif name in given_up:
                logger.error("dropped a message to %r: an earlier one to it was dropped", name)
            elif send_with_retry(layer, name, content, sleep=self.sleep,
                                 retry_total=self.retry_total):
                sent += 1
            else:
                given_up.add(name)
        return sent

    @staticmethod
    def _group_discard(layer: Any, group: str, channel: str) -> None:
        try:
            layer.group_discard(group, channel)
        except Exception as exc:  # like a send: logged, never raised
            logger.error("could not take %r out of group %r: %s: %s", channel, group,
                         type(exc).__name__, exc)

    @staticmethod
    def _send_group(layer: Any, group: str, content: dict[str, Any]) -> int:
        try:
            layer.send_group(group, content)
            return 1
        except Exception as exc:  # group sends never raise ChannelFull; anything else is logged
            logger.error("dropped a message to group %r: %s: %s", group, type(exc).__name__, exc)
            return 0
