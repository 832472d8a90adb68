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
from interface_server.layer_io import REPLY_BATCH, AsyncioLayerIO, ImmediateLayerIO


def result_of(d: Deferred[Any]) -> Any:
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "the Deferred has not fired"
    return box[0]


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
        for _ in range(10):  # the cancelled wait unwinds over a few turns
            await asyncio.sleep(0)
        left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        io.close()
        return waiting.called and not left

    assert asyncio.run(scenario()) is True


def test_asyncio_receive_asked_again_right_after_a_cancel_is_served() -> None:
    """A receive asked for while a cancelled one is still unwinding is not lost."""

    async def scenario() -> Any:
        loop = asyncio.get_running_loop()
        layer = MemoryChannelLayer()
        io = AsyncioLayerIO(layer)
        first = io.receive_batch(["srv!"], timeout=30.0)
        first.addErrback(lambda f: None)
        await asyncio.sleep(0)
        first.cancel()
        second = io.receive_batch(["srv!"], timeout=5.0)  # before the cancel unwound
        await layer.send_async("srv!b", {"n": 2})
        got = await second.asFuture(loop)
        io.close()
        return got

    assert asyncio.run(scenario()) == [("srv!b", {"n": 2})]


def test_asyncio_receives_asked_from_the_callback_share_one_task() -> None:
    """The reply loop asks for its next burst from the callback of the last one:
    one task serves them all."""

    async def scenario() -> tuple[list[Any], int]:
        loop = asyncio.get_running_loop()
        layer = MemoryChannelLayer()
        io = AsyncioLayerIO(layer)
        got: list[Any] = []
        tasks: set[Any] = set()
        done = loop.create_future()

        def ask() -> None:
            io.receive_batch(["srv!"], timeout=5.0).addCallback(on_burst)

        def on_burst(burst: Any) -> None:
            got.extend(burst)
            tasks.add(asyncio.current_task())
            if len(got) < 3:
                ask()
            elif not done.done():
                done.set_result(None)

        ask()
        for n in range(3):
            await asyncio.sleep(0)
            await layer.send_async(f"srv!{n}", {"n": n})
        await asyncio.wait_for(done, 5)
        io.close()
        return got, len(tasks)

    got, tasks = asyncio.run(scenario())
    assert [message["n"] for _, message in got] == [0, 1, 2]
    assert tasks == 1


def test_asyncio_receive_fires_its_deferred_from_the_receiving_task() -> None:
    """The reply loop's callbacks run in the turn of the loop that read the replies,
    inside the receiving task, not one turn later from a future's done callback."""

    async def scenario() -> list[Any]:
        loop = asyncio.get_running_loop()
        layer = MemoryChannelLayer()
        io = AsyncioLayerIO(layer)
        seen: list[Any] = []
        waiting = io.receive_batch(["srv!"], timeout=5.0)
        waiting.addCallback(lambda got: seen.append((got, asyncio.current_task())))
        await asyncio.sleep(0)
        await layer.send_async("srv!a", {"n": 1})
        await waiting.asFuture(loop)
        io.close()
        return seen

    [(got, task)] = asyncio.run(scenario())
    assert got == [("srv!a", {"n": 1})]
    assert task is not None


