"""Shared helpers for the worker tests: a memory layer on a fake clock, a sleep recorder."""

from __future__ import annotations

from typing import Any

from asgi_spec.layers.memory import MemoryChannelLayer
from asgi_spec.testing import FakeClock


def memory_layer(**options: Any) -> MemoryChannelLayer:
    """A memory layer whose expiry follows a ``FakeClock`` (``layer.clock``)."""
    return MemoryChannelLayer(clock=FakeClock(), **options)


class SleepRecorder:
    """A ``sleep`` that records the delays and advances a fake clock instead of waiting."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.delays: list[float] = []
        self.clock = clock

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        if self.clock is not None:
            self.clock.advance(seconds)

    @property
    def total(self) -> float:
        return sum(self.delays)


def http_request(path: str = "/", reply_channel: str = "srv!conn1", **extra: Any) -> dict:
    """A valid ``http.request`` message."""
    return {"reply_channel": reply_channel, "http_version": "1.1", "method": "GET",
            "path": path, "query_string": b"", "headers": [], **extra}


def ws_connect(path: str = "/ws/", reply_channel: str = "srv!ws1") -> dict:
    """A valid ``websocket.connect`` message."""
    return {"reply_channel": reply_channel, "path": path, "query_string": b"",
            "headers": [], "order": 0}


def ws_receive(path: str = "/ws/", reply_channel: str = "srv!ws1", order: int = 1,
               **frame: Any) -> dict:
    """A valid ``websocket.receive`` message; ``frame`` is ``text=`` or ``bytes=``."""
    return {"reply_channel": reply_channel, "path": path, "order": order, **frame}


def ws_disconnect(path: str = "/ws/", reply_channel: str = "srv!ws1", order: int = 2) -> dict:
    """A valid ``websocket.disconnect`` message."""
    return {"reply_channel": reply_channel, "path": path, "code": 1000, "order": order}


def drain(layer: Any, channel: str) -> list[dict]:
    """Every message waiting on ``channel`` (a ``prefix!`` receives all local ones)."""
    got = []
    while True:
        name, message = layer.receive([channel])
        if name is None:
            return got
        got.append(message)
