"""Sans-I/O HTTP: request parts to ``http.request``, bodies to chunks, replies to writes.

Nothing here touches a socket or a reactor; the Twisted adapters
(``http_channel``, ``http_request``) feed these functions values and act on
what they return.

* ``build_http_request`` makes the ``http.request`` message (every field of
  ``asgi_spec.formats.validate_http_request``) from the parsed request line,
  the headers exactly as received, and the connection's addresses.
* ``split_body`` decides what travels inline in ``body`` and what goes on a
  ``body_channel`` as ``http.request.body?...`` chunks of bounded size.
* ``interpret_reply`` validates a reply with ``asgi_spec.formats`` and says
  what to write: a status and headers (for a Response), body bytes, and
  whether more is coming.
* ``error_response`` / ``render_error`` are the server's own short plain-text
  answers (400, 413, 414, 431, 500, 503, 504).

Client mistakes raise ``ClientError`` with the status to answer (h11's
``RemoteProtocolError`` with ``error_status_hint``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, BinaryIO
from urllib.parse import unquote_to_bytes

from asgi_spec.formats import validate_http_reply
from interface_server._proxy import Address, TrustedProxies, apply_proxy_headers

Header = tuple[bytes, bytes]

#: ``HTTP/2`` comes only from an HTTP/2 stream (Twisted's ``H2Stream``): an
#: HTTP/1 request line saying ``HTTP/2`` is refused by the channel first.
_VERSIONS = {b"HTTP/1.1": "1.1", b"HTTP/1.0": "1.0", b"HTTP/2": "2"}
# Connection-level headers of a reply that Twisted sets itself from the framing.
_FRAMING_HEADERS = {b"transfer-encoding"}
_NO_BODY_STATUSES = {204, 304}


class ClientError(Exception):
    """The client sent something we will not serve; answer ``status`` and close."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True, slots=True)
class RequestParts:
    """One request as parsed off the wire, before it becomes a message."""

    method: bytes
    target: bytes  # the request-target as sent: b"/a%20b?x=1"
    version: bytes  # b"HTTP/1.1"
    headers: Sequence[Header]  # as received: order, duplicates and case kept
    client: Address | None  # the peer; None over a UNIX socket
    server: Address | None
    secure: bool = False


def split_target(target: bytes) -> tuple[str, bytes]:
    """``(path, query_string)``: the percent-decoded str path, and the raw query.

    Accepts origin-form (``/p?q``), absolute-form (``http://h/p?q``, as sent
    to proxies) and ``*``. Raises ``ClientError(400)`` for anything else and
    for a path that is not UTF-8 once percent-decoded.
    """
    if target == b"*":
        return "*", b""
    try:
        target.decode("ascii")
    except UnicodeDecodeError:
        raise ClientError(400, "the request target contains non-ASCII bytes") from None
    if not target.startswith(b"/"):
        scheme, sep, rest = target.partition(b"://")
        if not sep or scheme.lower() not in (b"http", b"https", b"ws", b"wss"):
            raise ClientError(400, "the request target must start with '/'")
        slash = min((i for i in (rest.find(b"/"), rest.find(b"?")) if i >= 0), default=-1)
        target = b"/" if slash < 0 else rest[slash:]
        if target.startswith(b"?"):
            target = b"/" + target
    raw_path, _, query = target.partition(b"?")
    raw_path = raw_path.split(b"#", 1)[0]
    try:
        path = unquote_to_bytes(raw_path).decode("utf-8")
    except UnicodeDecodeError:
        raise ClientError(400, "the request path is not UTF-8 once percent-decoded") from None
    return path, query


def http_version(version: bytes) -> str:
    """``b"HTTP/1.1"`` -> ``"1.1"``, ``b"HTTP/2"`` -> ``"2"``; others: ``ClientError(505)``."""
    try:
        return _VERSIONS[version]
    except KeyError:
        raise ClientError(505, "only HTTP/1.0, HTTP/1.1 and HTTP/2 are served") from None


def message_headers(headers: Sequence[Header]) -> list[list[bytes]]:
    """Headers for a message: names lower-cased, order and duplicates kept.

    Names containing ``_`` are dropped: Django maps ``-`` and ``_`` to the same
    ``META`` key, so they could spoof a header set by the proxy (CVE-2015-0219).
    """
    return [[name.lower(), value] for name, value in headers if b"_" not in name]


def header_value(headers: Sequence[Sequence[bytes]], name: bytes) -> bytes | None:
    """The first value of header ``name`` (lower-case) in lower-cased ``headers``."""
    for header, value in headers:
        if header == name:
            return value
    return None


def is_websocket_upgrade(method: bytes, headers: Sequence[Sequence[bytes]]) -> bool:
    """``True`` for a GET asking to upgrade to WebSocket (lower-cased headers)."""
    if method != b"GET":
        return False
    for name, value in headers:
        if name == b"upgrade" and b"websocket" in [t.strip().lower() for t in value.split(b",")]:
            return True
    return False


