"""Tests for ``interface_server._websocket``: messages, ``order`` and reply actions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asgi_spec.exceptions import MessageFormatError
from asgi_spec.formats import (
    validate_websocket_connect,
    validate_websocket_disconnect,
    validate_websocket_receive,
)
from interface_server._websocket import (
    Accept,
    Close,
    OrderCounter,
    Reject,
    Send,
    _interpret,
    choose_subprotocol,
    connect_message,
    disconnect_message,
    interpret_reply,
    offered_subprotocols,
    origin_patterns,
    receive_message,
)

REPLY = "test!1"
SCOPE = {"scheme": "ws", "path": "/chat", "query_string": b"room=1",
         "headers": [[b"host", b"h"]], "client": ["10.0.0.7", 5], "server": ["127.0.0.1", 80]}


def test_order_counter() -> None:
    """Receives are numbered 1, 2, ... after connect's 0; disconnect takes the next."""
    counter = OrderCounter()
    assert counter.last == 0
    assert [counter.next() for _ in range(3)] == [1, 2, 3]
    assert counter.last == 3


def test_connect_message_is_valid_with_order_zero() -> None:
    """websocket.connect has every field, order 0 and the offered subprotocols."""
    message = connect_message(SCOPE, reply_channel=REPLY, root_path="/app",
                              subprotocols=["chat"])
    assert validate_websocket_connect(message) is message
    assert (message["order"], message["root_path"], message["subprotocols"]) == (0, "/app",
                                                                                  ["chat"])
    assert message["query_string"] == b"room=1"


@pytest.mark.parametrize(("payload", "binary", "key", "value"), [
    (b"hello", False, "text", "hello"),
    (b"", False, "text", ""),
    (b"", True, "bytes", b""),
    (b"\x00\xff", True, "bytes", b"\x00\xff"),
    ("é".encode(), False, "text", "é"),
])
def test_receive_message(payload: bytes, binary: bool, key: str, value: object) -> None:
    """Text frames become ``text``, binary ``bytes``; empty payloads are messages too."""
    message = receive_message(REPLY, "/chat", payload, binary, 4)
    assert validate_websocket_receive(message) is message
    assert message[key] == value
    assert message["order"] == 4
    assert ("bytes" if key == "text" else "text") not in message


@pytest.mark.parametrize(("code", "sent"), [(1000, 1000), (1009, 1009), (None, 1006),
                                            (1005, 1005), (4000, 4000), (999, 1006)])
def test_disconnect_message(code: int | None, sent: int) -> None:
    """The close code is reported; no code at all is 1006 (abnormal closure)."""
    message = disconnect_message(REPLY, "/chat", code, 3)
    assert validate_websocket_disconnect(message) is message
    assert (message["code"], message["order"]) == (sent, 3)


def test_offered_subprotocols() -> None:
    """Offers are read from every Sec-WebSocket-Protocol header, in order, once each."""
    headers = [[b"sec-websocket-protocol", b"chat, v2"], [b"other", b"x"],
               [b"sec-websocket-protocol", b"v3,chat"]]
    assert offered_subprotocols(headers) == ["chat", "v2", "v3"]


@pytest.mark.parametrize(("offered", "server", "requested", "chosen"), [
    (["a", "b"], [], None, None),
    (["a", "b"], ["b"], None, "b"),
    (["a", "b"], ["b", "a"], None, "a"),
    (["a", "b"], ["a"], "b", "b"),
    (["a"], [], "z", None),
    ([], ["a"], "a", None),
])
def test_choose_subprotocol(offered: list[str], server: list[str], requested: str | None,
                            chosen: str | None) -> None:
    """The app's choice wins if offered; else the client's first that --ws-protocol lists."""
    assert choose_subprotocol(offered, server, requested) == chosen


