"""The WebSocket load client of the server benchmark, run as a script.

``tests/bench/servers.py`` runs this file with the Python of
``.bench/venv-client`` (websockets + uvloop), once per workload, contender and
repetition. It imports no Switchboard code, talks only to the loopback URL it
is given, bounds every wait, and prints one JSON object on stdout (the
``idle`` workload first prints ``READY <n>`` and waits for a line on stdin).

Workloads:

* ``echo``   -- ``--connections`` sockets, each does ``--messages`` round
  trips of ``--size`` bytes, one at a time, all sockets at once.
* ``rtt``    -- one socket, ``--count`` sequential round trips (no other load).
* ``fanout`` -- ``--clients`` sockets on the group endpoint; once all are
  open, the first sends a burst of ``--broadcasts`` frames; every socket
  counts what it receives, so losses and duplicates are exact.
* ``idle``   -- ``--connections`` sockets opened and held until told to go.

Every result carries ``client_cpu``: the client's CPU seconds over the
measured phase divided by its wall time (1.0 = one core busy; the client is
single-threaded, so near 1.0 it is the bottleneck).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import statistics
import sys
import time
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

#: Handshakes in flight at once while opening many sockets.
CONNECT_CONCURRENCY = 50
OPEN_TIMEOUT = 60.0


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def latency_summary(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {}
    return {
        "p50_ms": percentile(seconds, 0.50) * 1000,
        "p99_ms": percentile(seconds, 0.99) * 1000,
        "mean_ms": statistics.fmean(seconds) * 1000,
        "max_ms": max(seconds) * 1000,
    }


class Meter:
    """Wall time and this process's CPU time over one phase."""

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = time.process_time()

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self.wall
        cpu = time.process_time() - self.cpu
        return {"seconds": wall, "client_cpu": cpu / wall if wall > 0 else 0.0}


async def open_one(url: str) -> ClientConnection:
    return await connect(
        url,
        compression=None,
        proxy=None,
        ping_interval=None,
        open_timeout=OPEN_TIMEOUT,
        close_timeout=5,
        max_queue=None,
    )


async def open_many(url: str, count: int) -> tuple[list[ClientConnection], int, float]:
    """Open ``count`` sockets, ``CONNECT_CONCURRENCY`` handshakes at a time.

    Returns the open sockets, how many failed, and how long it took."""
    started = time.perf_counter()
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one() -> ClientConnection | None:
        async with gate:
            try:
                return await open_one(url)
            except Exception:
                return None

    results = await asyncio.gather(*(one() for _ in range(count)))
    sockets = [ws for ws in results if ws is not None]
    return sockets, count - len(sockets), time.perf_counter() - started


async def close_all(sockets: list[ClientConnection]) -> None:
    async def one(ws: ClientConnection) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(), 10)

    for start in range(0, len(sockets), 1000):
        await asyncio.gather(*(one(ws) for ws in sockets[start : start + 1000]))


async def echo(args: argparse.Namespace) -> dict[str, Any]:
    sockets, failed, connect_s = await open_many(args.url, args.connections)
    if failed:
        await close_all(sockets)
        return {"error": f"{failed} of {args.connections} sockets failed to open"}
    rtts: list[float] = []
    mismatches = 0
    errors = 0

    async def talk(n: int, ws: ClientConnection) -> None:
        nonlocal mismatches, errors
        try:
            for i in range(args.messages):
                payload = f"{n:05d}:{i:05d}:".ljust(args.size, "x")
                started = time.perf_counter()
                await ws.send(payload)
                got = await ws.recv()
                rtts.append(time.perf_counter() - started)
                if got != payload:
                    mismatches += 1
        except Exception:
            errors += 1

    meter = Meter()
    await asyncio.wait_for(
        asyncio.gather(*(talk(n, ws) for n, ws in enumerate(sockets))), args.timeout
    )
    phase = meter.stop()
    await close_all(sockets)
    return {
        "round_trips": len(rtts),
        "per_second": len(rtts) / phase["seconds"],
        "mismatches": mismatches,
        "errors": errors,
        "connect_seconds": connect_s,
        **phase,
        **latency_summary(rtts),
    }


