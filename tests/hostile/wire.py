"""Raw-socket clients for the hostile suite: bytes out, parsed responses and frames in.

Nothing here is clever on purpose: requests are written byte for byte as the
test gives them, and what comes back is parsed just enough to check it
(status lines, Content-Length or chunked bodies, WebSocket frames), so the
server's answer is judged on the wire. Every read has a deadline.
"""

from __future__ import annotations

import base64
import os
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

HOST = "127.0.0.1"
#: Longest any single exchange may take before the server counts as hung.
DEADLINE = 10.0

TEXT, BINARY, CLOSE, PING, PONG = 1, 2, 8, 9, 10


@dataclass
class Response:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


@dataclass
class Exchange:
    """What the server sent back on one connection, and how the connection ended."""

    raw: bytes
    responses: list[Response] = field(default_factory=list)
    closed: bool = False  # the server closed (EOF or reset) within the deadline
    reset: bool = False
    elapsed: float = 0.0

    @property
    def statuses(self) -> list[int]:
        return [r.status for r in self.responses]


def connect(port: int, timeout: float = DEADLINE) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def parse_responses(data: bytes) -> tuple[list[Response], bytes]:
    """Complete HTTP/1.x responses at the start of ``data``, and what is left over."""
    responses = []
    while True:
        head_end = data.find(b"\r\n\r\n")
        if head_end < 0:
            return responses, data
        head = data[:head_end].decode("latin-1").split("\r\n")
        version, _, rest = head[0].partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/1.") or not code.isdigit():
            raise AssertionError(f"not an HTTP/1.x status line: {head[0]!r}")
        headers = []
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
        lowered = {k.lower(): v for k, v in headers}
        rest_bytes = data[head_end + 4:]
        status = int(code)
        if status // 100 == 1:  # 100 Continue: a head with no body, then the real answer
            responses.append(Response(status, reason, headers, b""))
            data = rest_bytes
            continue
        if "content-length" in lowered:
            size = int(lowered["content-length"])
            if len(rest_bytes) < size:
                return responses, data
            body, data = rest_bytes[:size], rest_bytes[size:]
        elif lowered.get("transfer-encoding", "").lower() == "chunked":
            parsed = _dechunk(rest_bytes)
            if parsed is None:
                return responses, data
            body, data = parsed
        elif status in (204, 304):
            body, data = b"", rest_bytes
        else:  # delimited by the close
            return responses, data
        responses.append(Response(status, reason, headers, body))


def _dechunk(data: bytes) -> tuple[bytes, bytes] | None:
    body = []
    while True:
        line_end = data.find(b"\r\n")
        if line_end < 0:
            return None
        size = int(data[:line_end].split(b";")[0], 16)
        start = line_end + 2
        if size == 0:
            end = data.find(b"\r\n", start)
            if end < 0:
                return None
            return b"".join(body), data[end + 2:]
        if len(data) < start + size + 2:
            return None
        body.append(data[start:start + size])
        data = data[start + size + 2:]


def exchange(port: int, raw: bytes | list[bytes], *, expect: int | None = None,
             timeout: float = DEADLINE, pause: float = 0.0) -> Exchange:
    """Send ``raw`` (or its pieces, ``pause`` seconds apart), then read until the server
    closes, ``expect`` responses are complete, or ``timeout`` passes."""
    began = time.monotonic()
    sock = connect(port, timeout)
    data = b""
    result = Exchange(b"")
    try:
        pieces = [raw] if isinstance(raw, bytes) else raw
        try:
            for index, piece in enumerate(pieces):
                if index and pause:
                    time.sleep(pause)
                sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed early: read what it said
        deadline = began + timeout
        while time.monotonic() < deadline:
            sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                result.closed = result.reset = True
                break
            if not chunk:
                result.closed = True
                break
            data += chunk
            if expect is not None and len(parse_responses(data)[0]) >= expect:
                break
    finally:
        sock.close()
    result.raw = data
    result.responses = parse_responses(data)[0]
    result.elapsed = time.monotonic() - began
    return result


def get(port: int, path: str = "/echo", timeout: float = DEADLINE) -> Exchange:
    """One well-formed GET on a new connection (closed after the answer)."""
    return exchange(port, f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
                    .encode(), expect=1, timeout=timeout)


