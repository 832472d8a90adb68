"""The server's only door to the channel layer: sends, receives and registry calls as Deferreds.

How this works: protocols never touch the layer. They call the server, which
calls a ``LayerIO``:

* ``AsyncioLayerIO`` (production) runs the layer's async face
  (``send_async`` / ``receive_async``) as asyncio tasks on the reactor's own
  event loop (Twisted runs on the asyncio reactor) and wraps them with
  ``Deferred.fromFuture``; the layer's synchronous-only calls (the registry)
  run on one background thread. The reactor thread never blocks on the layer.
* ``ImmediateLayerIO`` (tests) calls the synchronous API at once and returns
  already-fired Deferreds, so a protocol test runs start to finish inside
  ``dataReceived`` with no event loop and no threads.

``OrderedSender`` keeps one connection's messages in order: the next send
starts only when the previous one is done, so two ``websocket.receive`` can
never overtake each other on a layer with several connections.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from twisted.internet import task
from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure

from asgi_spec.base import BaseChannelLayer

#: Replies taken from the layer per round trip, at most.
REPLY_BATCH = 256

T = TypeVar("T")
Received = tuple[str, dict[str, Any]] | tuple[None, None]


class LayerIO(Protocol):
    layer: BaseChannelLayer

    def send(self, channel: str, message: dict[str, Any]) -> Deferred[None]: ...

    def receive_batch(self, channels: list[str],
                      timeout: float | None) -> Deferred[list[Received]]: ...

    def call(self, fn: Callable[..., T], *args: Any) -> Deferred[T]: ...

    def close(self) -> None: ...


class AsyncioLayerIO:
    """The layer's async face bridged to Deferreds (needs the asyncio reactor)."""

    def __init__(self, layer: BaseChannelLayer) -> None:
        self.layer = layer
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="layer-sync")

    def send(self, channel: str, message: dict[str, Any]) -> Deferred[None]:
        return Deferred.fromFuture(asyncio.ensure_future(self.layer.send_async(channel, message)))

    def receive_batch(self, channels: list[str],
                      timeout: float | None) -> Deferred[list[Received]]:
        return Deferred.fromFuture(asyncio.ensure_future(
            self.layer.receive_batch_async(channels, REPLY_BATCH, timeout=timeout)))

    def call(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        loop = asyncio.get_event_loop()
        return Deferred.fromFuture(loop.run_in_executor(self._executor, fn, *args))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class ImmediateLayerIO:
    """Synchronous layer calls wrapped in fired Deferreds: for deterministic tests.

    ``receive_batch`` returns what is waiting at once; when nothing is, it
    answers ``[]`` after ``timeout`` seconds (default: the layer's
    ``blocking_timeout``) of ``clock`` (an ``IReactorTime`` such as
    ``MemoryReactorClock``), so a reply loop never spins.
    """

    def __init__(self, layer: BaseChannelLayer, clock: Any = None) -> None:
        self.layer = layer
        self.clock = clock

    def send(self, channel: str, message: dict[str, Any]) -> Deferred[None]:
        return self.call(self.layer.send, channel, message)

    def receive_batch(self, channels: list[str],
                      timeout: float | None) -> Deferred[list[Received]]:
        try:
            got = self.layer.receive_batch(channels, REPLY_BATCH)
        except Exception as exc:
            return fail(exc)
        if got or self.clock is None:
            return succeed(got)
        wait = self.layer.blocking_timeout if timeout is None else timeout
        return task.deferLater(self.clock, wait, list)

    def call(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        try:
            return succeed(fn(*args))
        except Exception as exc:
            return fail(exc)

    def close(self) -> None:
        pass


class OrderedSender:
    """Sends through ``send`` one message at a time, in the order they were given."""

    __slots__ = ("_busy", "_pumping", "_queue", "_send")

    def __init__(self, send: Callable[[str, dict[str, Any]], Deferred[None]]) -> None:
        self._send = send
        self._queue: deque[tuple[str, dict[str, Any], Deferred[None]]] = deque()
        self._busy = False
        self._pumping = False

    def send(self, channel: str, message: dict[str, Any]) -> Deferred[None]:
        """Queue ``message``; the Deferred fires (or fails) when its own send does."""
        done: Deferred[None] = Deferred()
        self._queue.append((channel, message, done))
        self._pump()
        return done

    @property
    def pending(self) -> int:
        return len(self._queue) + self._busy

    def _pump(self) -> None:
        if self._pumping:
            return  # a synchronous send finished inside the loop below
        self._pumping = True
        try:
            while not self._busy and self._queue:
                channel, message, done = self._queue.popleft()
                self._busy = True
                self._send(channel, message).addBoth(self._finished, done)
        finally:
            self._pumping = False

    def _finished(self, result: Any, done: Deferred[None]) -> None:
        self._busy = False
        if isinstance(result, Failure):
            done.errback(result)
        else:
            done.callback(None)
        self._pump()
