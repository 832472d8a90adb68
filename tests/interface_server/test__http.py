"""Tests for ``interface_server._http``: request messages, body chunks, replies, errors."""

from __future__ import annotations

import io
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asgi_spec.exceptions import MessageFormatError
from asgi_spec.formats import validate_http_request, validate_http_request_body
from interface_server._http import (
    ABORTED_BODY_CHUNK,
    ClientError,
    RequestParts,
    body_too_large,
    build_http_request,
    error_response,
    http_version,
    interpret_reply,
    is_websocket_upgrade,
    message_headers,
    render_error,
    response_headers,
    split_body,
    split_target,
)
from interface_server._proxy import TrustedProxies

REPLY = "test!1"


def parts(**changes: object) -> RequestParts:
    fields: dict[str, object] = {
        "method": b"GET", "target": b"/", "version": b"HTTP/1.1",
        "headers": [(b"Host", b"example.com")], "client": ("10.0.0.7", 50123),
        "server": ("127.0.0.1", 8000), "secure": False,
    }
    fields.update(changes)
    return RequestParts(**fields)  # type: ignore[arg-type]


# -- request targets ---------------------------------------------------------------

@pytest.mark.parametrize(("target", "path", "query"), [
    (b"/", "/", b""),
    (b"/a%20b/c?x=1&y=%20", "/a b/c", b"x=1&y=%20"),
    (b"/caf%C3%A9", "/café", b""),
    (b"/a?", "/a", b""),
    (b"/a?b?c", "/a", b"b?c"),
    (b"/p#frag", "/p", b""),
    (b"*", "*", b""),
    (b"http://example.com:8000/x/y?q=1", "/x/y", b"q=1"),
    (b"https://example.com?q=1", "/", b"q=1"),
    (b"http://example.com", "/", b""),
    (b"/%2F", "//", b""),
])
def test_split_target(target: bytes, path: str, query: bytes) -> None:
    """The path is percent-decoded to str; the query string stays raw bytes."""
    assert split_target(target) == (path, query)


@pytest.mark.parametrize("target", [b"/%FF", b"/caf\xc3\xa9", b"relative", b"ftp://h/x", b""])
def test_split_target_rejects(target: bytes) -> None:
    """Non-ASCII targets, non-UTF-8 paths and non-path targets are 400s."""
    with pytest.raises(ClientError) as caught:
        split_target(target)
    assert caught.value.status == 400


@given(st.text(min_size=0, max_size=40).filter(lambda s: "\x00" not in s),
       st.binary(max_size=20).map(lambda b: quote(b, safe="=&").encode()))
def test_split_target_round_trips_any_path(path: str, query: bytes) -> None:
    """Any str path, percent-encoded on the wire, comes back exactly as it was."""
    wire = b"/" + quote(path, safe="").encode("ascii") + b"?" + query
    assert split_target(wire) == ("/" + path, query)


@pytest.mark.parametrize(("raw", "version"), [(b"HTTP/1.1", "1.1"), (b"HTTP/1.0", "1.0")])
def test_http_version(raw: bytes, version: str) -> None:
    """The protocol version becomes the message's "1.0"/"1.1"."""
    assert http_version(raw) == version


def test_http_version_unsupported() -> None:
    """Anything but HTTP/1.0 and 1.1 is refused with 505."""
    with pytest.raises(ClientError) as caught:
        http_version(b"HTTP/2.0")
    assert caught.value.status == 505


# -- headers -------------------------------------------------------------------------

def test_message_headers_lower_case_in_order_with_duplicates() -> None:
    """Names are lower-cased; order and duplicates are kept; values are untouched."""
    raw = [(b"Host", b"x"), (b"Cookie", b"a=1"), (b"X-Y", b"Mixed Case"), (b"cookie", b"b=2")]
    assert message_headers(raw) == [[b"host", b"x"], [b"cookie", b"a=1"],
                                    [b"x-y", b"Mixed Case"], [b"cookie", b"b=2"]]


def test_message_headers_drop_underscored_names() -> None:
    """A header name with '_' is dropped (it could spoof a dashed one in Django's META)."""
    assert message_headers([(b"X_Forwarded_For", b"1.2.3.4"), (b"A", b"1")]) == [[b"a", b"1"]]


header_names = st.from_regex(rb"\A[A-Za-z0-9!#$%&'*+.^`|~-]{1,20}\Z")
header_values = st.binary(max_size=40).map(
    lambda b: b.replace(b"\r", b"").replace(b"\n", b"").replace(b"\0", b"").strip(b" \t"))


@given(st.lists(st.tuples(header_names, header_values), max_size=30))
def test_message_headers_hypothesis(raw: list[tuple[bytes, bytes]]) -> None:
    """Every header without '_' survives, lower-cased, in its original position."""
    expected = [[n.lower(), v] for n, v in raw if b"_" not in n]
    assert message_headers(raw) == expected


