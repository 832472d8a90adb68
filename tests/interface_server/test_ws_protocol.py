"""Protocol tests for ``interface_server.ws_protocol``: WebSocket frames in, messages out.

The handshake is sent as raw bytes to an HTTP channel, which hands the
connection to Autobahn; client frames are masked by ``client_frame``; the
server's frames are parsed from ``transport.value()``.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from asgi_spec.formats import (
    validate_websocket_connect,
    validate_websocket_disconnect,
    validate_websocket_receive,
)
from interface_server.config import ServerConfig
from tests.interface_server.conftest import (
    client_frame,
    close_code,
    close_frame,
    handshake,
    server_frames,
)

TEXT, BINARY, CLOSE, PING, PONG = 1, 2, 8, 9, 10


def open_socket(h: Any, **connect: Any) -> tuple[Any, dict[str, Any]]:
    """A connection whose WebSocket the application accepted."""
    conn = h.connect()
    conn.send(handshake(**connect))
    message = h.receive("websocket.connect")
    h.reply({"accept": True}, message["reply_channel"])
    assert conn.take().startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    return conn, message


def status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


# -- the handshake ------------------------------------------------------------------


def test_handshake_is_held_until_the_app_accepts(harness: Any) -> None:
    """websocket.connect goes out (order 0) and nothing is written until the app accepts."""
    h = harness()
    conn = h.connect()
    conn.send(handshake(b"/chat/lobby?token=a%20b"))
    message = h.receive("websocket.connect")
    validate_websocket_connect(message)
    assert (message["path"], message["query_string"], message["order"]) == (
        "/chat/lobby", b"token=a%20b", 0)
    assert (message["scheme"], message["client"]) == ("ws", ["10.0.0.7", 50123])
    assert [b"user-agent", b"test-client"] in message["headers"]
    assert conn.take() == b""
    h.reply({"accept": True}, message["reply_channel"])
    raw = conn.take()
    assert raw.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"Sec-WebSocket-Accept: " in raw


def test_reject_is_403(harness: Any) -> None:
    """accept False rejects the handshake with 403, then websocket.disconnect follows."""
    h = harness()
    conn = h.connect()
    conn.send(handshake())
    message = h.receive("websocket.connect")
    h.reply({"accept": False}, message["reply_channel"])
    raw = conn.take()
    assert status_of(raw) == 403
    assert b"rejected" in raw
    assert conn.closed
    conn.lose()
    disconnect = h.receive("websocket.disconnect")
    assert (disconnect["code"], disconnect["order"]) == (1006, 1)


def test_close_while_handshaking_rejects(harness: Any) -> None:
    """A close reply before accepting is a rejection (403)."""
    h = harness()
    conn = h.connect()
    conn.send(handshake())
    h.reply({"close": True}, h.receive("websocket.connect")["reply_channel"])
    assert status_of(conn.take()) == 403


def test_data_reply_accepts(harness: Any) -> None:
    """Data while handshaking accepts the socket, then is sent."""
    h = harness()
    conn = h.connect()
    conn.send(handshake())
    h.reply({"text": "welcome"}, h.receive("websocket.connect")["reply_channel"])
    raw = conn.take()
    head, frames = raw.split(b"\r\n\r\n", 1)
    assert status_of(head) == 101
    assert server_frames(frames) == [(TEXT, b"welcome")]


def test_connect_timeout_rejects(harness: Any) -> None:
    """An app that never answers websocket.connect gets the client a 403 after the timeout."""
    h = harness(config=ServerConfig(websocket_connect_timeout=5))
    conn = h.connect()
    conn.send(handshake())
    h.advance(4)
    assert conn.take() == b""
    h.advance(2)
    raw = conn.take()
    assert status_of(raw) == 403
    assert b"did not accept the connection within 5 s" in raw


def test_no_worker_rejects_503(harness: Any) -> None:
    """With no worker consuming websocket.connect the handshake is refused 503 at once."""
    h = harness(workers=("http.request",))
    conn = h.connect()
    conn.send(handshake())
    raw = conn.take()
    assert status_of(raw) == 503
    assert b"no worker is consuming the websocket.connect channel" in raw
    assert h.nothing_on("websocket.connect")


def test_channel_full_on_connect_rejects_503(harness: Any) -> None:
    """ChannelFull on websocket.connect rejects with 503; the server goes on."""
    h = harness(channel_capacity={"websocket.connect": 1})
    first = h.connect()
    first.send(handshake())
    second = h.connect()
    second.send(handshake())
    assert status_of(second.take()) == 503
    h.reply({"accept": True}, h.receive("websocket.connect")["reply_channel"])
    assert status_of(first.take()) == 101


def test_invalid_reply_while_handshaking_is_500(harness: Any,
                                                caplog: pytest.LogCaptureFixture) -> None:
    """A malformed reply during the handshake rejects with 500 and logs the field."""
    h = harness()
    conn = h.connect()
    conn.send(handshake())
    with caplog.at_level(logging.ERROR, "interface_server"):
        h.reply({"accept": "yes"}, h.receive("websocket.connect")["reply_channel"])
    assert status_of(conn.take()) == 500
    assert "'accept'" in caplog.text


def test_bad_handshake_is_refused_by_autobahn(harness: Any) -> None:
    """A handshake without a valid key is refused (400) and no message is sent."""
    h = harness()
    conn = h.connect()
    conn.send(b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Version: 13\r\n\r\n")
    assert status_of(conn.take()) == 400
    assert h.nothing_on("websocket.connect")


@pytest.mark.parametrize(("origin", "allowed"), [
    (b"https://app.example.com", True),
    (b"https://evil.example.org", False),
    (b"null", True),
    (None, True),
])
def test_origin_checking(harness: Any, origin: bytes | None, allowed: bool) -> None:
    """With --ws-allowed-origin set, other origins are refused before any message is sent."""
    h = harness(config=ServerConfig(ws_allowed_origins=("https://*.example.com",)))
    conn = h.connect()
    conn.send(handshake(extra=b"" if origin is None else b"Origin: " + origin + b"\r\n"))
    if allowed:
        h.receive("websocket.connect")
    else:
        assert status_of(conn.take()) >= 400
        assert h.nothing_on("websocket.connect")


@pytest.mark.parametrize(("offered", "server", "reply", "chosen"), [
    (b"chat, v2", ("v2",), {"accept": True}, b"v2"),
    (b"chat, v2", (), {"accept": True, "subprotocol": "chat"}, b"chat"),
    (b"chat", (), {"accept": True}, None),
])
def test_subprotocols(harness: Any, offered: bytes, server: tuple[str, ...],
                      reply: dict[str, Any], chosen: bytes | None) -> None:
    """The agreed subprotocol is the app's choice, else the first offered --ws-protocol."""
    h = harness(config=ServerConfig(ws_protocols=server))
    conn = h.connect()
    conn.send(handshake(protocols=offered))
    message = h.receive("websocket.connect")
    assert message["subprotocols"] == [p.strip() for p in offered.decode().split(",")]
    h.reply(reply, message["reply_channel"])
    raw = conn.take()
    if chosen is None:
        assert b"Sec-WebSocket-Protocol" not in raw
    else:
        assert b"Sec-WebSocket-Protocol: " + chosen + b"\r\n" in raw


