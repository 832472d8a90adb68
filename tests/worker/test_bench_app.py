"""Tests for ``tests/bench/app.py``: the benchmark's plain consumers behave as specified."""

from __future__ import annotations

from tests.worker.helpers import (
    SleepRecorder,
    drain,
    http_request,
    memory_layer,
    ws_connect,
    ws_disconnect,
    ws_receive,
)
from worker.routing import Router
from worker.worker import Worker


def bench_worker():
    return Worker(memory_layer(), "tests.bench.app:channel_routing", sleep=SleepRecorder())


def test_routing_is_importable_and_covers_http_and_websocket():
    """tests.bench.app:channel_routing imports and routes http.request and websocket.*."""
    assert Router("tests.bench.app:channel_routing").channels == {
        "http.request", "websocket.connect", "websocket.receive", "websocket.disconnect"}


def test_get_root_says_hello_and_other_paths_404():
    """GET / answers 200 hello; another path answers 404."""
    worker = bench_worker()
    worker.handle("http.request", http_request("/"))
    worker.handle("http.request", http_request("/nope"))
    first, second = drain(worker.layer, "srv!")
    assert (first["status"], first["content"]) == (200, b"hello")
    assert second["status"] == 404


def test_echo_socket_echoes_text_and_bytes():
    """/ws/echo/ accepts and sends every frame back to the same socket."""
    worker = bench_worker()
    worker.handle("websocket.connect", ws_connect("/ws/echo/"))
    worker.handle("websocket.receive", ws_receive("/ws/echo/", text="a"))
    worker.handle("websocket.receive", ws_receive("/ws/echo/", bytes=b"b", order=2))
    worker.handle("websocket.disconnect", ws_disconnect("/ws/echo/", order=3))
    assert drain(worker.layer, "srv!") == [{"accept": True}, {"text": "a"}, {"bytes": b"b"}]


def test_group_socket_joins_before_accept_and_fans_out():
    """/ws/group/ joins group bench on connect; each frame goes to every member."""
    worker = bench_worker()
    for n in (1, 2):
        worker.handle("websocket.connect", ws_connect("/ws/group/", reply_channel=f"srv!g{n}"))
    assert sorted(worker.layer.group_channels("bench")) == ["srv!g1", "srv!g2"]
    assert drain(worker.layer, "srv!") == [{"accept": True}, {"accept": True}]
    worker.handle("websocket.receive", ws_receive("/ws/group/", reply_channel="srv!g1", text="x"))
    assert drain(worker.layer, "srv!") == [{"text": "x"}, {"text": "x"}]
    worker.handle("websocket.disconnect", ws_disconnect("/ws/group/", reply_channel="srv!g1"))
    assert worker.layer.group_channels("bench") == ["srv!g2"]


def test_other_websocket_paths_are_rejected():
    """A WebSocket on an unknown path is rejected with close."""
    worker = bench_worker()
    worker.handle("websocket.connect", ws_connect("/elsewhere/"))
    assert drain(worker.layer, "srv!") == [{"close": True}]