class CountingLayer(MemoryChannelLayer):
    """A memory layer that records the size of every ``send_many_async`` call."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.batches: list[int] = []
        self.fail_with: BaseException | None = None

    async def send_many_async(self, items: Any) -> list[Any]:
        items = list(items)
        self.batches.append(len(items))
        await asyncio.sleep(0)  # a round trip: later sends queue up meanwhile
        if self.fail_with is not None:
            raise self.fail_with
        return await super().send_many_async(items)


def test_asyncio_sends_of_one_turn_go_out_as_one_batch_in_order() -> None:
    """Sends made in one turn of the loop form one ``send_many_async``; sends made while
    it is in flight form the next; every message reaches the layer in the order given."""

    async def scenario() -> tuple[list[int], list[Any]]:
        loop = asyncio.get_running_loop()
        layer = CountingLayer(capacity=1000)
        io = AsyncioLayerIO(layer)
        first = [io.send("c", {"n": n}) for n in range(10)]
        await asyncio.sleep(0)  # the first batch is now in flight
        second = [io.send("c", {"n": n}) for n in range(10, 15)]
        for d in first + second:
            await d.asFuture(loop)
        io.close()
        return layer.batches, [layer.receive(["c"])[1]["n"] for _ in range(15)]

    batches, order = asyncio.run(scenario())
    assert batches == [10, 5]
    assert order == list(range(15))


def test_asyncio_send_outcomes_reach_their_own_senders() -> None:
    """In one batch, a refused message fails only its own Deferred, with the layer's
    error; a batch that fails as a whole fails each of its senders, and the next batch
    is still sent."""

    async def scenario() -> tuple[list[Any], list[Any], Any]:
        loop = asyncio.get_running_loop()
        layer = CountingLayer(capacity=1)
        io = AsyncioLayerIO(layer)

        async def outcome(d: Deferred[None]) -> Any:
            try:
                return await d.asFuture(loop)
            except Exception as exc:
                return exc

        mixed = [io.send("c", {}), io.send("c", {}), io.send("d", {})]
        mixed_results = [await outcome(d) for d in mixed]
        layer.fail_with = RuntimeError("the layer broke")
        broken = [io.send("e", {}), io.send("f", {})]
        broken_results = [await outcome(d) for d in broken]
        layer.fail_with = None
        after = await outcome(io.send("g", {}))
        io.close()
        return mixed_results, broken_results, after

    mixed, broken, after = asyncio.run(scenario())
    assert mixed[0] is None and isinstance(mixed[1], ChannelFull) and mixed[2] is None
    assert [str(exc) for exc in broken] == ["the layer broke"] * 2
    assert after is None


class RecordingLayer(MemoryChannelLayer):
    """A memory layer that logs, in order, each send batch and each receive it is asked
    for, with the loop's time."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.log: list[tuple[str, float]] = []

    async def send_many_async(self, items: Any) -> list[Any]:
        self.log.append(("send", asyncio.get_running_loop().time()))
        return await super().send_many_async(items)

    async def receive_batch_async(self, channels: Any, max_messages: int,
                                  timeout: float | None = None) -> list[Any]:
        self.log.append(("receive", asyncio.get_running_loop().time()))
        return await super().receive_batch_async(channels, max_messages, timeout=timeout)


def run_reply_loop(io: AsyncioLayerIO, bursts: int, feed: Any) -> list[Any]:
    """Drive ``io`` as the server's reply loop does (the next receive asked from the
    callback of the last) for ``bursts`` bursts; ``feed(n)`` (a coroutine) puts
    burst ``n`` in the layer. Returns what each burst got."""

    async def scenario() -> list[Any]:
        loop = asyncio.get_running_loop()
        got: list[Any] = []
        done = loop.create_future()

        def on_burst(burst: Any) -> None:
            got.append(burst)
            if len(got) < bursts:
                io.receive_batch(["srv!"], timeout=5.0).addCallback(on_burst)
            elif not done.done():
                done.set_result(None)

        io.receive_batch(["srv!"], timeout=5.0).addCallback(on_burst)
        for n in range(bursts):
            await feed(n)
        await asyncio.wait_for(done, 10)
        io.close()
        return got

    return asyncio.run(scenario())


def test_asyncio_receive_after_a_partial_burst_waits_for_the_next_send() -> None:
    """After a receive that emptied the queue, the next one reaches the layer only
    after the next send batch did (its own write then costs the request nothing)."""
    layer = RecordingLayer()
    io = AsyncioLayerIO(layer, rearm_delay=30.0)  # only a send can re-arm in time

    async def feed(n: int) -> None:
        if n:
            await asyncio.sleep(0.05)  # the re-arm waits all this while
            await io.send("worker", {"n": n}).asFuture(asyncio.get_running_loop())
        await layer.send_async("srv!a", {"n": n})

    got = run_reply_loop(io, 3, feed)
    assert [burst[0][1]["n"] for burst in got] == [0, 1, 2]
    kinds = [kind for kind, _ in layer.log]
    # receive (burst 0) -> send 1 -> receive (burst 1) -> send 2 -> receive (burst 2)
    assert kinds == ["receive", "send", "receive", "send", "receive"]


def test_asyncio_receive_with_no_send_rearms_after_the_delay() -> None:
    """With no send, the next receive goes out ``rearm_delay`` after the last burst,
    not before (and not never)."""
    layer = RecordingLayer()
    io = AsyncioLayerIO(layer, rearm_delay=0.2)

    async def feed(n: int) -> None:
        if n:
            await asyncio.sleep(0.05)  # burst 0 is in; the next waits to re-arm
        await layer.send_async("srv!a", {"n": n})

    got = run_reply_loop(io, 2, feed)
    assert [burst[0][1]["n"] for burst in got] == [0, 1]
    (_, first), (_, second) = [entry for entry in layer.log if entry[0] == "receive"]
    assert second - first >= 0.2