async def rtt(args: argparse.Namespace) -> dict[str, Any]:
    ws = await open_one(args.url)
    payload = "r".ljust(args.size, "x")
    try:
        for _ in range(args.warmup):
            await ws.send(payload)
            await ws.recv()
        samples: list[float] = []
        meter = Meter()
        for _ in range(args.count):
            started = time.perf_counter()
            await ws.send(payload)
            got = await asyncio.wait_for(ws.recv(), 10)
            samples.append(time.perf_counter() - started)
            if got != payload:
                return {"error": "echo returned a different frame"}
        phase = meter.stop()
    finally:
        await close_all([ws])
    return {
        "round_trips": len(samples),
        "per_second": len(samples) / phase["seconds"],
        **phase,
        **latency_summary(samples),
    }


async def fanout(args: argparse.Namespace) -> dict[str, Any]:
    sockets, failed, connect_s = await open_many(args.url, args.clients)
    if failed:
        await close_all(sockets)
        return {"error": f"{failed} of {args.clients} sockets failed to open"}
    expected = {f"b{k:03d}".ljust(args.size, "x") for k in range(args.broadcasts)}
    received: list[set[str]] = [set() for _ in sockets]
    duplicates = 0
    unexpected = 0
    last_delivery = 0.0
    cpu_at_last = 0.0
    progress = asyncio.Event()
    complete = 0

    async def listen(n: int, ws: ClientConnection) -> None:
        nonlocal duplicates, unexpected, last_delivery, cpu_at_last, complete
        mine = received[n]
        with contextlib.suppress(Exception):
            async for frame in ws:
                if frame not in expected:
                    unexpected += 1
                elif frame in mine:
                    duplicates += 1
                else:
                    mine.add(frame)
                    last_delivery = time.perf_counter()
                    cpu_at_last = time.process_time()
                    progress.set()
                    if len(mine) == len(expected):
                        complete += 1
                        return

    listeners = [asyncio.create_task(listen(n, ws)) for n, ws in enumerate(sockets)]
    started = time.perf_counter()
    cpu_started = time.process_time()
    for frame in sorted(expected):
        await sockets[0].send(frame)
    deadline = started + args.timeout
    # Wait until every socket has everything, or no delivery for --quiet
    # seconds (the rest is lost), or the overall deadline.
    while complete < len(sockets) and time.perf_counter() < deadline:
        progress.clear()
        wait = min(args.quiet, deadline - time.perf_counter())
        try:
            await asyncio.wait_for(progress.wait(), max(wait, 0.001))
        except TimeoutError:
            break
    waited = time.perf_counter() - started
    for task in listeners:
        task.cancel()
    await asyncio.gather(*listeners, return_exceptions=True)
    delivered = sum(len(got) for got in received)
    wanted = len(sockets) * len(expected)
    span = (last_delivery - started) if delivered else 0.0
    await close_all(sockets)
    return {
        "clients": len(sockets),
        "broadcasts": len(expected),
        "expected": wanted,
        "delivered": delivered,
        "lost": wanted - delivered,
        "duplicates": duplicates,
        "unexpected": unexpected,
        "per_second": delivered / span if span > 0 else 0.0,
        "all_received_seconds": span if delivered == wanted else None,
        "connect_seconds": connect_s,
        "seconds": waited,
        # the client's load while deliveries were arriving
        "client_cpu": (cpu_at_last - cpu_started) / span if span > 0 else None,
    }


async def idle(args: argparse.Namespace) -> dict[str, Any]:
    sockets, failed, connect_s = await open_many(args.url, args.connections)
    print(f"READY {len(sockets)}", flush=True)
    loop = asyncio.get_running_loop()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.readline), args.timeout)
    still_open = sum(1 for ws in sockets if ws.state.name == "OPEN")
    await close_all(sockets)
    return {
        "opened": len(sockets),
        "failed": failed,
        "still_open": still_open,
        "connect_seconds": connect_s,
    }


WORKLOADS = {"echo": echo, "rtt": rtt, "fanout": fanout, "idle": idle}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=sorted(WORKLOADS))
    parser.add_argument("--url", required=True)
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--broadcasts", type=int, default=10)
    parser.add_argument(
        "--quiet",
        type=float,
        default=10.0,
        help="fanout: give up after this long without a delivery",
    )
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="upper bound on the measured phase, in seconds"
    )
    args = parser.parse_args()
    if not args.url.startswith(("ws://127.", "ws://localhost", "ws://[::1]")):
        parser.error("the benchmark client only talks to loopback addresses")
    raise_fd_limit()
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(WORKLOADS[args.workload](args))
    else:
        result = uvloop.run(WORKLOADS[args.workload](args))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
