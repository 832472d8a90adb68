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

Batches: a worker that takes several messages in one receive runs each
consumer in its own ``Outbox`` as above, but moves a successful consumer's
held operations into the ``Batch`` instead of flushing them; the batch flushes
them all, in order, when the last message is done -- consecutive sends to
distinct channels go out in one ``send_many`` (one round trip on Redis). An
immediate operation of a later consumer (``immediately=True``, ``Group.add``)
first flushes what the batch holds, so operations still reach the layer in
the order the consumers made them.
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
_batch: ContextVar[Batch | None] = ContextVar("switchboard_batch", default=None)

#: Errors worth retrying: backpressure and a layer that went away for a moment.
RETRYABLE = (ChannelFull, ConnectionError)


def current_outbox() -> Outbox | None:
    """The outbox of the consumer running in this thread or task, if any."""
    return _active.get()


def current_batch() -> Batch | None:
    """The batch of messages this thread is working through, if any."""
    return _batch.get()


def before_immediate() -> None:
    """Flush what the current batch holds: an immediate operation comes after it."""
    batch = _batch.get()
    if batch is not None:
        batch.flush()


def send_with_retry(layer: Any, channel: str, content: dict[str, Any], *,
                    sleep: Sleep = time.sleep, retry_total: float = 2.0) -> bool:
    """Send now, retrying ChannelFull/connection errors for up to ``retry_total`` s.

    Returns ``True`` when sent; logs and returns ``False`` when it gave up or
    the message itself is bad. Never raises a layer error.
    """
    delays = None  # made at the first refusal: most sends go through at once
    # Also a bound in wall time: a try itself can take long (a layer that cannot
    # connect retries the connection inside ``send``), and every second spent here
    # holds a worker thread away from other messages.
    began = time.monotonic()
    tries = 0
    while True:
        tries += 1
        try:
            layer.send(channel, content)
            return True
        except RETRYABLE as exc:
            if delays is None:
                delays = retry_delays(total=retry_total)
            delay = next(delays, None)
            spent = time.monotonic() - began
            if delay is None or spent >= retry_total:
                logger.error("dropped a message to %r after %d tries over %.1f s: %s: %s",
                             channel, tries, max(spent, retry_total), type(exc).__name__,
                             exc)
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
        return flush_operations(pending, sleep=self.sleep, retry_total=self.retry_total)


class Batch:
    """The held operations of the consumers of one batch of messages, flushed together."""

    def __init__(self, *, sleep: Sleep = time.sleep, retry_total: float = 2.0) -> None:
        self.sleep = sleep
        self.retry_total = retry_total
        self.pending: list[tuple[str, Any, str, dict[str, Any]]] = []

    @contextlib.contextmanager
    def activate(self) -> Iterator[Batch]:
        token = _batch.set(self)
        try:
            yield self
        finally:
            _batch.reset(token)

    def take(self, outbox: Outbox) -> None:
        """Adopt the held operations of a consumer that returned."""
        self.pending.extend(outbox.pending)
        outbox.pending = []

    def flush(self) -> int:
        """Send everything held, in order; return how many messages went. Never raises."""
        pending, self.pending = self.pending, []
        return flush_operations(pending, sleep=self.sleep, retry_total=self.retry_total)


def flush_operations(operations: list[tuple[str, Any, str, dict[str, Any]]], *,
                     sleep: Sleep, retry_total: float) -> int:
    """Carry out held operations in order; consecutive sends to distinct channels of
    one layer go in one ``send_many``. Returns how many messages were sent."""
    sent = 0
    given_up: set[str] = set()
    index = 0
    while index < len(operations):
        kind, layer, name, content = operations[index]
        if kind == "channel":
            run: list[tuple[str, dict[str, Any]]] = []
            names_in_run: set[str] = set()
            while (index < len(operations) and operations[index][0] == "channel"
                   and operations[index][1] is layer
                   and operations[index][2] not in names_in_run):
                run.append((operations[index][2], operations[index][3]))
                names_in_run.add(operations[index][2])
                index += 1
            sent += _send_run(layer, run, given_up, sleep, retry_total)
            continue
        index += 1
        if kind == "group":
            sent += _send_group(layer, name, content)
        elif kind == "discard":
            _group_discard(layer, name, content["channel"])
    return sent


def _send_run(layer: Any, run: list[tuple[str, dict[str, Any]]], given_up: set[str],
              sleep: Sleep, retry_total: float) -> int:
    """Send to distinct channels (one round trip when the layer has ``send_many``);
    retry the refused ones one by one. A channel given up on gets nothing more."""
    live = []
    for name, content in run:
        if name in given_up:
            logger.error("dropped a message to %r: an earlier one to it was dropped", name)
        else:
            live.append((name, content))
    outcomes: list[Any] = [UNSENT] * len(live)
    send_many = getattr(layer, "send_many", None)
    if len(live) > 1 and send_many is not None:
        try:
            outcomes = send_many(live)
        except Exception:  # a layer that raises here: each one is retried below
            outcomes = [UNSENT] * len(live)
    sent = 0
    for (name, content), outcome in zip(live, outcomes, strict=True):
        retry = outcome is UNSENT or isinstance(outcome, RETRYABLE)
        if outcome is None or (retry and send_with_retry(
                layer, name, content, sleep=sleep, retry_total=retry_total)):
            sent += 1
            continue
        if not retry:
            logger.error("dropped a message to %r: %s: %s", name,
                         type(outcome).__name__, outcome)
        given_up.add(name)
    return sent


#: Stands for "not sent yet" in ``_send_run``: send it (with retries) one by one.
UNSENT = object()


def _group_discard(layer: Any, group: str, channel: str) -> None:
    try:
        layer.group_discard(group, channel)
    except Exception as exc:  # like a send: logged, never raised
        logger.error("could not take %r out of group %r: %s: %s", channel, group,
                     type(exc).__name__, exc)

def _send_group(layer: Any, group: str, content: dict[str, Any]) -> int:
    try:
        layer.send_group(group, content)
        return 1
    except Exception as exc:  # group sends never raise ChannelFull; anything else is logged
        logger.error("dropped a message to group %r: %s: %s", group, type(exc).__name__, exc)
        return 0