# -- an open socket ---------------------------------------------------------------------


def test_messages_are_received_in_order_including_empty_ones(harness: Any) -> None:
    """Every message, empty text and empty bytes too, becomes websocket.receive with order."""
    h = harness()
    conn, connect = open_socket(h)
    conn.send(client_frame(TEXT, b"hello") + client_frame(TEXT, b"") + client_frame(BINARY, b"")
              + client_frame(BINARY, b"\x00\x01"))
    received = [h.receive("websocket.receive") for _ in range(4)]
    for message in received:
        validate_websocket_receive(message)
        assert message["reply_channel"] == connect["reply_channel"]
    assert [(m["order"], m.get("text"), m.get("bytes")) for m in received] == [
        (1, "hello", None), (2, "", None), (3, None, b""), (4, None, b"\x00\x01")]


def test_fragmented_message_is_one_receive(harness: Any) -> None:
    """A message in several frames arrives as one websocket.receive."""
    h = harness()
    conn, _ = open_socket(h)
    conn.send(client_frame(TEXT, b"hel", fin=False) + client_frame(0, b"lo"))
    assert h.receive("websocket.receive")["text"] == "hello"
    assert h.nothing_on("websocket.receive")


def test_replies_are_sent(harness: Any) -> None:
    """text and bytes replies, empty ones included, are sent as frames."""
    h = harness()
    conn, connect = open_socket(h)
    for reply in ({"text": "hi"}, {"text": ""}, {"bytes": b""}, {"bytes": b"\xff"}):
        h.reply(reply, connect["reply_channel"])
    assert server_frames(conn.take()) == [(TEXT, b"hi"), (TEXT, b""), (BINARY, b""),
                                          (BINARY, b"\xff")]