def connection_scope(
    parts: RequestParts, *, websocket: bool = False, trusted: TrustedProxies | None = None
) -> dict[str, Any]:
    """The fields ``http.request`` and ``websocket.connect`` share.

    ``path``, ``query_string``, ``headers``, ``client``, ``server`` and
    ``scheme``, after X-Forwarded-* headers when ``trusted`` is given.
    """
    if parts.target == b"*" and parts.method != b"OPTIONS":
        raise ClientError(400, "the asterisk-form target '*' is only for OPTIONS")
    path, query = split_target(parts.target)
    headers = message_headers(parts.headers)
    schemes = ("ws", "wss") if websocket else ("http", "https")
    scheme = schemes[parts.secure]
    client, server = parts.client, parts.server
    if trusted is not None:
        client, server, scheme = apply_proxy_headers(headers, client, server, scheme, trusted)
    return {
        "scheme": scheme,
        "path": path,
        "query_string": query,
        "headers": headers,
        "client": list(client) if client else None,
        "server": list(server) if server else None,
    }


def build_http_request(
    parts: RequestParts,
    *,
    reply_channel: str,
    root_path: str = "",
    body: bytes = b"",
    body_channel: str | None = None,
    trusted: TrustedProxies | None = None,
) -> dict[str, Any]:
    """The ``http.request`` message for ``parts`` (raises ``ClientError``)."""
    version = http_version(parts.version)
    try:
        method = parts.method.decode("ascii").upper()
    except UnicodeDecodeError:
        raise ClientError(400, "the request method is not ASCII") from None
    message = connection_scope(parts, trusted=trusted)
    message.update(
        reply_channel=reply_channel,
        http_version=version,
        method=method,
        root_path=root_path,
        body=body,
    )
    if body_channel is not None:
        message["body_channel"] = body_channel
    return message


# -- request bodies -------------------------------------------------------------


def body_too_large(length: int | None, limit: int | None) -> bool:
    """``True`` if a body of ``length`` bytes (declared or received) is over ``limit``."""
    return limit is not None and length is not None and length > limit


def split_body(
    content: BinaryIO, size: int, chunk_size: int
) -> tuple[bytes, Iterator[dict[str, Any]] | None]:
    """``(inline body, chunk messages or None)`` for a body of ``size`` bytes.

    A body of at most ``chunk_size`` bytes travels inline in ``http.request``.
    A larger one sends its first ``chunk_size`` bytes inline and the rest as
    ``http.request.body?`` messages of at most ``chunk_size`` bytes each, the
    last with ``more_content: False``. Chunks are read from ``content`` lazily,
    so the body is never all in memory at once.
    """
    first = content.read(min(size, chunk_size))
    if size <= chunk_size:
        return first, None
    return first, _chunks(content, size - len(first), chunk_size)


def _chunks(content: BinaryIO, remaining: int, chunk_size: int) -> Iterator[dict[str, Any]]:
    while remaining > 0:
        data = content.read(min(remaining, chunk_size))
        if not data:  # the spool came up short: end the body honestly
            yield {"content": b"", "more_content": False}
            return
        remaining -= len(data)
        yield {"content": data, "more_content": remaining > 0}


#: Sent on a body channel when the client goes away mid-body.
ABORTED_BODY_CHUNK: dict[str, Any] = {"content": b"", "closed": True, "more_content": False}


# -- replies --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReplyWrite:
    """What one valid reply asks the server to write."""

    status: int | None  # set for a Response, None for a Chunk
    headers: list[Header]
    content: bytes
    more_content: bool


def interpret_reply(message: object, *, started: bool, head: bool = False) -> ReplyWrite:
    """Validate an HTTP reply and say what to write.

    ``started``: a Response was already received. ``head``: the request was a
    HEAD (so no Content-Length is made up). Raises
    ``asgi_spec.MessageFormatError`` naming the field for a bad reply.
    """
    reply = validate_http_reply(message, started=started)
    content = reply.get("content", b"")
    more = reply.get("more_content", False)
    if "status" not in reply:
        return ReplyWrite(None, [], content, more)
    status = reply["status"]
    headers = response_headers(reply.get("headers", ()), status, content, more, head=head)
    return ReplyWrite(status, headers, content, more)


def response_headers(
    headers: Sequence[Sequence[bytes]], status: int, content: bytes, more_content: bool,
    *, head: bool = False,
) -> list[Header]:
    """The headers to write for a Response.

    ``Transfer-Encoding`` is dropped: the server frames the body itself
    (chunked when the length is unknown). A complete response (no
    ``more_content``) without ``Content-Length`` gets one, so it needs no
    chunked framing.
    """
    kept = [(bytes(n), bytes(v)) for n, v in headers if n.lower() not in _FRAMING_HEADERS]
    has_length = any(n.lower() == b"content-length" for n, _ in kept)
    if (not more_content and not has_length and not head and status >= 200
            and status not in _NO_BODY_STATUSES):
        kept.append((b"content-length", str(len(content)).encode("ascii")))
    return kept


# -- the server's own answers ---------------------------------------------------


def reason_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown Status"


def error_response(status: int, detail: str) -> tuple[int, list[Header], bytes]:
    """``(status, headers, body)`` of a short plain-text error answer."""
    body = f"{status} {reason_phrase(status)}\n\n{detail}\n".encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode("ascii")),
    ]
    return status, headers, body


def render_error(status: int, detail: str, extra_headers: Sequence[Header] = ()) -> bytes:
    """A complete HTTP/1.1 error response that closes the connection.

    For answers written straight to the transport, before any request object
    can answer (bad request line, oversized headers, oversized body, a refused
    WebSocket handshake, whose ``Sec-WebSocket-Version`` is an extra header).
    """
    status, headers, body = error_response(status, detail)
    lines = [f"HTTP/1.1 {status} {reason_phrase(status)}".encode("ascii")]
    lines += [name + b": " + value for name, value in [*headers, *extra_headers]]
    lines.append(b"connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body