# -- WebSocket -----------------------------------------------------------------


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0,
          masked: bool = True, length: int | None = None) -> bytes:
    """One client frame; ``length`` lies about the payload length when given."""
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    size = len(payload) if length is None else length
    mask_bit = 0x80 if masked else 0
    if size < 126:
        head = bytes([first, mask_bit | size])
    elif size < 65536:
        head = bytes([first, mask_bit | 126]) + struct.pack("!H", size)
    else:
        head = bytes([first, mask_bit | 127]) + struct.pack("!Q", size)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


class WebSocket:
    """A raw WebSocket client: handshake, frames out, parsed frames in."""

    def __init__(self, port: int, path: str = "/ws/echo/", timeout: float = DEADLINE) -> None:
        self.sock = connect(port, timeout)
        key = base64.b64encode(os.urandom(16))
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\n"
                          "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                          "Sec-WebSocket-Key: ".encode() + key + b"\r\n\r\n")
        self.buffer = b""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buffer:
            if time.monotonic() > deadline:
                raise AssertionError("no handshake answer")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError(f"closed during the handshake: {self.buffer!r}")
            self.buffer += chunk
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 101 "):
            raise AssertionError(f"handshake refused: {head!r}")
        self.eof = False
        self.reset = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _parse_one(self) -> tuple[int, bytes] | None:
        data = self.buffer
        if len(data) < 2:
            return None
        if data[1] & 0x80:
            raise AssertionError("the server sent a masked frame")
        size, offset = data[1] & 0x7F, 2
        if size == 126:
            if len(data) < 4:
                return None
            size, offset = struct.unpack("!H", data[2:4])[0], 4
        elif size == 127:
            if len(data) < 10:
                return None
            size, offset = struct.unpack("!Q", data[2:10])[0], 10
        if len(data) < offset + size:
            return None
        self.buffer = data[offset + size:]
        return data[0] & 0x0F, data[offset:offset + size]

    def receive(self, timeout: float = DEADLINE) -> tuple[int, bytes] | None:
        """The next frame ``(opcode, payload)``; None once the server closed TCP."""
        deadline = time.monotonic() + timeout
        while True:
            parsed = self._parse_one()
            if parsed is not None:
                return parsed
            if self.eof:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no frame within {timeout} s")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                self.eof = self.reset = True
                continue
            if not chunk:
                self.eof = True
            self.buffer += chunk

    def close_code(self, timeout: float = DEADLINE) -> int | None:
        """Read until the server's close frame; its code (None if TCP closed without one)."""
        while True:
            received = self.receive(timeout)
            if received is None:
                return None
            opcode, payload = received
            if opcode == CLOSE:
                return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005

    def wait_eof(self, timeout: float = DEADLINE) -> bool:
        """``True`` once the server closes TCP within ``timeout`` (frames are skipped)."""
        try:
            while self.receive(timeout) is not None:
                pass
        except AssertionError:
            return False
        return True

    def close(self) -> None:
        self.sock.close()


def rss_kib(pid: int) -> int:
    """The resident set size of process ``pid`` in KiB (from /proc/<pid>/status)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


class LatencyProbe:
    """A normal client in a thread: one GET every 50 ms, recording each latency."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.latencies: list[float] = []
        self.failures: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            reply = get(self.port, "/echo/probe", timeout=10)
            if reply.statuses == [200]:
                self.latencies.append(reply.elapsed)
            else:
                self.failures.append(reply.raw[:200])
            self._stop.wait(0.05)

    def __enter__(self) -> LatencyProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)

    def check(self, bound: float, shed_allowed: float = 0.0) -> None:
        """p99 latency under ``bound``; no failure, except at most ``shed_allowed`` (a
        fraction) of 503s that say the layer's queue is full (the designed load shedding
        when the attack itself is made of real requests)."""
        shed = [f for f in self.failures
                if f.startswith(b"HTTP/1.1 503 ") and b"channel is full" in f]
        failed = [f for f in self.failures if f not in shed]
        assert not failed, f"normal requests failed: {failed[:3]}"
        total = len(self.latencies) + len(self.failures)
        assert len(shed) <= shed_allowed * total, f"{len(shed)} of {total} shed: {shed[:1]}"
        assert len(self.latencies) >= 20, len(self.latencies)
        ordered = sorted(self.latencies)
        p99 = ordered[int(len(ordered) * 0.99) - 1]
        assert p99 < bound, f"p99 latency {p99:.3f} s under attack (max {ordered[-1]:.3f} s)"
