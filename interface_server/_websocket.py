"""Sans-I/O WebSocket: connect/receive/disconnect messages, ``order``, reply actions.

A WebSocket's messages to the application carry ``order``: 0 for
``websocket.connect``, then 1, 2, ... for each ``websocket.receive``, and the
next number for ``websocket.disconnect``, so a worker can tell their sequence
even when several workers handle one socket. ``OrderCounter`` hands them out.

``interpret_reply`` turns a reply (``bytes``/``text``/``accept``/``close``/
``subprotocol``) into a list of actions for the adapter, by ASGI 1 rules:

* while handshaking, ``accept: True`` or any data accepts (data is then
  sent); ``accept: False``, or ``close`` without accepting, rejects (403);
* once open, data is sent and ``close`` closes with its code (True = 1000);
  ``accept`` is ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from asgi_spec.formats import close_code, single_frame, validate_websocket_reply

#: Close codes the server uses itself.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001  # server shutdown
CLOSE_ABNORMAL = 1006  # no close frame: reported, never sent
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011
CLOSE_TRY_AGAIN_LATER = 1013  # the layer is full

REJECT_STATUS = 403


@dataclass(frozen=True, slots=True)
class Accept:
    subprotocol: str | None


@dataclass(frozen=True, slots=True)
class Reject:
    status: int


@dataclass(frozen=True, slots=True)
class Send:
    payload: bytes
    is_binary: bool


@dataclass(frozen=True, slots=True)
class Close:
    code: int


Action = Accept | Reject | Send | Close


class OrderCounter:
    """Hands out ``order`` values: connect 0, receives 1.., disconnect last + 1."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last = 0  # websocket.connect has order 0

    def next(self) -> int:
        self._last += 1
        return self._last

    @property
    def last(self) -> int:
        return self._last


def offered_subprotocols(headers: Sequence[Sequence[bytes]]) -> list[str]:
    """Subprotocols the client offers, in its order (lower-cased headers)."""
    offered: list[str] = []
    for name, value in headers:
        if name == b"sec-websocket-protocol":
            for token in value.decode("latin-1").split(","):
                token = token.strip()
                if token and token not in offered:
                    offered.append(token)
    return offered


def choose_subprotocol(
    offered: Sequence[str], server_protocols: Sequence[str], requested: str | None
) -> str | None:
    """The subprotocol to answer with.

    The application's choice (``subprotocol`` in the accepting reply) wins if
    the client offered it; otherwise the first client-offered protocol that
    ``--ws-protocol`` lists (Daphne's rule); otherwise none.
    """
    if requested is not None and requested in offered:
        return requested
    for protocol in offered:
        if protocol in server_protocols:
            return protocol
    return None


def origin_patterns(allowed: Sequence[str]) -> list[str]:
    """Autobahn origin patterns for ``--ws-allowed-origin`` values.

    Autobahn matches ``scheme://host:port`` (the port always spelled out), so a
    pattern without a port gets ``:*``: ``https://*.example.com`` then allows
    that host on any port, as a user would expect.
    """
    patterns = []
    for pattern in allowed:
        tail = pattern.rsplit("/", 1)[-1]
        if pattern != "*" and ":" not in tail:
            pattern += ":*"
        patterns.append(pattern)
    return patterns


def connect_message(scope: dict[str, Any], *, reply_channel: str, root_path: str,
                    subprotocols: list[str]) -> dict[str, Any]:
    """``websocket.connect`` from the shared request fields (``connection_scope``)."""
    message = dict(scope)
    message.update(reply_channel=reply_channel, root_path=root_path, order=0,
                   subprotocols=subprotocols)
    return message


def receive_message(reply_channel: str, path: str, payload: bytes, is_binary: bool,
                    order: int) -> dict[str, Any]:
    """``websocket.receive``; an empty payload is still a message."""
    message: dict[str, Any] = {"reply_channel": reply_channel, "path": path, "order": order}
    if is_binary:
        message["bytes"] = bytes(payload)
    else:
        message["text"] = bytes(payload).decode("utf-8")
    return message


def disconnect_message(reply_channel: str, path: str, code: int | None,
                       order: int) -> dict[str, Any]:
    """``websocket.disconnect``; ``code`` None (no close frame) is reported as 1006."""
    if code is None or not 1000 <= code <= 4999:
        code = CLOSE_ABNORMAL
    return {"reply_channel": reply_channel, "path": path, "code": code, "order": order}


def interpret_reply(message: object, *, handshaking: bool) -> list[Action]:
    """Validate a WebSocket reply; return the actions it asks for, in order.

    Raises ``asgi_spec.MessageFormatError`` naming the field for a bad reply. The
    common reply on an open socket, one frame and nothing else, is decided in one
    look; everything else by ``_interpret`` (the same outcome, property-tested).
    """
    if not handshaking and (frame := single_frame(message)) is not None:
        if type(frame) is str:
            return [Send(frame.encode("utf-8"), False)]
        return [Send(frame, True)]
    return _interpret(message, handshaking=handshaking)


def _interpret(message: object, *, handshaking: bool) -> list[Action]:
    """``interpret_reply``, field by field."""
    reply = validate_websocket_reply(message)
    code = close_code(reply)
    data: list[Action] = []
    if reply.get("bytes") is not None:
        data.append(Send(reply["bytes"], True))
    elif reply.get("text") is not None:
        data.append(Send(reply["text"].encode("utf-8"), False))
    if not handshaking:
        return data + ([Close(code)] if code is not None else [])
    accept = reply.get("accept")
    if accept is False:
        return [Reject(REJECT_STATUS)]
    if accept is True or data:
        actions: list[Action] = [Accept(reply.get("subprotocol")), *data]
        return actions + ([Close(code)] if code is not None else [])
    if code is not None:
        return [Reject(REJECT_STATUS)]
    return []
