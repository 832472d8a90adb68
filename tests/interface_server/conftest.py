"""Shared fixtures for the interface-server tests: a server on a memory reactor and layer.

``Harness`` builds a ``Server`` with ``MemoryReactorClock`` (time moves only by
``advance``), a ``MemoryChannelLayer`` on ``FakeClock`` and ``ImmediateLayerIO``
(layer calls complete inside the call that makes them). Connections get a
``StringTransport``; tests feed raw bytes with ``dataReceived``, read messages
from the layer, dispatch replies and assert on ``transport.value()``.
"""

from __future__ import annotations

import base64
import os
import struct
from collections.abc import Iterator
from typing import Any

import pytest
import txaio
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from asgi_spec.layers.memory import MemoryChannelLayer
from asgi_spec.testing import FakeClock
from interface_server.config import ServerConfig
from interface_server.layer_io import ImmediateLayerIO
from interface_server.server import Server

WORKER_CHANNELS = ("http.request", "http.disconnect", "websocket.*")


class Connection:
    """One client connection to the harness server, over a StringTransport."""

    def __init__(self, harness: Harness, peer: tuple[str, int]) -> None:
        self.harness = harness
        self.transport = StringTransport(
            peerAddress=IPv4Address("TCP", *peer),
            hostAddress=IPv4Address("TCP", "127.0.0.1", 8000),
        )
        self.protocol = harness.server.http_factory.buildProtocol(self.transport.getPeer())
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def take(self) -> bytes:
        """Everything written to the client since the last ``take``."""
        data = self.transport.value()
        self.transport.clear()
        return data

    def lose(self) -> None:
        """The client goes away."""
        self.protocol.connectionLost(Failure(ConnectionDone()))

    @property
    def closed(self) -> bool:
        return bool(self.transport.disconnecting)


class Harness:
    def __init__(self, config: ServerConfig | None = None,
                 workers: tuple[str, ...] | None = WORKER_CHANNELS,
                 **layer_options: Any) -> None:
        self.reactor = MemoryReactorClock()
        self.layer_clock = FakeClock()
        self.layer = MemoryChannelLayer(clock=self.layer_clock, **layer_options)
        if workers is not None:
            self.add_worker("w1", workers)
        self.layer_io = ImmediateLayerIO(self.layer, clock=self.reactor)
        self.server = Server(self.layer, reactor=self.reactor, config=config or ServerConfig(),
                             layer_io=self.layer_io, server_id="test")
        self.server.start_timers()

    def add_worker(self, name: str, channels: tuple[str, ...]) -> None:
        self.layer.register_process("worker", name, {"channels": list(channels)}, ttl=3600)

    def connect(self, peer: tuple[str, int] = ("10.0.0.7", 50123)) -> Connection:
        return Connection(self, peer)

    def receive(self, channel: str) -> dict[str, Any]:
        """The next message on ``channel``; fails the test if there is none."""
        got, message = self.layer.receive([channel])
        assert got is not None, f"no message on {channel}"
        return message

    def nothing_on(self, channel: str) -> bool:
        return self.layer.receive([channel]) == (None, None)

    def reply(self, message: dict[str, Any], reply_channel: str) -> None:
        self.server.dispatch_reply(reply_channel, message)

    def advance(self, seconds: float) -> None:
        """Move the reactor clock in one-second steps, so every sweep runs."""
        whole = int(seconds)
        for _ in range(whole):
            self.reactor.advance(1)
        if seconds - whole:
            self.reactor.advance(seconds - whole)


@pytest.fixture
def harness(monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    made: list[Harness] = []

    def make(**kwargs: Any) -> Harness:
        h = Harness(**kwargs)
        monkeypatch.setattr(txaio.config, "loop", h.reactor)
        made.append(h)
        return h

    yield make  # type: ignore[misc]


# -- WebSocket wire helpers ------------------------------------------------------

def ws_key() -> bytes:
    return base64.b64encode(os.urandom(16))


def handshake(path: bytes = b"/ws", *, protocols: bytes | None = None,
              extra: bytes = b"") -> bytes:
    lines = [b"GET " + path + b" HTTP/1.1", b"Host: example.com", b"Upgrade: websocket",
             b"Connection: Upgrade", b"Sec-WebSocket-Key: " + ws_key(),
             b"Sec-WebSocket-Version: 13", b"User-Agent: test-client"]
    if protocols is not None:
        lines.append(b"Sec-WebSocket-Protocol: " + protocols)
    return b"\r\n".join(lines) + b"\r\n" + extra + b"\r\n"


def client_frame(opcode: int, payload: bytes, *, fin: bool = True,
                 mask: bytes = b"\x01\x02\x03\x04") -> bytes:
    """A masked client frame (opcode 1 text, 2 binary, 8 close, 9 ping, 10 pong)."""
    first = (0x80 if fin else 0) | opcode
    size = len(payload)
    if size < 126:
        head = bytes([first, 0x80 | size])
    elif size < 65536:
        head = bytes([first, 0x80 | 126]) + struct.pack("!H", size)
    else:
        head = bytes([first, 0x80 | 127]) + struct.pack("!Q", size)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def close_frame(code: int, reason: bytes = b"") -> bytes:
    return client_frame(8, struct.pack("!H", code) + reason)


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """Parse unmasked server frames: ``[(opcode, payload), ...]``."""
    frames = []
    while data:
        opcode = data[0] & 0x0F
        size = data[1] & 0x7F
        offset = 2
        if size == 126:
            size = struct.unpack("!H", data[2:4])[0]
            offset = 4
        elif size == 127:
            size = struct.unpack("!Q", data[2:10])[0]
            offset = 10
        frames.append((opcode, data[offset:offset + size]))
        data = data[offset + size:]
    return frames


def close_code(payload: bytes) -> int:
    return struct.unpack("!H", payload[:2])[0]
