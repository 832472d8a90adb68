"""Channel-layer workloads, run as a script in whichever environment has the layer.

The layer benchmark (``tests/bench/layer.py``) runs this file once per
contender and repetition, with the Python of the environment that has that
contender installed: Switchboard's own ``.venv``, or a separate virtual
environment with channels_redis 4. It therefore imports no Switchboard code at
module level, and prints one JSON object on stdout.

Workloads (each message is a dict of about 100 bytes):

* ``pairs``  -- send one message, receive it, repeat (one process, one channel).
* ``stream`` -- a producer and a consumer run concurrently on one channel.
* ``burst``  -- like ``stream``, but each side moves 64 messages per call where
  the layer allows: Switchboard's ``send_many`` and ``receive_batch``;
  channels_redis, which has no batch API, gets 64 concurrent sends
  (``asyncio.gather``) and its plain receive.
* ``wake``   -- a receiver is already blocked on a single-reader channel; each
  sample is the time from the start of ``send`` to the return of ``receive``.
* ``produce`` / ``consume`` -- halves of the multi-process stream, started by
  the harness in several processes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import threading
import time
from typing import Any

PAYLOAD = b"x" * 64
CAPACITY = 10_000_000
CHANNEL = "bench.stream"


def _message(n: int) -> dict[str, Any]:
    return {"n": n, "payload": PAYLOAD, "path": "/bench/"}


# -- adapters: one async face for every contender, plus Switchboard's sync API --


class ChannelsRedisAdapter:
    """channels_redis 4 (the Channels 4 Redis layer); async only."""

    def __init__(self, url: str) -> None:
        from channels_redis.core import RedisChannelLayer

        self.layer = RedisChannelLayer(hosts=[url], capacity=CAPACITY, expiry=600)

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        await self.layer.send(channel, message)

    async def receive(self, channel: str) -> dict[str, Any]:
        return await self.layer.receive(channel)

    async def reply_channel(self) -> str:
        return await self.layer.new_channel()

    async def close(self) -> None:
        await self.layer.flush()


class SwitchboardAsyncAdapter:
    """Switchboard's layer through its async face (what the interface server uses)."""

    def __init__(self, url: str) -> None:
        from asgi_spec import layer_from_url

        self.layer = layer_from_url(url, capacity=CAPACITY, expiry=600)

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        await self.layer.send_async(channel, message)

    async def receive(self, channel: str) -> dict[str, Any]:
        while True:
            _, message = await self.layer.receive_async([channel], timeout=5)
            if message is not None:
                return message

    async def reply_channel(self) -> str:
        return self.layer.new_channel("bench.reply?")

    async def close(self) -> None:
        self.layer.flush()
        self.layer.close()


class SwitchboardSyncAdapter:
    """Switchboard's layer through its synchronous API (what workers use)."""

    def __init__(self, url: str) -> None:
        from asgi_spec import layer_from_url

        self.layer = layer_from_url(url, capacity=CAPACITY, expiry=600)

    def send(self, channel: str, message: dict[str, Any]) -> None:
        self.layer.send(channel, message)

    def receive(self, channel: str) -> dict[str, Any]:
        while True:
            _, message = self.layer.receive([channel], block=True, timeout=5)
            if message is not None:
                return message

    def reply_channel(self) -> str:
        return self.layer.new_channel("bench.reply?")

    def close(self) -> None:
        self.layer.flush()
        self.layer.close()


# -- async workloads ---------------------------------------------------------


async def pairs_async(adapter: Any, duration: float) -> dict[str, Any]:
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < duration:
        await adapter.send(CHANNEL, _message(count))
        await adapter.receive(CHANNEL)
        count += 1
    return {"messages": count, "per_second": count / (time.perf_counter() - started)}


async def _count_until_stop(adapter: Any) -> int:
    """Receive until the ``stop`` message; return how many came before it."""
    received = 0
    while not (await adapter.receive(CHANNEL)).get("stop"):
        received += 1
    return received


async def _produce_then_count(adapter: Any, duration: float,
                              send_some: Any) -> dict[str, Any]:
    """Call ``send_some(sent)`` (returning how many it sent) for ``duration`` s while a
    consumer task counts; then stop it and report messages/s."""
    started = time.perf_counter()
    consumer = asyncio.ensure_future(_count_until_stop(adapter))
    sent = 0
    while time.perf_counter() - started < duration:
        sent += await send_some(sent)
    await adapter.send(CHANNEL, {"stop": True})
    received = await consumer
    return {"messages": received, "per_second": received / (time.perf_counter() - started)}


async def stream_async(adapter: Any, duration: float) -> dict[str, Any]:
    async def one(sent: int) -> int:
        await adapter.send(CHANNEL, _message(sent))
        if sent % 50 == 49:
            await asyncio.sleep(0)  # let the consumer run, as a real server would
        return 1

    return await _produce_then_count(adapter, duration, one)


BURST = 64


async def burst_async(adapter: Any, duration: float) -> dict[str, Any]:
    """The peer's best effort at a burst: 64 sends in flight at once."""
    async def burst(sent: int) -> int:
        await asyncio.gather(*(adapter.send(CHANNEL, _message(sent + n)) for n in range(BURST)))
        return BURST

    return await _produce_then_count(adapter, duration, burst)


async def wake_async(adapter: Any, samples: int) -> dict[str, Any]:
    channel = await adapter.reply_channel()
    latencies: list[float] = []
    for n in range(samples):
        receiving = asyncio.ensure_future(adapter.receive(channel))
        await asyncio.sleep(0.001)  # the receiver is now blocked
        sent_at = time.perf_counter()
        await adapter.send(channel, _message(n))
        await receiving
        latencies.append(time.perf_counter() - sent_at)
    return _latency(latencies)