@pytest.mark.parametrize(("reply", "actions"), [
    ({"accept": True}, [Accept(None)]),
    ({"accept": True, "subprotocol": "chat"}, [Accept("chat")]),
    ({"text": "hi"}, [Accept(None), Send(b"hi", False)]),
    ({"bytes": b""}, [Accept(None), Send(b"", True)]),
    ({"text": ""}, [Accept(None), Send(b"", False)]),
    ({"accept": False}, [Reject(403)]),
    ({"accept": False, "text": "x"}, [Reject(403)]),
    ({"close": True}, [Reject(403)]),
    ({"close": 4000}, [Reject(403)]),
    ({"accept": True, "close": True}, [Accept(None), Close(1000)]),
    ({"text": "bye", "close": 4001}, [Accept(None), Send(b"bye", False), Close(4001)]),
    ({}, []),
])
def test_interpret_reply_while_handshaking(reply: dict[str, object], actions: list[object]
                                           ) -> None:
    """During the handshake: accept or data accepts; accept False or close rejects (403)."""
    assert interpret_reply(reply, handshaking=True) == actions


@pytest.mark.parametrize(("reply", "actions"), [
    ({"text": "hi"}, [Send(b"hi", False)]),
    ({"bytes": b"\x00"}, [Send(b"\x00", True)]),
    ({"accept": True}, []),
    ({"close": True}, [Close(1000)]),
    ({"close": 1011}, [Close(1011)]),
    ({"text": "x", "close": 3000}, [Send(b"x", False), Close(3000)]),
])
def test_interpret_reply_when_open(reply: dict[str, object], actions: list[object]) -> None:
    """Once open: data is sent, close closes with its code, accept is ignored."""
    assert interpret_reply(reply, handshaking=False) == actions


@pytest.mark.parametrize(("reply", "field"), [
    ({"text": "a", "bytes": b"b"}, "bytes"),
    ({"close": 1006}, "close"),
    ({"close": "yes"}, "close"),
    ({"txt": "typo"}, "txt"),
    ({"text": b"bytes"}, "text"),
])
def test_interpret_bad_reply(reply: dict[str, object], field: str) -> None:
    """A bad reply raises MessageFormatError naming the field."""
    with pytest.raises(MessageFormatError) as caught:
        interpret_reply(reply, handshaking=False)
    assert caught.value.field == field


@given(st.text(max_size=50))
def test_receive_text_round_trip(text: str) -> None:
    """Any text frame arrives as the same str."""
    assert receive_message(REPLY, "/", text.encode(), False, 1)["text"] == text


@pytest.mark.parametrize(("allowed", "patterns"), [
    (["*"], ["*"]),
    (["https://*.example.com"], ["https://*.example.com:*"]),
    (["https://example.com:8443"], ["https://example.com:8443"]),
    (["http://*"], ["http://*:*"]),
])
def test_origin_patterns(allowed: list[str], patterns: list[str]) -> None:
    """Origin patterns without a port match any port (Autobahn always compares one)."""
    assert origin_patterns(allowed) == patterns


REPLY_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2, max_value=5000), st.text(max_size=8),
    st.binary(max_size=8), st.lists(st.integers(), max_size=2),
)
REPLIES = st.one_of(
    st.dictionaries(st.sampled_from(["text", "bytes", "close", "accept", "subprotocol",
                                     "order", 1]), REPLY_VALUES, max_size=3),
    st.builds(lambda text: {"text": text}, st.text(max_size=16)),
    st.builds(lambda data: {"bytes": data}, st.binary(max_size=16)),
    REPLY_VALUES,
)


def outcome(fn: object, message: object, handshaking: bool) -> object:
    try:
        return fn(message, handshaking=handshaking)  # type: ignore[operator]
    except MessageFormatError as exc:
        return ("refused", exc.field, str(exc))


@given(REPLIES, st.booleans())
def test_interpret_reply_quick_look_agrees_with_the_field_by_field_check(
        message: object, handshaking: bool) -> None:
    """The one-look path for a lone frame decides as the full check does, on any
    reply: the same actions, or the same refusal naming the same field."""
    assert outcome(interpret_reply, message, handshaking) == \
        outcome(_interpret, message, handshaking)
