"""Tests for ``interface_server.server``: reply loop, routing, worker view, registry, shutdown."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock

from asgi_spec.exceptions import LayerUnavailable
from asgi_spec.layers.memory import MemoryChannelLayer
from interface_server.config import ServerConfig
from interface_server.layer_io import ImmediateLayerIO
from interface_server.server import Server, fit_to_layer
from tests.interface_server.conftest import client_frame, close_code, handshake, server_frames

GET = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"


class ScriptedLayerIO(ImmediateLayerIO):
    """Receives return Deferreds the test fires; everything else is immediate."""

    def __init__(self, layer: Any) -> None:
        super().__init__(layer)
        self.receives: list[tuple[list[str], Deferred[Any]]] = []

    def receive_batch(self, channels: list[str], timeout: float | None) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.receives.append((channels, d))
        return d


class Target:
    def __init__(self) -> None:
        self.replies: list[dict[str, Any]] = []

    def handle_reply(self, message: dict[str, Any]) -> None:
        self.replies.append(message)


def scripted_server() -> tuple[Server, ScriptedLayerIO, MemoryReactorClock]:
    reactor = MemoryReactorClock()
    io = ScriptedLayerIO(MemoryChannelLayer())
    return Server(io.layer, reactor=reactor, layer_io=io, server_id="srv"), io, reactor


# -- the reply loop -------------------------------------------------------------------


def test_reply_loop_receives_on_the_prefix_and_dispatches() -> None:
    """One receive at a time on ``<server-id>!``; each reply reaches its connection."""
    server, io, _ = scripted_server()
    target = Target()
    channel = server.router.add(target)
    server.start_reply_loop()
    assert len(io.receives) == 1
    assert io.receives[0][0] == ["srv!"]
    io.receives[0][1].callback([(channel, {"status": 200})])
    assert target.replies == [{"status": 200}]
    assert len(io.receives) == 2
    io.receives[1][1].callback([])
    assert len(io.receives) == 3
    assert not io.receives[2][1].called


def test_reply_loop_survives_layer_outage_with_backoff(caplog: pytest.LogCaptureFixture
                                                       ) -> None:
    """A failing receive is logged once, retried after a backoff, and recovery is logged."""
    server, io, reactor = scripted_server()
    server.start_reply_loop()
    with caplog.at_level(logging.DEBUG, "interface_server"):
        io.receives[0][1].errback(LayerUnavailable("redis down"))
        assert len(io.receives) == 1
        reactor.advance(0.2)
        assert len(io.receives) == 2
        io.receives[1][1].errback(LayerUnavailable("redis down"))
        reactor.advance(0.4)
        io.receives[2][1].callback([])
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "redis down" in errors[0].getMessage()
    assert "receiving replies again" in caplog.text


def test_stop_reply_loop_cancels_the_wait() -> None:
    """Stopping the loop cancels the outstanding receive; no new one starts."""
    server, io, _ = scripted_server()
    server.start_reply_loop()
    server.stop_reply_loop()
    assert io.receives[0][1].called
    assert len(io.receives) == 1


def test_replies_for_unknown_channels_are_dropped_and_counted() -> None:
    """A reply for a local part that is not here is dropped and counted."""
    server, _, _ = scripted_server()
    server.dispatch_reply("srv!nope", {"status": 200})
    server.dispatch_reply("other!1", {"status": 200})
    assert server.statistics()["replies_dropped"] == 2


def test_a_failing_target_does_not_break_dispatch(caplog: pytest.LogCaptureFixture) -> None:
    """An exception while writing one reply is logged, not raised into the loop."""
    server, _, _ = scripted_server()

    class Broken:
        def handle_reply(self, message: dict[str, Any]) -> None:
            raise RuntimeError("boom")

    channel = server.router.add(Broken())
    with caplog.at_level(logging.ERROR, "interface_server"):
        server.dispatch_reply(channel, {})
    assert "boom" in caplog.text


# -- the live-worker view ---------------------------------------------------------------


def test_worker_registry_is_read_at_most_once_a_second(harness: Any,
                                                       monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    """However many requests arrive, the registry is read at most once per second."""
    h = harness()
    calls: list[str] = []
    real = h.layer.live_processes
    monkeypatch.setattr(h.layer, "live_processes", lambda kind: calls.append(kind) or real(kind))
    for _ in range(20):
        conn = h.connect()
        conn.send(GET)
    assert calls == ["worker"]
    h.reactor.advance(1)
    for _ in range(5):
        h.connect().send(GET)
    assert calls == ["worker", "worker"]


def test_unreadable_registry_lets_requests_through(harness: Any,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """If the registry cannot be read, requests are not refused for it (the send decides)."""
    h = harness()

    def down(kind: str) -> dict[str, Any]:
        raise LayerUnavailable("down")

    monkeypatch.setattr(h.layer, "live_processes", down)
    h.connect().send(GET)
    h.receive("http.request")


def test_registry_emptied_by_an_outage_does_not_refuse_requests(
        harness: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a failed registry read, an empty registry (a Redis that restarted, before the
    workers' next heartbeat) lets requests through for a heartbeat period instead of
    answering "no worker"; past that period an empty registry means 503 again."""
    h = harness(workers=None)
    real = h.layer.live_processes

    def down(kind: str) -> dict[str, Any]:
        raise LayerUnavailable("down")

    monkeypatch.setattr(h.layer, "live_processes", down)
    h.connect().send(GET)
    h.receive("http.request")
    monkeypatch.setattr(h.layer, "live_processes", real)
    h.advance(1)
    conn = h.connect()
    conn.send(GET)
    h.receive("http.request")
    assert b"503" not in conn.take()
    h.advance(10)
    conn = h.connect()
    conn.send(GET)
    assert b"no worker is consuming" in conn.take()
    assert h.nothing_on("http.request")


