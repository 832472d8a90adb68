"""The ASGI 1.x HTTP and WebSocket message formats, as pure validators.

This module is the message half of the contract between the interface server
and the worker: the server validates what it sends on ``http.request`` and the
``websocket.*`` channels and what it receives on reply channels; the worker
validates what it receives and what its consumers reply. Both use these same
functions, so a message one side accepts the other side accepts too.

Covered formats (channel or reply kind -> validator):

* ``http.request`` -> ``validate_http_request``
* ``http.request.body?<id>`` chunks -> ``validate_http_request_body``
* HTTP replies: Response -> ``validate_http_response``, Response Chunk ->
  ``validate_http_response_chunk``; ``validate_http_reply`` picks between them
  given whether the response has started (a Response has ``status``)
* ``http.disconnect`` -> ``validate_http_disconnect``
* ``websocket.connect`` / ``.receive`` / ``.disconnect`` -> ``validate_websocket_*``
* WebSocket send/accept/close replies -> ``validate_websocket_reply``
* ``asgi.delay`` -> ``validate_asgi_delay``

Rules shared by every validator:

* It returns the message it was given, unchanged (no normalisation). Use
  ``with_defaults`` for a copy with absent optional keys filled in.
* Any problem raises ``MessageFormatError(message_type, field, problem)``; it
  never raises anything else, whatever it is given. ``field`` names the key
  (``None`` when the message is not a dict at all); every problem about a
  header list uses the field ``"headers"`` (or ``"subprotocols"`` etc.) and
  says which entry is wrong.
* Optional keys may be absent. ``None`` is accepted only where ASGI 1 gives it
  a meaning: ``client``, ``server``, ``body_channel``, the WebSocket ``bytes``
  / ``text`` pair and the reply ``subprotocol``.
* Messages sent *to* a server or a worker on a named channel (requests,
  connects, disconnects, request-body chunks, ``asgi.delay``) may carry
  unknown keys: they are allowed, for forward compatibility. Replies (HTTP
  Response / Chunk, WebSocket send/accept/close) are strict: an unknown key is
  an error naming it, because it is nearly always a typo (``body`` for
  ``content``) that would otherwise be silently ignored.
* ``bool`` is never accepted where an ``int`` is expected.
* ``path`` is the decoded str path: empty, ``"*"`` or starting with ``/``.
  Header names must be RFC 7230 tokens (lower-case in requests and connects,
  any case in responses); no header name or value may hold CR, LF or NUL.

Message-type names used in errors: the channel name for request-side messages,
and ``http.response``, ``http.response.chunk`` and ``websocket.send`` for
replies (the ASGI 1 suggested reply-channel prefixes).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from asgi_spec.exceptions import InvalidChannelName, MessageFormatError
from asgi_spec.names import validate_channel_name

__all__ = [
    "ASGI_DELAY",
    "DEFAULTS",
    "HTTP_DISCONNECT",
    "HTTP_REQUEST",
    "HTTP_REQUEST_BODY",
    "HTTP_RESPONSE",
    "HTTP_RESPONSE_CHUNK",
    "HTTP_TOKEN",
    "HTTP_VERSIONS",
    "WEBSOCKET_CLOSE_CODES",
    "WEBSOCKET_CONNECT",
    "WEBSOCKET_DISCONNECT",
    "WEBSOCKET_RECEIVE",
    "WEBSOCKET_SEND",
    "close_code",
    "is_http_response_start",
    "is_valid_close_code",
    "single_frame",
    "validate_asgi_delay",
    "validate_http_disconnect",
    "validate_http_reply",
    "validate_http_request",
    "validate_http_request_body",
    "validate_http_response",
    "validate_http_response_chunk",
    "validate_message",
    "validate_websocket_connect",
    "validate_websocket_disconnect",
    "validate_websocket_receive",
    "validate_websocket_reply",
    "with_defaults",
]

# -- channel names and message-type names -------------------------------------

HTTP_REQUEST = "http.request"
HTTP_REQUEST_BODY = "http.request.body?"  # a pattern: new_channel() adds the id
HTTP_DISCONNECT = "http.disconnect"
WEBSOCKET_CONNECT = "websocket.connect"
WEBSOCKET_RECEIVE = "websocket.receive"
WEBSOCKET_DISCONNECT = "websocket.disconnect"
ASGI_DELAY = "asgi.delay"

# Reply kinds have no fixed channel; these names appear in errors only.
HTTP_RESPONSE = "http.response"
HTTP_RESPONSE_CHUNK = "http.response.chunk"
WEBSOCKET_SEND = "websocket.send"
_HTTP_REQUEST_BODY_TYPE = "http.request.body"

HTTP_VERSIONS = frozenset({"1.0", "1.1", "2"})

WEBSOCKET_CLOSE_CODES: tuple[range, ...] = (
    range(1000, 1004),  # normal, going away, protocol error, unsupported data
    range(1007, 1015),  # invalid data .. bad gateway (1004-1006 are reserved)
    range(3000, 5000),  # registered (3xxx) and private (4xxx) codes
)
"""Close codes a server may send: 1000-1003, 1007-1014 and 3000-4999 (RFC 6455)."""

_DISCONNECT_CODES = range(1000, 5000)  # received codes include 1005/1006

# RFC 7230 token characters (method names, header names).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: An HTTP token (RFC 9110 5.6.2) in bytes: a method, a header name.
HTTP_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_URI_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
_MISSING: Any = object()

# -- small checks ---------------------------------------------------------------


def _show(value: object) -> str:
    """A short repr of ``value`` for an error message (never raises)."""
    try:
        text = repr(value)
    except Exception:  # an object with a broken __repr__
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."


def _got(value: object) -> str:
    if isinstance(value, str | bytes | int | float | type(None)):
        return f"got {_show(value)}"
    return f"got {type(value).__name__} {_show(value)}"


def _dict(kind: str, message: object) -> Mapping[Any, Any]:
    if not isinstance(message, dict):
        raise MessageFormatError(kind, None, f"a message must be a dict, {_got(message)}")
    return message


def _get(kind: str, message: Mapping[Any, Any], key: str, required: bool) -> Any:
    if key in message:
        return message[key]
    if required:
        raise MessageFormatError(kind, key, "is required but missing")
    return _MISSING


def _typed(kind: str, message: Mapping[Any, Any], key: str, types: type | tuple[type, ...],
           expected: str, required: bool = True) -> Any:
    value = _get(kind, message, key, required)
    if value is _MISSING:
        return value
    allowed = types if isinstance(types, tuple) else (types,)
    if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
        raise MessageFormatError(kind, key, f"must be {expected}, {_got(value)}")
    return value


def _bytes(kind: str, message: Mapping[Any, Any], key: str, required: bool = True) -> Any:
    return _typed(kind, message, key, bytes, "bytes", required)


def _bool(kind: str, message: Mapping[Any, Any], key: str) -> Any:
    return _typed(kind, message, key, bool, "a bool", required=False)


def _int_in(kind: str, message: Mapping[Any, Any], key: str, allowed: range,
            expected: str = "", required: bool = True) -> Any:
    expected = expected or f"an int in {allowed.start}..{allowed.stop - 1}"
    value = _typed(kind, message, key, int, expected, required)
    if value is not _MISSING and value not in allowed:
        raise MessageFormatError(kind, key, f"must be {expected}, {_got(value)}")
    return value


def _channel(kind: str, message: Mapping[Any, Any], key: str, *, single_reader: bool = False,
             required: bool = True) -> None:
    value = _get(kind, message, key, required)
    if value is _MISSING or (value is None and not required):
        return
    try:
        validate_channel_name(value)
    except InvalidChannelName as exc:
        raise MessageFormatError(kind, key, f"must be a valid channel name: {exc}") from None
    if single_reader and "?" not in value:
        raise MessageFormatError(
            kind, key, f"must be a single-reader channel name ('name?id'), {_got(value)}"
        )


def _path(kind: str, message: Mapping[Any, Any], key: str = "path") -> None:
    value = _typed(kind, message, key, str, "a str")
    if value and value != "*" and not value.startswith("/"):
        raise MessageFormatError(kind, key, f"must be empty, '*' or start with '/', {_got(value)}")


def _scheme(kind: str, message: Mapping[Any, Any]) -> None:
    value = _typed(kind, message, "scheme", str, "a str such as 'http'", required=False)
    if value is not _MISSING and not _URI_SCHEME.fullmatch(value):
        raise MessageFormatError(kind, "scheme", f"must be a URI scheme such as 'https', "
                                 f"{_got(value)}")


def _address(kind: str, message: Mapping[Any, Any], key: str) -> None:
    value = _get(kind, message, key, required=False)
    if value is _MISSING or value is None:
        return
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise MessageFormatError(kind, key, f"must be None or [str host, int port], {_got(value)}")
    host, port = value
    if not isinstance(host, str):
        raise MessageFormatError(kind, key, f"host must be a str, {_got(host)}")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise MessageFormatError(kind, key, f"port must be an int in 0..65535, {_got(port)}")


def _headers(kind: str, message: Mapping[Any, Any], *, lower_case: bool, required: bool) -> None:
    value = _get(kind, message, "headers", required)
    if value is _MISSING:
        return
    if not isinstance(value, list | tuple):
        raise MessageFormatError(
            kind, "headers", f"must be a list of [bytes name, bytes value] pairs, {_got(value)}"
        )
    for index, pair in enumerate(value):
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise MessageFormatError(
                kind, "headers", f"entry {index} must be a [name, value] pair, {_got(pair)}"
            )
        name, header_value = pair
        if not isinstance(name, bytes) or not isinstance(header_value, bytes):
            raise MessageFormatError(
                kind, "headers", f"entry {index} name and value must be bytes, {_got(pair)}"
            )
        if not HTTP_TOKEN.fullmatch(name):
            raise MessageFormatError(
                kind, "headers", f"entry {index} name must be a non-empty HTTP token "
                f"(no CR, LF, NUL, space or ':'), {_got(name)}"
            )
        if lower_case and name != name.lower():
            raise MessageFormatError(
                kind, "headers", f"entry {index} name must be lower-case, {_got(name)}"
            )
        if b"\r" in header_value or b"\n" in header_value or b"\0" in header_value:
            raise MessageFormatError(
                kind, "headers", f"entry {index} value must not contain CR, LF or NUL, "
                f"{_got(header_value)}"
            )


def _strict(kind: str, message: Mapping[Any, Any], allowed: frozenset[str]) -> None:
    unknown = [key for key in message if key not in allowed]
    if not unknown:
        return
    unknown.sort(key=_show)
    first = unknown[0] if isinstance(unknown[0], str) else _show(unknown[0])
    hint = " (the body key of a response is 'content')" if "body" in unknown else ""
    raise MessageFormatError(
        kind, first, f"unknown key(s) {', '.join(map(_show, unknown))}; "
        f"allowed: {', '.join(sorted(allowed))}{hint}"
    )


# -- HTTP -----------------------------------------------------------------------


def validate_http_request(message: object) -> dict[str, Any]:
    """Validate an ``http.request`` message; return it unchanged."""
    kind = HTTP_REQUEST
    m = _dict(kind, message)
    _channel(kind, m, "reply_channel")
    version = _get(kind, m, "http_version", required=True)
    if not isinstance(version, str) or version not in HTTP_VERSIONS:
        raise MessageFormatError(
            kind, "http_version", f"must be one of '1.0', '1.1', '2', {_got(version)}"
        )
    method = _typed(kind, m, "method", str, "an upper-case str")
    if not _TOKEN.fullmatch(method) or method != method.upper():
        raise MessageFormatError(kind, "method", f"must be an upper-case str, {_got(method)}")
    _scheme(kind, m)
    _path(kind, m)
    _bytes(kind, m, "query_string")
    _typed(kind, m, "root_path", str, "a str", required=False)
    _headers(kind, m, lower_case=True, required=True)
    _bytes(kind, m, "body", required=False)
    _channel(kind, m, "body_channel", single_reader=True, required=False)
    _address(kind, m, "client")
    _address(kind, m, "server")
    return message  # type: ignore[return-value]


def validate_http_request_body(message: object) -> dict[str, Any]:
    """Validate a chunk sent on an ``http.request.body?<id>`` channel."""
    kind = _HTTP_REQUEST_BODY_TYPE
    m = _dict(kind, message)
    _bytes(kind, m, "content")
    _bool(kind, m, "closed")
    _bool(kind, m, "more_content")
    return message  # type: ignore[return-value]


_RESPONSE_KEYS = frozenset({"status", "headers", "content", "more_content"})
_CHUNK_KEYS = frozenset({"content", "more_content"})


def _plain_response(m: object) -> bool:
    """Whether ``validate_http_response`` would accept ``m`` (the same rules), in one
    pass without naming anything: the fast answer for the common case."""
    if type(m) is not dict or not _RESPONSE_KEYS.issuperset(m):
        return False
    status = m.get("status")
    if type(status) is not int or not 100 <= status <= 999:
        return False
    if type(m.get("content", b"")) is not bytes or type(m.get("more_content", False)) is not bool:
        return False
    headers = m.get("headers", ())
    if type(headers) is not list and type(headers) is not tuple:
        return False
    for pair in headers:
        if (type(pair) is not list and type(pair) is not tuple) or len(pair) != 2:
            return False
        name, value = pair
        if (type(name) is not bytes or type(value) is not bytes
                or not HTTP_TOKEN.fullmatch(name)
                or b"\r" in value or b"\n" in value or b"\0" in value):
            return False
    return True


def validate_http_response(message: object) -> dict[str, Any]:
    """Validate an HTTP Response reply (the one that carries ``status``)."""
    if _plain_response(message):
        return message  # type: ignore[return-value]
    return _check_http_response(message)


def _check_http_response(message: object) -> dict[str, Any]:
    """``validate_http_response`` field by field, naming the first bad one."""
    kind = HTTP_RESPONSE
    m = _dict(kind, message)
    _strict(kind, m, _RESPONSE_KEYS)
    _int_in(kind, m, "status", range(100, 1000))
    _headers(kind, m, lower_case=False, required=False)
    _bytes(kind, m, "content", required=False)
    _bool(kind, m, "more_content")
    return message  # type: ignore[return-value]


def validate_http_response_chunk(message: object) -> dict[str, Any]:
    """Validate an HTTP Response Chunk reply (no ``status``)."""
    kind = HTTP_RESPONSE_CHUNK
    m = _dict(kind, message)
    if "status" in m:
        raise MessageFormatError(kind, "status", "a Response Chunk has no 'status'")
    _strict(kind, m, _CHUNK_KEYS)
    _bytes(kind, m, "content")
    _bool(kind, m, "more_content")
    return message  # type: ignore[return-value]


def is_http_response_start(message: object) -> bool:
    """``True`` if ``message`` is a Response (has ``status``), not a Chunk."""
    return isinstance(message, dict) and "status" in message


def validate_http_reply(message: object, *, started: bool) -> dict[str, Any]:
    """Validate a message from an HTTP reply channel.

    ``started`` says whether a Response was already received for this
    request. Before that the reply must be a Response; after it, only Chunks.
    """
    if is_http_response_start(message):
        if started:
            raise MessageFormatError(
                HTTP_RESPONSE_CHUNK, "status",
                "the response already started; later replies are Chunks without 'status'",
            )
        return validate_http_response(message)
    if not started and isinstance(message, dict):
        raise MessageFormatError(
            HTTP_RESPONSE, "status",
            "is required: the first reply must be a Response, got a Chunk",
        )
    return validate_http_response_chunk(message)


def validate_http_disconnect(message: object) -> dict[str, Any]:
    """Validate an ``http.disconnect`` message."""
    kind = HTTP_DISCONNECT
    m = _dict(kind, message)
    _channel(kind, m, "reply_channel")
    _path(kind, m)
    return message  # type: ignore[return-value]


# -- WebSocket ------------------------------------------------------------------


def validate_websocket_connect(message: object) -> dict[str, Any]:
    """Validate a ``websocket.connect`` message (``order`` is 0)."""
    kind = WEBSOCKET_CONNECT
    m = _dict(kind, message)
    _channel(kind, m, "reply_channel")
    _scheme(kind, m)
    _path(kind, m)
    _bytes(kind, m, "query_string")
    _typed(kind, m, "root_path", str, "a str", required=False)
    _headers(kind, m, lower_case=True, required=True)
    _address(kind, m, "client")
    _address(kind, m, "server")
    _int_in(kind, m, "order", range(0, 1), "the int 0")
    protocols = _get(kind, m, "subprotocols", required=False)
    if protocols is not _MISSING and (
        not isinstance(protocols, list | tuple)
        or not all(isinstance(p, str) and _TOKEN.fullmatch(p) for p in protocols)
    ):
        raise MessageFormatError(
            kind, "subprotocols", f"must be a list of token strs, {_got(protocols)}"
        )
    return message  # type: ignore[return-value]


def _one_frame(kind: str, m: Mapping[Any, Any], *, required: bool) -> None:
    data = m.get("bytes")
    text = m.get("text")
    if data is not None and text is not None:
        raise MessageFormatError(kind, "bytes", "at most one of 'bytes' and 'text' may be set")
    if data is not None and not isinstance(data, bytes):
        raise MessageFormatError(kind, "bytes", f"must be bytes or None, {_got(data)}")
    if text is not None and not isinstance(text, str):
        raise MessageFormatError(kind, "text", f"must be a str or None, {_got(text)}")
    if required and data is None and text is None:
        raise MessageFormatError(kind, "bytes", "exactly one of 'bytes' and 'text' must be set")


def validate_websocket_receive(message: object) -> dict[str, Any]:
    """Validate ``websocket.receive``: one of ``bytes``/``text`` (may be empty)."""
    kind = WEBSOCKET_RECEIVE
    m = _dict(kind, message)
    _channel(kind, m, "reply_channel")
    _path(kind, m)
    _one_frame(kind, m, required=True)
    _int_in(kind, m, "order", range(1, 2**63), "a 64-bit int >= 1")
    return message  # type: ignore[return-value]


def validate_websocket_disconnect(message: object) -> dict[str, Any]:
    """Validate ``websocket.disconnect`` (``code`` may be 1005/1006: it was received)."""
    kind = WEBSOCKET_DISCONNECT
    m = _dict(kind, message)
    _channel(kind, m, "reply_channel")
    _int_in(kind, m, "code", _DISCONNECT_CODES)
    _path(kind, m)
    _int_in(kind, m, "order", range(1, 2**63), "a 64-bit int >= 1")
    return message  # type: ignore[return-value]


_WEBSOCKET_REPLY_KEYS = frozenset({"bytes", "text", "close", "accept", "subprotocol"})


def is_valid_close_code(code: object) -> bool:
    """``True`` if ``code`` is an int a server may send in a Close frame."""
    return (isinstance(code, int) and not isinstance(code, bool)
            and any(code in codes for codes in WEBSOCKET_CLOSE_CODES))


def single_frame(message: object) -> str | bytes | None:
    """The frame of a WebSocket reply that is one frame and nothing else --
    ``{"text": str}`` or ``{"bytes": bytes}``, the common reply -- found in one
    look; ``None`` for any other message (which may still be valid)."""
    if type(message) is not dict or len(message) != 1:
        return None
    frame = message.get("text")
    if type(frame) is str:
        return frame
    frame = message.get("bytes")
    return frame if type(frame) is bytes else None


def validate_websocket_reply(message: object) -> dict[str, Any]:
    """Validate a WebSocket send/accept/close reply (strict: unknown keys fail).

    A ``single_frame`` reply passes in one look; anything else is checked field
    by field (the same verdict, property-tested).
    """
    if single_frame(message) is not None:
        return message  # type: ignore[return-value]
    return _websocket_reply_fields(message)


def _websocket_reply_fields(message: object) -> dict[str, Any]:
    kind = WEBSOCKET_SEND
    m = _dict(kind, message)
    _strict(kind, m, _WEBSOCKET_REPLY_KEYS)
    _one_frame(kind, m, required=False)
    close = m.get("close", False)
    if not isinstance(close, bool) and not is_valid_close_code(close):
        raise MessageFormatError(
            kind, "close", f"must be a bool or a close code (1000-1003, 1007-1014, "
            f"3000-4999), {_got(close)}"
        )
    _bool(kind, m, "accept")
    protocol = m.get("subprotocol")
    if protocol is not None and not (isinstance(protocol, str) and _TOKEN.fullmatch(protocol)):
        raise MessageFormatError(kind, "subprotocol", f"must be a token str or None, "
                                 f"{_got(protocol)}")
    return message  # type: ignore[return-value]


def close_code(reply: object) -> int | None:
    """The close code a WebSocket reply asks for: ``None`` (no close), or an int.

    ``close: True`` means 1000. Raises ``MessageFormatError`` for an invalid code.
    """
    close = _dict(WEBSOCKET_SEND, reply).get("close", False)
    if close is False:
        return None
    if close is True:
        return 1000
    if not is_valid_close_code(close):
        raise MessageFormatError(
            WEBSOCKET_SEND, "close", f"must be a bool or a valid close code, {_got(close)}"
        )
    return close  # type: ignore[return-value]


# -- asgi.delay -------------------------------------------------------------------


def validate_asgi_delay(message: object) -> dict[str, Any]:
    """Validate ``asgi.delay``: send ``content`` to ``channel`` after ``delay`` ms."""
    kind = ASGI_DELAY
    m = _dict(kind, message)
    _channel(kind, m, "channel")
    _int_in(kind, m, "delay", range(0, 2**63), "a 64-bit int >= 0 (milliseconds)")
    _typed(kind, m, "content", dict, "a dict (the message to deliver)")
    return message  # type: ignore[return-value]


# -- dispatch and defaults ---------------------------------------------------------

_BY_CHANNEL: dict[str, Callable[[object], dict[str, Any]]] = {
    HTTP_REQUEST: validate_http_request,
    HTTP_DISCONNECT: validate_http_disconnect,
    WEBSOCKET_CONNECT: validate_websocket_connect,
    WEBSOCKET_RECEIVE: validate_websocket_receive,
    WEBSOCKET_DISCONNECT: validate_websocket_disconnect,
    ASGI_DELAY: validate_asgi_delay,
}


def validate_message(channel: str, message: object) -> dict[str, Any]:
    """Validate ``message`` by the format of the named channel it travels on.

    Covers the fixed channels above and ``http.request.body?<id>``. Messages on
    any other channel (reply channels included) are returned unchecked: a
    reply's kind depends on the connection, see ``validate_http_reply`` and
    ``validate_websocket_reply``.
    """
    if isinstance(channel, str) and channel.startswith(HTTP_REQUEST_BODY):
        return validate_http_request_body(message)
    validator = _BY_CHANNEL.get(channel) if isinstance(channel, str) else None
    return validator(message) if validator else message  # type: ignore[return-value]


DEFAULTS: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    HTTP_REQUEST: {"scheme": "http", "root_path": "", "body": b"", "body_channel": None,
                   "client": None, "server": None},
    _HTTP_REQUEST_BODY_TYPE: {"closed": False, "more_content": False},
    HTTP_RESPONSE: {"headers": [], "content": b"", "more_content": False},
    HTTP_RESPONSE_CHUNK: {"more_content": False},
    WEBSOCKET_CONNECT: {"scheme": "ws", "root_path": "", "client": None, "server": None,
                        "subprotocols": []},
    WEBSOCKET_SEND: {"bytes": None, "text": None, "close": False, "subprotocol": None},
})
"""Values of absent optional keys, per message type (``accept`` has none:
absent and ``False`` differ while handshaking)."""


def with_defaults(message_type: str, message: Mapping[str, Any]) -> dict[str, Any]:
    """A shallow copy of ``message`` with absent optional keys set to their defaults.

    ``message_type`` is a key of ``DEFAULTS`` (``"http.request.body"`` for
    body chunks). Does not validate; validate first.
    """
    if message_type not in DEFAULTS:
        raise KeyError(f"no defaults for {message_type!r}; known: {', '.join(DEFAULTS)}")
    filled = dict(message)
    for key, default in DEFAULTS[message_type].items():
        if key not in filled:
            filled[key] = list(default) if isinstance(default, list) else default
    return filled
