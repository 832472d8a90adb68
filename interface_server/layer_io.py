"""The server's only door to the channel layer: sends, receives and registry calls as Deferreds.

How this works: protocols never touch the layer. They call the server, which
calls a ``LayerIO``:

* ``AsyncioLayerIO`` (production) runs the layer's async face on the
  reactor's own event loop (Twisted runs on the asyncio reactor) and wraps it
  with Deferreds; the layer's synchronous-only calls (the registry) run on one
  background thread. The reactor thread never blocks on the layer. Sends are
  gathered: the messages of one turn of the loop go out in one
  ``send_many_async`` (one round trip to each Redis server); while that batch
  is in flight new sends queue up and form the next batch. Batches go out one
  at a time and in order, so messages reach the layer in the order they were
  given -- two ``websocket.receive`` of one socket never overtake each other.
  Receives are re-armed late: after a receive that emptied the reply queue
  (fewer than ``REPLY_BATCH`` replies), the next one waits until a send batch
  has been written (at once if one is in flight), or ``REARM_DELAY`` at most.
  On a request/reply the next send comes soon, so the receive's own write to
  the layer happens while the server waits for the worker, not while the
  client's next message waits for the server (on Redis, one write and its
  Python off each unloaded round trip's critical path). A reply that arrives
  in that window waits for the re-arm: ``REARM_DELAY`` bounds the extra
  latency of replies nobody asked for lately (pushes); a full batch, an empty
  one (timed out) or a failed one re-arms at once.
* ``ImmediateLayerIO`` (tests) calls the synchronous API at once and returns
  already-fired Deferreds, so a protocol test runs start to finish inside
  ``dataReceived`` with no event loop and no threads. Its sends, being
  synchronous, are in order too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from twisted.internet import task
from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure

from asgi_spec.base import BaseChannelLayer

#: Replies taken from the layer per round trip, at most.
REPLY_BATCH = 256
#: Messages sent to the layer per round trip, at most.
SEND_BATCH = 256
#: After a receive that emptied the reply queue, the next waits for the next send
#: batch to be written, this long at most (s): see the module's docstring.
REARM_DELAY = 0.001

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

    def __init__(self, layer: BaseChannelLayer, rearm_delay: float = REARM_DELAY) -> None:
        self.layer = layer
        self.rearm_delay = rearm_delay
        self._rearm: asyncio.Future[None] | None = None  # while a receive waits to re-arm
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="layer-sync")
        self._queued: list[tuple[str, dict[str, Any], Deferred[None]]] = []
        self._sender: asyncio.Task[None] | None = None  # while sends are queued or in flight
        self._writing = False  # a batch is in flight (written, or being written)
        self._receiver: asyncio.Task[None] | None = None  # while a receive is asked or waits
        self._next_receive: tuple[list[str], float | None, Deferred[Any]] | None = None

    def send(self, channel: str, message: dict[str, Any]) -> Deferred[None]:
        """Queue ``message`` for the next batch; the Deferred fires with its own outcome."""
        done: Deferred[None] = Deferred()
        self._queued.append((channel, message, done))
        if self._sender is None:
            # The task's first step runs on the loop's next turn, so it finds every
            # message queued during this one.
            self._sender = asyncio.get_event_loop().create_task(self._send_queued())
        return done

    async def _send_queued(self) -> None:
        """Send batches until the queue is empty, one round trip at a time, in order."""
        try:
            while self._queued:
                batch = self._queued[:SEND_BATCH]
                del self._queued[:SEND_BATCH]
                items = [(channel, message) for channel, message, _ in batch]
                if self._rearm is not None and not self._rearm.done():
                    # the receive's turn comes after this task's write below
                    self._rearm.set_result(None)
                self._writing = True
                try:
                    outcomes: list[Any] = await self.layer.send_many_async(items)
                except asyncio.CancelledError as exc:  # shutting down: nothing more goes out
                    for _, _, done in batch + self._queued:
                        done.errback(Failure(exc))
                    self._queued.clear()
                    raise
                except Exception as exc:  # every sender of the batch hears of it
                    outcomes = [exc] * len(batch)
                finally:
                    self._writing = False
                for (_, _, done), outcome in zip(batch, outcomes, strict=True):
                    if outcome is None:
                        done.callback(None)
                    else:
                        done.errback(Failure(outcome))
        finally:
            self._sender = None

    def receive_batch(self, channels: list[str],
                      timeout: float | None) -> Deferred[list[Received]]:
        """Receive in the receiving task, which fires the Deferred itself, in the turn
        of the loop that read the replies (``Deferred.fromFuture`` would fire it one
        turn later). A caller that asks again from its callback -- the reply loop --
        is served by the same task: no task and no turn of the loop per burst."""
        received: Deferred[list[Received]] = Deferred(self._cancel_receive)
        self._next_receive = (channels, timeout, received)
        if self._receiver is None:
            self._receiver = asyncio.get_event_loop().create_task(self._receive_asked())
        return received

    async def _send_or_delay(self) -> None:
        """Return once the next send batch is written (at once if one is in flight:
        its write went out already), or after ``rearm_delay``."""
        if self._writing:
            return
        loop = asyncio.get_running_loop()
        self._rearm = rearm = loop.create_future()
        timer = loop.call_later(self.rearm_delay, _resolve, rearm)
        try:
            await rearm
        finally:
            timer.cancel()
            self._rearm = None

    def _cancel_receive(self, _: Deferred[Any]) -> None:
        if self._receiver is not None:
            self._receiver.cancel()

    async def _receive_asked(self) -> None:
        """Run the receives asked for, one after the other, while they keep coming;
        after one that emptied the queue, the next is re-armed late (``_send_or_delay``)."""
        rearm_late = False
        try:
            while self._next_receive is not None:
                channels, timeout, received = self._next_receive
                self._next_receive = None
                try:
                    if rearm_late:
                        await self._send_or_delay()
                    got = await self.layer.receive_batch_async(channels, REPLY_BATCH,
                                                               timeout=timeout)
                except BaseException as exc:  # a cancel too: the Deferred hears of it
                    rearm_late = False
                    if not received.called:
                        received.errback(Failure(exc))
                    if not isinstance(exc, Exception):
                        raise
                    continue
                rearm_late = 0 < len(got) < REPLY_BATCH
                received.callback(got)
        finally:
            self._receiver = None
            if self._next_receive is not None and not asyncio.get_event_loop().is_closed():
                # asked again while a cancelled receive was unwinding: serve it
                self._receiver = asyncio.get_event_loop().create_task(self._receive_asked())

    def call(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        loop = asyncio.get_event_loop()
        return Deferred.fromFuture(loop.run_in_executor(self._executor, fn, *args))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


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