@pytest.mark.parametrize(("method", "headers", "upgrade"), [
    (b"GET", [[b"upgrade", b"websocket"]], True),
    (b"GET", [[b"upgrade", b"WebSocket"]], True),
    (b"GET", [[b"upgrade", b"h2c, websocket"]], True),
    (b"POST", [[b"upgrade", b"websocket"]], False),
    (b"GET", [[b"upgrade", b"h2c"]], False),
    (b"GET", [], False),
])
def test_is_websocket_upgrade(method: bytes, headers: list[list[bytes]], upgrade: bool) -> None:
    """Only a GET with an Upgrade header naming websocket is a WebSocket handshake."""
    assert is_websocket_upgrade(method, headers) is upgrade


# -- http.request ---------------------------------------------------------------------

def test_build_http_request_has_every_field() -> None:
    """Every field of the http.request format is set, with the spec's types."""
    message = build_http_request(
        parts(method=b"post", target=b"/caf%C3%A9?q=%20", headers=[(b"Host", b"h"),
                                                                   (b"X-A", b"1")]),
        reply_channel=REPLY, root_path="/app", body=b"data",
        body_channel="http.request.body?abc")
    assert validate_http_request(message) is message
    assert message == {
        "reply_channel": REPLY, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/café", "query_string": b"q=%20", "root_path": "/app",
        "headers": [[b"host", b"h"], [b"x-a", b"1"]], "body": b"data",
        "body_channel": "http.request.body?abc", "client": ["10.0.0.7", 50123],
        "server": ["127.0.0.1", 8000],
    }


def test_build_http_request_without_body_channel_omits_it() -> None:
    """A body that fits inline has no body_channel key."""
    message = build_http_request(parts(), reply_channel=REPLY)
    assert "body_channel" not in message
    assert message["body"] == b""


def test_build_http_request_https_and_unix_socket() -> None:
    """A TLS connection is scheme https; a UNIX-socket peer has client/server None."""
    message = build_http_request(parts(secure=True, client=None, server=None),
                                 reply_channel=REPLY)
    assert (message["scheme"], message["client"], message["server"]) == ("https", None, None)


def test_build_http_request_applies_trusted_proxy_headers() -> None:
    """With trusted proxies given, X-Forwarded-* decide client, scheme and port."""
    headers = [(b"X-Forwarded-For", b"203.0.113.9"), (b"X-Forwarded-Proto", b"https"),
               (b"X-Forwarded-Port", b"443")]
    message = build_http_request(parts(headers=headers, client=("127.0.0.1", 4000)),
                                 reply_channel=REPLY, trusted=TrustedProxies("127.0.0.1"))
    assert message["client"] == ["203.0.113.9", 0]
    assert message["scheme"] == "https"
    assert message["server"] == ["127.0.0.1", 443]


def test_build_http_request_bad_path() -> None:
    """A path that is not UTF-8 is a ClientError(400), not a message."""
    with pytest.raises(ClientError):
        build_http_request(parts(target=b"/%C3"), reply_channel=REPLY)


methods = st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"get",
                           b"M-SEARCH"])
paths = st.lists(st.text(min_size=0, max_size=10).filter(lambda s: "\x00" not in s),
                 max_size=4).map(lambda segs: "/" + "/".join(quote(s, safe="") for s in segs))


@given(methods, paths, st.lists(st.tuples(header_names, header_values), max_size=20),
       st.binary(max_size=50), st.booleans())
def test_build_http_request_always_valid(method: bytes, path: str,
                                         headers: list[tuple[bytes, bytes]], body: bytes,
                                         secure: bool) -> None:
    """Whatever Twisted hands over, the message passes asgi_spec's own validator."""
    message = build_http_request(parts(method=method, target=path.encode(), headers=headers,
                                       secure=secure), reply_channel=REPLY, body=body)
    validate_http_request(message)
    assert message["method"] == method.decode().upper()


# -- bodies ------------------------------------------------------------------------------

def test_split_body_small_is_inline() -> None:
    """A body of at most one chunk travels in ``body``, with no chunks."""
    assert split_body(io.BytesIO(b"hello"), 5, 5) == (b"hello", None)
    assert split_body(io.BytesIO(b""), 0, 5) == (b"", None)


def test_split_body_large_streams_chunks() -> None:
    """A larger body: first chunk inline, the rest as bounded chunks, last closes."""
    first, chunks = split_body(io.BytesIO(b"abcdefghijk"), 11, 4)
    assert first == b"abcd"
    assert chunks is not None
    assert list(chunks) == [{"content": b"efgh", "more_content": True},
                            {"content": b"ijk", "more_content": False}]