def test_a_failed_send_makes_an_empty_registry_doubtful(
        harness: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A send that found the layer unavailable (Redis down; the registry read itself may
    have succeeded just after Redis came back empty) keeps "no worker" from being
    answered while the workers re-register."""
    h = harness(workers=None)
    h.add_worker("w1", ("http.request",))
    real_send = h.layer.send

    def down(channel: str, message: dict[str, Any]) -> None:
        raise LayerUnavailable("down")

    monkeypatch.setattr(h.layer, "send", down)
    conn = h.connect()
    conn.send(GET)
    assert b"503" in conn.take()
    monkeypatch.setattr(h.layer, "send", real_send)
    h.layer.flush()  # Redis came back empty: no registrations
    h.advance(1)
    for _ in range(2):  # the first one still gets the cached answer, and refreshes it
        conn = h.connect()
        conn.send(GET)
        h.receive("http.request")
        assert b"no worker" not in conn.take()
    h.advance(10)
    conn = h.connect()
    conn.send(GET)
    conn = h.connect()
    conn.send(GET)
    assert b"no worker is consuming" in conn.take()


def test_layer_without_registry_is_trusted() -> None:
    """A layer without the registry extension is assumed to have workers."""
    layer = MemoryChannelLayer()
    layer.extensions = ["groups"]  # type: ignore[misc]
    server = Server(layer, reactor=MemoryReactorClock(), layer_io=ImmediateLayerIO(layer))
    box: list[Any] = []
    server.consumer_available("http.request").addCallback(box.append)
    assert box == [None]


# -- registry heartbeat -------------------------------------------------------------------


def test_heartbeat_registers_the_server(harness: Any) -> None:
    """The server registers as kind "interfaceserver" with its reply prefix, and renews it."""
    h = harness(config=ServerConfig(heartbeat_interval=5))
    live = h.layer.live_processes("interfaceserver")
    assert list(live) == ["test"]
    assert live["test"]["reply_prefix"] == "test!"
    h.layer.unregister_process("interfaceserver", "test")
    h.advance(5)
    assert "test" in h.layer.live_processes("interfaceserver")


# -- listening -------------------------------------------------------------------------------


def test_listens_with_a_large_backlog() -> None:
    """Endpoints are listened on with a backlog of at least 1024."""
    reactor = MemoryReactorClock()
    layer = MemoryChannelLayer()
    server = Server(layer, ["tcp:port=8123:interface=127.0.0.1:backlog=2048"], reactor=reactor,
                    layer_io=ImmediateLayerIO(layer, clock=reactor))
    server.start()
    [(port, factory, backlog, interface)] = reactor.tcpServers
    assert (port, backlog, interface) == (8123, 2048, "127.0.0.1")
    assert factory is server.http_factory


def test_fit_to_layer_lowers_sizes() -> None:
    """Chunk and message sizes are lowered to fit a layer with a small message limit."""
    config = fit_to_layer(ServerConfig(), MemoryChannelLayer(max_message_size=100_000))
    assert config.body_chunk_size + config.max_header_size < 100_000
    assert config.max_ws_message_size + config.max_request_line < 100_000
    assert fit_to_layer(ServerConfig(), MemoryChannelLayer()) == ServerConfig()


# -- shutdown ----------------------------------------------------------------------------------


def finished(d: Deferred[Any]) -> bool:
    return d.called


def test_shutdown_drains_http_and_closes_websockets_1001(harness: Any) -> None:
    """Shutdown closes idle connections, lets in-flight requests finish, closes WebSockets
    with 1001 (sending their disconnect), refuses new requests, then completes."""
    h = harness()
    idle = h.connect()
    busy = h.connect()
    busy.send(GET)
    request = h.receive("http.request")
    ws = h.connect()
    ws.send(handshake())
    h.reply({"accept": True}, h.receive("websocket.connect")["reply_channel"])
    ws.take()
    late = h.connect()
    late.send(b"GET /late HTTP/1.1\r\n")

    done = h.server.shutdown()
    assert idle.closed
    [(opcode, payload)] = server_frames(ws.take())
    assert (opcode, close_code(payload)) == (8, 1001)
    ws.send(client_frame(8, payload))
    ws.lose()
    assert h.receive("websocket.disconnect")["code"] == 1001

    late.send(b"Host: h\r\n\r\n")
    assert late.take().startswith(b"HTTP/1.1 503 ")
    assert late.closed

    h.reactor.advance(1)
    assert not finished(done)
    h.reply({"status": 200, "content": b"finished"}, request["reply_channel"])
    raw = busy.take()
    assert raw.endswith(b"finished") and b"connection: close" in raw.lower()
    assert busy.closed
    busy.lose()
    late.lose()
    h.reactor.advance(0.1)
    assert finished(done)
    assert "test" not in h.layer.live_processes("interfaceserver")


def test_shutdown_cuts_what_outlives_the_graceful_timeout(harness: Any) -> None:
    """Requests still unanswered after --graceful-timeout are cut and shutdown completes."""
    h = harness(config=ServerConfig(graceful_timeout=3))
    busy = h.connect()
    busy.send(GET)
    done = h.server.shutdown()
    h.advance(2.9)
    assert not finished(done)
    h.advance(0.2)
    assert busy.transport.disconnecting
    busy.lose()
    h.reactor.advance(0.1)
    assert finished(done)


def test_shutdown_is_idempotent(harness: Any) -> None:
    """Calling shutdown twice returns the same drain."""
    h = harness()
    assert h.server.shutdown() is h.server.shutdown()


def test_idle_reply_loop_waits_in_the_layer(harness: Any) -> None:
    """An idle reply loop has one receive outstanding and wakes only per blocking_timeout:
    no busy polling. A reply sent meanwhile is delivered when the wait ends."""
    h = harness()
    calls: list[Any] = []
    real = h.layer.receive_batch
    h.layer.receive_batch = lambda channels, *args, **kw: calls.append(channels) or real(
        channels, *args, **kw)
    h.server.start_reply_loop()
    assert calls == [["test!"]]
    h.reactor.advance(0.5)
    assert calls == [["test!"]]
    conn = h.connect()
    conn.send(GET)
    h.layer.send(h.receive("http.request")["reply_channel"], {"status": 204})
    h.reactor.advance(0.5)
    assert conn.take().startswith(b"HTTP/1.1 204 ")
    h.server.stop_reply_loop()


def test_reply_loop_dispatches_a_whole_batch() -> None:
    """A batch of replies from one receive reaches each connection, in order."""
    server, io, _ = scripted_server()
    first, second = Target(), Target()
    one, two = server.router.add(first), server.router.add(second)
    server.start_reply_loop()
    io.receives[0][1].callback([(one, {"status": 200}), (two, {"status": 201}),
                                (one, {"content": b"x"})])
    assert first.replies == [{"status": 200}, {"content": b"x"}]
    assert second.replies == [{"status": 201}]
    assert len(io.receives) == 2