# -- sync workloads (Switchboard's sync API, threads) --------------------------


def pairs_sync(adapter: Any, duration: float) -> dict[str, Any]:
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < duration:
        adapter.send(CHANNEL, _message(count))
        adapter.receive(CHANNEL)
        count += 1
    return {"messages": count, "per_second": count / (time.perf_counter() - started)}


def stream_sync(adapter: Any, duration: float) -> dict[str, Any]:
    received = 0

    def consume() -> None:
        nonlocal received
        while not adapter.receive(CHANNEL).get("stop"):
            received += 1

    consumer = threading.Thread(target=consume)
    started = time.perf_counter()
    consumer.start()
    sent = 0
    while time.perf_counter() - started < duration:
        adapter.send(CHANNEL, _message(sent))
        sent += 1
    adapter.send(CHANNEL, {"stop": True})
    consumer.join()
    return {"messages": received, "per_second": received / (time.perf_counter() - started)}


def burst_sync(adapter: Any, duration: float) -> dict[str, Any]:
    """``send_many`` and ``receive_batch``, 64 messages per call, in two threads."""
    layer = adapter.layer
    received = 0

    def consume() -> None:
        nonlocal received
        while True:
            got = layer.receive_batch([CHANNEL], BURST, block=True, timeout=5)
            received += sum(1 for _, message in got if not message.get("stop"))
            if any(message.get("stop") for _, message in got):
                return

    consumer = threading.Thread(target=consume)
    started = time.perf_counter()
    consumer.start()
    sent = 0
    while time.perf_counter() - started < duration:
        layer.send_many([(CHANNEL, _message(sent + n)) for n in range(BURST)])
        sent += BURST
    layer.send(CHANNEL, {"stop": True})
    consumer.join()
    return {"messages": received, "per_second": received / (time.perf_counter() - started)}


def wake_sync(adapter: Any, samples: int) -> dict[str, Any]:
    channel = adapter.reply_channel()
    latencies: list[float] = []
    got = threading.Event()
    received_at = [0.0]

    def receive_loop() -> None:
        for _ in range(samples):
            adapter.receive(channel)
            received_at[0] = time.perf_counter()
            got.set()

    receiver = threading.Thread(target=receive_loop)
    receiver.start()
    for n in range(samples):
        time.sleep(0.001)  # the receiver is now blocked
        got.clear()
        sent_at = time.perf_counter()
        adapter.send(channel, _message(n))
        got.wait(5)
        latencies.append(received_at[0] - sent_at)
    receiver.join()
    return _latency(latencies)


def _latency(samples: list[float]) -> dict[str, Any]:
    ordered = sorted(samples)
    return {
        "samples": len(ordered),
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[int(len(ordered) * 0.99) - 1] * 1000,
    }


# -- multi-process halves --------------------------------------------------------


def produce(adapter: Any, start_at: float, duration: float, is_async: bool) -> dict[str, Any]:
    while time.time() < start_at:
        time.sleep(0.001)
    sent, started = 0, time.time()

    async def run_async() -> None:
        nonlocal sent
        while time.time() - started < duration:
            await adapter.send(CHANNEL, _message(sent))
            sent += 1

    if is_async:
        asyncio.run(run_async())
    else:
        while time.time() - started < duration:
            adapter.send(CHANNEL, _message(sent))
            sent += 1
    return {"sent": sent, "started": started, "finished": time.time()}


def consume(adapter: Any, start_at: float, idle: float, is_async: bool) -> dict[str, Any]:
    """Receive until ``idle`` s pass without a message (after the producers start)."""
    received, last = 0, None

    def wait() -> float:
        return idle if last else max(start_at - time.time(), 0) + 10

    async def run_async() -> None:
        nonlocal received, last
        while True:
            try:
                await asyncio.wait_for(adapter.receive(CHANNEL), wait())
            except TimeoutError:
                return
            received, last = received + 1, time.time()

    if is_async:
        asyncio.run(run_async())
    else:
        while True:
            _, message = adapter.layer.receive([CHANNEL], block=True, timeout=wait())
            if message is None:
                break
            received, last = received + 1, time.time()
    return {"received": received, "last": last}


ADAPTERS = {
    "channels_redis": (ChannelsRedisAdapter, True),
    "switchboard-async": (SwitchboardAsyncAdapter, True),
    "switchboard-sync": (SwitchboardSyncAdapter, False),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", choices=sorted(ADAPTERS), required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--workload", required=True,
                        choices=["pairs", "stream", "burst", "wake", "produce", "consume"])
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--start-at", type=float, default=0.0)
    args = parser.parse_args()
    cls, is_async = ADAPTERS[args.adapter]
    adapter = cls(args.url)
    if args.workload == "produce":
        result = produce(adapter, args.start_at, args.duration, is_async)
    elif args.workload == "consume":
        result = consume(adapter, args.start_at, 1.0, is_async)
    elif is_async:
        work = {"pairs": lambda: pairs_async(adapter, args.duration),
                "stream": lambda: stream_async(adapter, args.duration),
                "burst": lambda: burst_async(adapter, args.duration),
                "wake": lambda: wake_async(adapter, args.samples)}[args.workload]

        async def run() -> dict[str, Any]:
            try:
                return await work()
            finally:
                await adapter.close()

        result = asyncio.run(run())
    else:
        work_sync = {"pairs": lambda: pairs_sync(adapter, args.duration),
                     "stream": lambda: stream_sync(adapter, args.duration),
                     "burst": lambda: burst_sync(adapter, args.duration),
                     "wake": lambda: wake_sync(adapter, args.samples)}[args.workload]
        try:
            result = work_sync()
        finally:
            adapter.close()
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
