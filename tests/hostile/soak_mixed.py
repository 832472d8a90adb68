"""The load client of the mixed soak: steady HTTP and WebSocket traffic, every answer checked.

How this works: ``MixedLoad.run`` drives one asyncio loop in the test process.

* HTTP: ``http_lanes`` keep-alive connections, each sending on a fixed
  schedule (together ``http_rate`` requests a second). Every ``post_every``-th
  request is a POST with a random body; the others are GETs. The e2e app's
  ``/echo`` consumer answers with JSON describing the request, and each answer
  is checked: status 200, the same method, path and query string, and for a
  POST the body's length and SHA-256. A connection is closed and a new one
  opened after ``requests_per_connection`` requests, so connections come and go.
* WebSocket: ``sockets`` connections to ``/ws/echo/``, each sending one text
  message every ``1 / socket_rate`` seconds, every message unique. Each echo
  must match a message sent on that socket and not yet echoed. A socket
  closes (code 1000) after ``socket_lifetime`` seconds, once its echoes are in,
  and a new one takes its place (the first lifetimes are staggered).
* Every ``rss_interval`` seconds the resident set size of each watched
  process is read from ``/proc/<pid>/status``.

Everything is counted in time windows of ``window`` seconds (a minute for a
long soak): requests and messages sent and answered, their latencies, errors
and memory samples. Any failure -- a status other than 200, a wrong echo, a
connection refused, reset or closed early, an answer later than ``timeout``
-- is an error with a description. A message sent and never echoed is lost.
The sending stops at ``seconds``; then every outstanding answer is awaited
(up to ``timeout``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import os
import statistics
from dataclasses import dataclass, field

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from tests.hostile import wire

HOST = "127.0.0.1"
MIB = 1024


@dataclass
class Plan:
    """What the load client sends, and how the results are grouped."""

    seconds: float
    http_rate: float = 200.0
    http_lanes: int = 20
    requests_per_connection: int = 100
    post_every: int = 5
    body_size: int = 2048
    sockets: int = 50
    socket_rate: float = 4.0
    socket_lifetime: float = 30.0
    message_padding: int = 64
    timeout: float = 10.0

    @property
    def window(self) -> float:
        """A minute for a long soak; for a short run, a sixth of it (at least 10 s)."""
        return 60.0 if self.seconds >= 300 else max(10.0, self.seconds / 6)

    @property
    def rss_interval(self) -> float:
        return min(10.0, self.window / 2)

    @property
    def windows(self) -> int:
        return max(1, math.ceil(self.seconds / self.window - 1e-9))

    def window_length(self, index: int) -> float:
        return min(self.window, self.seconds - index * self.window)


@dataclass
class Window:
    """What happened in one time window."""

    http_sent: int = 0
    http_ok: int = 0
    ws_sent: int = 0
    ws_ok: int = 0
    errors: int = 0
    http_latencies: list[float] = field(default_factory=list)
    ws_latencies: list[float] = field(default_factory=list)
    rss: dict[str, list[int]] = field(default_factory=dict)

    def rss_mib(self, name: str) -> float | None:
        samples = self.rss.get(name)
        return statistics.median(samples) / MIB if samples else None


def percentile(values: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile; ``None`` for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


class MixedLoad:
    """Steady mixed traffic against the server on ``port``; RSS of ``pids`` sampled."""

    def __init__(self, port: int, plan: Plan, pids: dict[str, int]) -> None:
        self.port = port
        self.plan = plan
        self.pids = pids
        self.windows = [Window() for _ in range(plan.windows)]
        self.errors: list[str] = []
        self.ws_lost = 0
        self.ws_connections = 0
        self.http_connections = 0
        self._t0 = 0.0
        self._end = 0.0

    # -- results ----------------------------------------------------------

    @property
    def http_sent(self) -> int:
        return sum(w.http_sent for w in self.windows)

    @property
    def http_ok(self) -> int:
        return sum(w.http_ok for w in self.windows)

    @property
    def ws_sent(self) -> int:
        return sum(w.ws_sent for w in self.windows)

    @property
    def ws_ok(self) -> int:
        return sum(w.ws_ok for w in self.windows)

    def summary(self) -> str:
        """The per-window table, then the totals."""
        names = list(self.pids)
        head = (f"{'window':>11} {'http/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'ws/s':>6} "
                f"{'p50 ms':>7} {'p99 ms':>7} {'errors':>6} "
                + " ".join(f"{name[:10] + ' MiB':>14}" for name in names))
        lines = [head]
        for index, window in enumerate(self.windows):
            start = index * self.plan.window
            length = self.plan.window_length(index)
            label = f"{start:.0f}-{start + length:.0f} s" + ("*" if index == 0 else " ")

            def ms(value: float | None) -> str:
                return "-" if value is None else f"{value * 1000:.1f}"

            def mib(value: float | None) -> str:
                return "-" if value is None else f"{value:.1f}"

            lines.append(
                f"{label:>11} {window.http_ok / length:7.1f} "
                f"{ms(percentile(window.http_latencies, 0.5)):>7} "
                f"{ms(percentile(window.http_latencies, 0.99)):>7} "
                f"{window.ws_ok / length:6.1f} "
                f"{ms(percentile(window.ws_latencies, 0.5)):>7} "
                f"{ms(percentile(window.ws_latencies, 0.99)):>7} {window.errors:6d} "
                + " ".join(f"{mib(window.rss_mib(name)):>14}" for name in names))
        lines.append("* warm-up window (not compared). Latency: send to complete answer; "
                     "RSS: median of the window's samples.")
        lines.append(
            f"HTTP: {self.http_sent} sent, {self.http_ok} answered correctly, over "
            f"{self.http_connections} connections. WebSocket: {self.ws_sent} messages sent, "
            f"{self.ws_ok} echoed, {self.ws_lost} lost, over {self.ws_connections} "
            f"connections. Errors: {len(self.errors)}.")
        return "\n".join(lines)

    # -- the run ----------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._t0 = loop.time() + 0.2
        self._end = self._t0 + self.plan.seconds
        tasks = [self._http_lane(lane) for lane in range(self.plan.http_lanes)]
        tasks += [self._socket(index) for index in range(self.plan.sockets)]
        tasks.append(self._sample_rss())
        for outcome in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(outcome, BaseException):
                self._error(f"a load task crashed: {outcome!r}")

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _window(self, at: float) -> Window:
        index = int((at - self._t0) // self.plan.window)
        return self.windows[min(max(index, 0), len(self.windows) - 1)]

    def _error(self, what: str) -> None:
        now = self._now()
        self._window(now).errors += 1
        if len(self.errors) < 1000:
            self.errors.append(f"t={now - self._t0:.1f} s: {what}")

    async def _sleep_until(self, at: float) -> None:
        delay = at - self._now()
        if delay > 0:
            await asyncio.sleep(delay)

    # -- HTTP -------------------------------------------------------------

    def _http_request(self, lane: int, seq: int) -> tuple[bytes, dict[str, object]]:
        """The request's bytes, and what the echo must say about it."""
        path = f"/echo/soak/{lane}"
        query = f"seq={seq}"
        head = f"Host: {HOST}:{self.port}\r\n"
        if seq % self.plan.post_every == 0:
            body = os.urandom(self.plan.body_size)
            raw = (f"POST {path}?{query} HTTP/1.1\r\n{head}Content-Type: application/"
                   f"octet-stream\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
            expected = {"method": "POST", "body_length": len(body),
                        "body_sha256": hashlib.sha256(body).hexdigest()}
        else:
            raw = f"GET {path}?{query} HTTP/1.1\r\n{head}\r\n".encode()
            expected = {"method": "GET", "body_length": 0}
        expected.update(path=path, query_string=query)
        return raw, expected

    async def _http_lane(self, lane: int) -> None:
        plan = self.plan
        period = plan.http_lanes / plan.http_rate
        next_at = self._t0 + period * lane / plan.http_lanes
        seq = used = 0
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        try:
            while next_at < self._end:
                await self._sleep_until(next_at)
                next_at += period
                seq += 1
                raw, expected = self._http_request(lane, seq)
                sent_at = self._now()
                self._window(sent_at).http_sent += 1
                problem: str | None = None
                keep = True
                try:
                    if writer is None:
                        reader, writer = await asyncio.wait_for(
                            asyncio.open_connection(HOST, self.port), plan.timeout)
                        self.http_connections += 1
                        used = 0
                    assert reader is not None
                    writer.write(raw)
                    status, headers, body = await asyncio.wait_for(
                        read_response(reader), plan.timeout)
                    keep = headers.get("connection", "").lower() != "close"
                    problem = check_echo(status, body, expected)
                except (OSError, EOFError, TimeoutError, ValueError) as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                    keep = False
                done = self._now()
                if problem is not None:
                    self._error(f"HTTP lane {lane} {expected['method']} seq {seq}: {problem}")
                else:
                    window = self._window(done)
                    window.http_ok += 1
                    window.http_latencies.append(done - sent_at)
                used += 1
                if not keep or used >= plan.requests_per_connection:
                    await _close_writer(writer)
                    reader = writer = None
        finally:
            await _close_writer(writer)

    # -- WebSocket --------------------------------------------------------

    async def _socket(self, index: int) -> None:
        plan = self.plan
        period = 1 / plan.socket_rate
        next_at = self._t0 + period * index / plan.sockets
        close_at = self._t0 + plan.socket_lifetime * (0.5 + 0.5 * index / plan.sockets)
        url = f"ws://{HOST}:{self.port}/ws/echo/"
        padding = "x" * plan.message_padding
        connection_no = seq = 0
        while next_at < self._end:
            connection_no += 1
            try:
                ws = await asyncio.wait_for(
                    connect(url, ping_interval=None, open_timeout=plan.timeout,
                            close_timeout=plan.timeout, max_size=2 ** 20), plan.timeout)
            except (OSError, TimeoutError, WebSocketException) as exc:
                self._error(f"WebSocket {index}: connect failed: {exc!r}")
                next_at = max(next_at, self._now() + 1.0)
                await self._sleep_until(next_at)
                continue
            self.ws_connections += 1
            pending: dict[str, float] = {}
            reader = asyncio.create_task(self._echoes(ws, index, pending))
            try:
                stop = min(close_at, self._end)
                while next_at < stop and not reader.done():
                    await self._sleep_until(next_at)
                    next_at += period
                    seq += 1
                    text = f"{index}:{connection_no}:{seq}:{padding}"
                    sent_at = self._now()
                    pending[text] = sent_at
                    self._window(sent_at).ws_sent += 1
                    await ws.send(text)
                deadline = self._now() + plan.timeout
                while pending and not reader.done() and self._now() < deadline:
                    await asyncio.sleep(0.02)
                await ws.close()
            except ConnectionClosed as exc:
                self._error(f"WebSocket {index}: closed while sending: {exc!r}")
            try:
                await asyncio.wait_for(reader, plan.timeout)
            except TimeoutError:
                self._error(f"WebSocket {index}: still open {plan.timeout} s after close")
            if ws.close_code != 1000:
                self._error(f"WebSocket {index}: closed with {ws.close_code} "
                            f"{ws.close_reason!r}, not 1000")
            if pending:
                self.ws_lost += len(pending)
                self._error(f"WebSocket {index}: {len(pending)} messages never echoed, "
                            f"e.g. {next(iter(pending))[:30]!r}")
            close_at = next_at + plan.socket_lifetime

    async def _echoes(self, ws: ClientConnection, index: int,
                      pending: dict[str, float]) -> None:
        """Match every echo on ``ws`` to a message sent and not yet echoed."""
        try:
            async for message in ws:
                now = self._now()
                sent_at = pending.pop(message, None) if isinstance(message, str) else None
                if sent_at is None:
                    self._error(f"WebSocket {index}: unexpected frame {message[:40]!r}")
                    continue
                window = self._window(now)
                window.ws_ok += 1
                window.ws_latencies.append(now - sent_at)
        except ConnectionClosed as exc:
            self._error(f"WebSocket {index}: closed by the server: {exc!r}")

    # -- memory -----------------------------------------------------------

    async def _sample_rss(self) -> None:
        at = self._t0
        while at < self._end:
            await self._sleep_until(at)
            window = self._window(self._now())
            for name, pid in self.pids.items():
                try:
                    window.rss.setdefault(name, []).append(wire.rss_kib(pid))
                except (OSError, AssertionError) as exc:
                    self._error(f"cannot read the RSS of {name} (pid {pid}): {exc!r}")
            at += self.plan.rss_interval


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length: ``(status, headers, body)``."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        raise EOFError(f"connection closed after {exc.partial[:80]!r}") from None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ValueError(f"bad status line {lines[0]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "content-length" not in headers:
        raise ValueError(f"no Content-Length in {head[:300]!r}")
    try:
        body = await reader.readexactly(int(headers["content-length"]))
    except asyncio.IncompleteReadError as exc:
        raise EOFError(f"body cut after {len(exc.partial)} bytes") from None
    return int(parts[1]), headers, body


def check_echo(status: int, body: bytes, expected: dict[str, object]) -> str | None:
    """``None`` if the echo describes the request as sent; else what is wrong."""
    if status != 200:
        return f"status {status}: {body[:200]!r}"
    try:
        echo = json.loads(body)
    except ValueError:
        return f"not JSON: {body[:200]!r}"
    wrong = {key: echo.get(key) for key, value in expected.items() if echo.get(key) != value}
    return f"the echo differs: {wrong} (expected {expected})" if wrong else None


async def _close_writer(writer: asyncio.StreamWriter | None) -> None:
    if writer is None:
        return
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), 5)