def test_asyncio_full_or_empty_bursts_rearm_at_once() -> None:
    """A full burst (more may wait) and an empty one (the wait timed out) are followed
    by the next receive at once, however long the re-arm delay."""

    async def scenario() -> tuple[list[int], float]:
        loop = asyncio.get_running_loop()
        layer = RecordingLayer()
        io = AsyncioLayerIO(layer, rearm_delay=30.0)
        sizes: list[int] = []
        done = loop.create_future()

        def on_burst(burst: Any) -> None:
            sizes.append(len(burst))
            if len(sizes) == 3:
                done.set_result(None)
            else:  # after the full burst, then after the empty (timed-out) one
                io.receive_batch(["srv!"], 0.05).addCallback(on_burst)

        for n in range(REPLY_BATCH):
            await layer.send_async("srv!a", {"n": n})
        started = loop.time()
        io.receive_batch(["srv!"], 0.05).addCallback(on_burst)
        for _ in range(500):  # the full burst, then the empty one: at once, not in 30 s
            if len(sizes) >= 2:
                break
            await asyncio.sleep(0.01)
        await layer.send_async("srv!a", {"n": "last"})
        await asyncio.wait_for(done, 10)
        io.close()
        return sizes, loop.time() - started

    sizes, took = asyncio.run(scenario())
    assert sizes == [REPLY_BATCH, 0, 1]
    assert took < 5


def test_asyncio_receive_rearms_at_once_while_a_send_is_in_flight() -> None:
    """With a send batch in flight (written) and more queued behind it, the next
    receive does not wait for the queued batch: the write it waits for went out."""

    class GatedLayer(RecordingLayer):
        async def send_many_async(self, items: Any) -> list[Any]:
            self.log.append(("send", asyncio.get_running_loop().time()))
            await gate.wait()  # the batch stays in flight until the gate opens
            return await MemoryChannelLayer.send_many_async(self, list(items))

    gate: asyncio.Event

    async def scenario() -> list[str]:
        nonlocal gate
        gate = asyncio.Event()
        layer = GatedLayer()
        io = AsyncioLayerIO(layer, rearm_delay=30.0)
        bursts: list[Any] = []

        def on_burst(burst: Any) -> None:
            bursts.append(burst)
            if len(bursts) == 1:
                io.receive_batch(["srv!"], 5.0).addCallback(on_burst)

        io.send("worker", {"n": 1}).addErrback(lambda f: None)  # batch in flight
        for _ in range(3):
            await asyncio.sleep(0)
        io.send("worker", {"n": 2}).addErrback(lambda f: None)  # queued behind it
        io.receive_batch(["srv!"], 5.0).addCallback(on_burst)
        await layer.send_async("srv!a", {"n": 0})
        for _ in range(200):  # the second receive is asked at once (not in 30 s)
            if [kind for kind, _ in layer.log].count("receive") == 2:
                break
            await asyncio.sleep(0.01)
        kinds = [kind for kind, _ in layer.log]
        gate.set()
        await layer.send_async("srv!a", {"n": 1})
        for _ in range(200):
            if len(bursts) == 2:
                break
            await asyncio.sleep(0.01)
        io.close()
        return kinds

    assert asyncio.run(scenario()) == ["send", "receive", "receive"]


def test_asyncio_receive_waiting_to_rearm_can_be_cancelled() -> None:
    """Cancelling a receive that waits to be re-armed fails its Deferred and leaves no
    task or timer behind."""

    async def scenario() -> tuple[bool, list[Any]]:
        layer = RecordingLayer()
        io = AsyncioLayerIO(layer, rearm_delay=30.0)
        loop = asyncio.get_running_loop()
        await layer.send_async("srv!a", {"n": 1})
        second: list[Deferred[Any]] = []

        def on_burst(burst: Any) -> None:
            second.append(io.receive_batch(["srv!"], timeout=5.0))

        io.receive_batch(["srv!"], timeout=5.0).addCallback(on_burst)
        for _ in range(5):
            await asyncio.sleep(0)
        [waiting] = second
        failures: list[Any] = []
        waiting.addErrback(failures.append)
        waiting.cancel()
        for _ in range(5):
            await asyncio.sleep(0)
        left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        timers = [h for h in getattr(loop, "_scheduled", []) if not h.cancelled()]
        io.close()
        return bool(failures) and not left and not timers, layer.log

    clean, log = asyncio.run(scenario())
    assert clean
    assert [kind for kind, _ in log] == ["receive"]