@given(st.binary(max_size=300), st.integers(min_value=1, max_value=64))
def test_split_body_hypothesis(body: bytes, chunk_size: int) -> None:
    """Chunks reassemble the body exactly, none exceeds the chunk size, only the last ends."""
    first, chunks = split_body(io.BytesIO(body), len(body), chunk_size)
    messages = list(chunks or [])
    for message in messages:
        validate_http_request_body(message)
        assert len(message["content"]) <= chunk_size
    assert first + b"".join(m["content"] for m in messages) == body
    assert [m["more_content"] for m in messages] == [True] * (len(messages) - 1) + (
        [False] if messages else [])
    assert (chunks is None) == (len(body) <= chunk_size)


def test_split_body_short_spool_ends_the_body() -> None:
    """If the spooled body is shorter than announced, the chunks still end."""
    _, chunks = split_body(io.BytesIO(b"abcdef"), 10, 4)
    assert list(chunks or []) == [{"content": b"ef", "more_content": True},
                                  {"content": b"", "more_content": False}]


def test_aborted_chunk_is_valid() -> None:
    """The chunk sent when the client leaves mid-body says closed."""
    assert validate_http_request_body(ABORTED_BODY_CHUNK)["closed"] is True


@pytest.mark.parametrize(("length", "limit", "too_large"), [
    (10, 10, False), (11, 10, True), (None, 10, False), (10**9, None, False), (0, 0, False),
    (1, 0, True),
])
def test_body_too_large(length: int | None, limit: int | None, too_large: bool) -> None:
    """Only a known length over a set limit is too large."""
    assert body_too_large(length, limit) is too_large


# -- replies -------------------------------------------------------------------------------

def test_interpret_response_complete() -> None:
    """A complete Response gets a Content-Length and says no more is coming."""
    write = interpret_reply({"status": 201, "headers": [(b"X-A", b"1")], "content": b"ok"},
                            started=False)
    assert write.status == 201
    assert write.headers == [(b"X-A", b"1"), (b"content-length", b"2")]
    assert (write.content, write.more_content) == (b"ok", False)


def test_interpret_response_streaming_has_no_length() -> None:
    """A Response with more_content keeps no invented length (it will be chunked)."""
    write = interpret_reply({"status": 200, "more_content": True}, started=False)
    assert write.headers == []
    assert write.more_content is True


def test_interpret_chunk() -> None:
    """A Chunk after the Response writes its content only."""
    write = interpret_reply({"content": b"x", "more_content": True}, started=True)
    assert (write.status, write.content, write.more_content) == (None, b"x", True)


@pytest.mark.parametrize(("message", "started", "field"), [
    ({"status": "200"}, False, "status"),
    ({"status": 200, "body": b"x"}, False, "body"),
    ({"content": b"x"}, False, "status"),
    ({"status": 200}, True, "status"),
    ({"content": "text"}, True, "content"),
    ({"status": 200, "headers": [(b"a\nb", b"v")]}, False, "headers"),
    ("not a dict", False, None),
])
def test_interpret_bad_reply_names_the_field(message: object, started: bool,
                                             field: str | None) -> None:
    """An invalid reply raises MessageFormatError naming the field at fault."""
    with pytest.raises(MessageFormatError) as caught:
        interpret_reply(message, started=started)
    assert caught.value.field == field


@pytest.mark.parametrize(("status", "head", "adds_length"), [
    (200, False, True), (200, True, False), (204, False, False), (304, False, False),
    (101, False, False),
])
def test_response_headers_content_length_rules(status: int, head: bool,
                                               adds_length: bool) -> None:
    """Content-Length is added only where a body belongs (not HEAD, 1xx, 204, 304)."""
    headers = response_headers([], status, b"", False, head=head)
    assert ((b"content-length", b"0") in headers) is adds_length


def test_response_headers_drop_transfer_encoding_and_keep_length() -> None:
    """The application's Transfer-Encoding is dropped; its Content-Length is kept."""
    headers = response_headers([(b"Transfer-Encoding", b"chunked"), (b"Content-Length", b"9")],
                               200, b"x", False)
    assert headers == [(b"Content-Length", b"9")]


# -- the server's own answers -----------------------------------------------------------

def test_error_response() -> None:
    """Errors are short plain text naming the status and the reason."""
    status, headers, body = error_response(503, "no worker")
    assert status == 503
    assert body == b"503 Service Unavailable\n\nno worker\n"
    assert (b"content-length", str(len(body)).encode()) in headers


def test_render_error_is_a_complete_closing_response() -> None:
    """A rendered error is a full HTTP/1.1 message that announces the close."""
    raw = render_error(431, "too many headers")
    head, body = raw.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert b"connection: close" in head
    assert body == b"431 Request Header Fields Too Large\n\ntoo many headers\n"