def test_sending_formats_no_debug_line(harness: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reply frame is written without Autobahn's per-send debug formatting, and
    counted in Autobahn's traffic statistics as before."""
    import autobahn.websocket.protocol as autobahn_protocol

    h = harness()
    conn, connect = open_socket(h)

    def styled(*args: Any) -> str:
        raise AssertionError("a debug line was formatted for a send")

    monkeypatch.setattr(autobahn_protocol, "hltype", styled)
    monkeypatch.setattr(autobahn_protocol, "hlval", styled)
    [protocol] = h.server.websockets
    before = protocol.trafficStats.outgoingOctetsWireLevel
    h.reply({"text": "hi"}, connect["reply_channel"])
    assert server_frames(conn.take()) == [(TEXT, b"hi")]
    assert protocol.trafficStats.outgoingOctetsWireLevel == before + 4


@pytest.mark.parametrize(("close", "code"), [(True, 1000), (4001, 4001), (1011, 1011)])
def test_close_reply(harness: Any, close: object, code: int) -> None:
    """A close reply sends a close frame with its code; the disconnect reports that code."""
    h = harness()
    conn, connect = open_socket(h)
    h.reply({"close": close}, connect["reply_channel"])
    [(opcode, payload)] = server_frames(conn.take())
    assert (opcode, close_code(payload)) == (CLOSE, code)
    conn.send(close_frame(code))
    conn.lose()
    assert h.receive("websocket.disconnect")["code"] == code


def test_client_close_sends_disconnect_with_code_and_order(harness: Any) -> None:
    """The client's close becomes websocket.disconnect with its code and the next order."""
    h = harness()
    conn, connect = open_socket(h)
    conn.send(client_frame(TEXT, b"a") + close_frame(4321))
    assert server_frames(conn.take())[0][0] == CLOSE
    conn.lose()
    h.receive("websocket.receive")
    disconnect = h.receive("websocket.disconnect")
    validate_websocket_disconnect(disconnect)
    assert disconnect == {"reply_channel": connect["reply_channel"], "path": "/ws",
                          "code": 4321, "order": 2}


def test_dropped_connection_is_1006(harness: Any) -> None:
    """A TCP drop without a close frame is reported as code 1006."""
    h = harness()
    conn, _ = open_socket(h)
    conn.lose()
    assert h.receive("websocket.disconnect")["code"] == 1006


def test_oversize_message_closes_1009(harness: Any) -> None:
    """A message over --max-ws-message-size gets a 1009 close frame, not a TCP drop."""
    h = harness(config=ServerConfig(max_ws_message_size=100))
    conn, _ = open_socket(h)
    conn.send(client_frame(BINARY, b"x" * 100))
    assert h.receive("websocket.receive")["bytes"] == b"x" * 100
    conn.send(client_frame(BINARY, b"x" * 101))
    [(opcode, payload)] = server_frames(conn.take())
    assert (opcode, close_code(payload)) == (CLOSE, 1009)
    assert not conn.transport.disconnecting
    assert h.nothing_on("websocket.receive")
    conn.send(close_frame(1009))
    conn.lose()
    assert h.receive("websocket.disconnect")["code"] == 1009


def test_invalid_utf8_closes_1007(harness: Any) -> None:
    """A text message that is not UTF-8 closes the socket with 1007."""
    h = harness()
    conn, _ = open_socket(h)
    conn.send(client_frame(TEXT, b"\xff\xfe"))
    [(opcode, payload)] = server_frames(conn.take())
    assert (opcode, close_code(payload)) == (CLOSE, 1007)
    assert h.nothing_on("websocket.receive")


def test_channel_full_on_receive_closes_1013(harness: Any) -> None:
    """ChannelFull on websocket.receive closes the socket with 1013."""
    h = harness(channel_capacity={"websocket.receive": 1})
    conn, _ = open_socket(h)
    conn.send(client_frame(TEXT, b"1") + client_frame(TEXT, b"2"))
    [(opcode, payload)] = server_frames(conn.take())
    assert (opcode, close_code(payload)) == (CLOSE, 1013)
    assert h.server.stats["websocket_receive_full"] == 1


def test_invalid_reply_when_open_closes_1011(harness: Any,
                                             caplog: pytest.LogCaptureFixture) -> None:
    """A malformed reply on an open socket closes it with 1011 and logs the field."""
    h = harness()
    conn, connect = open_socket(h)
    with caplog.at_level(logging.ERROR, "interface_server"):
        h.reply({"text": "a", "bytes": b"b"}, connect["reply_channel"])
    [(opcode, payload)] = server_frames(conn.take())
    assert (opcode, close_code(payload)) == (CLOSE, 1011)
    assert "'bytes'" in caplog.text


# -- keepalive and lifetime ---------------------------------------------------------------


def test_quiet_socket_is_pinged_and_pong_keeps_it(harness: Any) -> None:
    """After --ping-interval of silence a ping goes out; a pong keeps the socket open."""
    h = harness(config=ServerConfig(ping_interval=10, ping_timeout=5))
    conn, _ = open_socket(h)
    h.advance(9)
    assert conn.take() == b""
    h.advance(1)
    [(opcode, payload)] = server_frames(conn.take())
    assert opcode == PING
    conn.send(client_frame(PONG, payload))
    h.advance(8)
    assert not conn.transport.disconnecting


def test_missing_pong_drops_the_socket(harness: Any) -> None:
    """No answer within --ping-timeout drops the connection; disconnect says 1006."""
    h = harness(config=ServerConfig(ping_interval=10, ping_timeout=5))
    conn, _ = open_socket(h)
    h.advance(10)
    assert server_frames(conn.take())[0][0] == PING
    h.advance(5)
    assert conn.transport.disconnecting
    conn.lose()
    assert h.receive("websocket.disconnect")["code"] == 1006


def test_traffic_postpones_pings(harness: Any) -> None:
    """A socket that talks is not pinged."""
    h = harness(config=ServerConfig(ping_interval=10))
    conn, _ = open_socket(h)
    for _ in range(3):
        h.advance(6)
        conn.send(client_frame(TEXT, b"."))
    assert conn.take() == b""


def test_lifetime_closes_1000(harness: Any) -> None:
    """A socket older than --websocket-timeout is closed with 1000."""
    h = harness(config=ServerConfig(websocket_timeout=30, ping_interval=0))
    conn, _ = open_socket(h)
    h.advance(29)
    assert conn.take() == b""
    h.advance(1)
    [(opcode, payload)] = server_frames(conn.take())
    assert (opcode, close_code(payload)) == (CLOSE, 1000)


def test_replies_after_close_are_dropped(harness: Any) -> None:
    """Once the socket is gone its reply channel is unknown: replies are dropped."""
    h = harness()
    conn, connect = open_socket(h)
    conn.lose()
    h.reply({"text": "late"}, connect["reply_channel"])
    assert h.server.router.dropped == 1
    assert conn.take() == b""
