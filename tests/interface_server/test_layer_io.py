"""Tests for ``interface_server.layer_io``: the Deferred face of the layer, and send order."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock

from asgi_spec.exceptions import ChannelFull
from asgi_spec.layers.memory import MemoryChannelLayer
from interface_server.layer_io import AsyncioLayerIO, ImmediateLayerIO, OrderedSender


def result_of(d: Deferred[Any]) -> Any:
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "the Deferred has not fired"
    return box[0]


# -- OrderedSender -------------------------------------------------------------------


class ManualSend:
    """A send whose completions the test decides."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any], Deferred[None]]] = []

    def __call__(self, channel: str, message: dict[str, Any]) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.calls.append((channel, message, d))
        return d


def test_ordered_sender_sends_one_at_a_time_in_order() -> None:
    """The next message goes to the layer only after the previous send completed."""
    send = ManualSend()
    sender = OrderedSender(send)
    done = [sender.send("c", {"n": n}) for n in range(3)]
    assert [m["n"] for _, m, _ in send.calls] == [0]
    assert sender.pending == 3
    send.calls[0][2].callback(None)
    assert [m["n"] for _, m, _ in send.calls] == [0, 1]
    send.calls[1][2].callback(None)
    send.calls[2][2].callback(None)
    assert [m["n"] for _, m, _ in send.calls] == [0, 1, 2]
    assert [result_of(d) for d in done] == [None, None, None]
    assert sender.pending == 0


def test_ordered_sender_failure_goes_to_its_own_caller() -> None:
    """A failed send fails only its own Deferred; the queue moves on."""
    send = ManualSend()
    sender = OrderedSender(send)
    first, second = sender.send("c", {}), sender.send("c", {})
    send.calls[0][2].errback(ChannelFull("full"))
    send.calls[1][2].callback(None)
    assert result_of(first).check(ChannelFull)
    assert result_of(second) is None


def test_ordered_sender_synchronous_sends_do_not_recurse() -> None:
    """Thousands of sends that complete at once run in a loop, not a recursion."""
    layer = MemoryChannelLayer(capacity=10_000)
    sender = OrderedSender(ImmediateLayerIO(layer).send)
    for n in range(5000):
        sender.send("c", {"n": n})
    assert [layer.receive(["c"])[1]["n"] for _ in range(3)] == [0, 1, 2]


# -- ImmediateLayerIO ------------------------------------------------------------------


def test_immediate_send_receive_call() -> None:
    """Every operation completes within the call; errors are failed Deferreds."""
    layer = MemoryChannelLayer(capacity=1)
    io = ImmediateLayerIO(layer)
    assert result_of(io.send("c", {"a": 1})) is None
    assert result_of(io.send("c", {"a": 2})).check(ChannelFull)
    assert result_of(io.receive_batch(["c"], 1.0)) == [("c", {"a": 1})]
    assert result_of(io.call(lambda x: x * 2, 21)) == 42


def test_immediate_receive_waits_on_the_clock() -> None:
    """With a clock, an empty receive answers [] only after its timeout."""
    clock = MemoryReactorClock()
    io = ImmediateLayerIO(MemoryChannelLayer(), clock=clock)
    box: list[Any] = []
    io.receive_batch(["srv!"], 5.0).addCallback(box.append)
    clock.advance(4.9)
    assert box == []
    clock.advance(0.1)
    assert box == [[]]


# -- AsyncioLayerIO ---------------------------------------------------------------------


def test_asyncio_layer_io_bridges_the_async_face() -> None:
    """Sends and receives run on the event loop; a waiting receive wakes on a send."""

    async def scenario() -> tuple[Any, Any, Any]:
        loop = asyncio.get_running_loop()
        io = AsyncioLayerIO(MemoryChannelLayer(capacity=1))
        waiting = io.receive_batch(["srv!"], timeout=5.0)
        await io.send("srv!abc", {"x": b"1"}).asFuture(loop)
        got = await waiting.asFuture(loop)
        await io.send("c", {}).asFuture(loop)
        with pytest.raises(ChannelFull):
            await io.send("c", {}).asFuture(loop)
        thread = await io.call(lambda: threading.current_thread().name).asFuture(loop)
        empty = await io.receive_batch(["other"], timeout=0.01).asFuture(loop)
        io.close()
        return got, thread, empty

    got, thread, empty = asyncio.run(scenario())
    assert got == [("srv!abc", {"x": b"1"})]
    assert thread.startswith("layer-sync") and thread != threading.current_thread().name
    assert empty == []


def test_asyncio_receive_can_be_cancelled() -> None:
    """Cancelling the Deferred of a waiting receive cancels the wait itself."""

    async def scenario() -> bool:
        io = AsyncioLayerIO(MemoryChannelLayer())
        waiting = io.receive_batch(["srv!"], timeout=30.0)
        waiting.addErrback(lambda f: None)
        await asyncio.sleep(0)
        waiting.cancel()
        await asyncio.sleep(0)
        io.close()
        return waiting.called

    assert asyncio.run(scenario()) is True
