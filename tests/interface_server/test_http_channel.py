"""Protocol tests for ``interface_server.http_channel``: parsing, limits, framing and timeouts.

Each test feeds raw HTTP to a channel on a ``StringTransport``, reads what the
server sent to the in-memory layer, dispatches replies, and checks the bytes
written back. Time moves only with ``harness.advance``.
"""

from __future__ import annotations

from typing import Any

import pytest

from interface_server.config import ServerConfig

GET = b"GET /path?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n"


def respond(harness: Any, message: dict[str, Any], **reply: Any) -> None:
    harness.reply({"status": 200, "content": b"ok", **reply}, message["reply_channel"])


def status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


def test_keep_alive_serves_several_requests(harness: Any) -> None:
    """Requests on one keep-alive connection are each answered in turn."""
    h = harness()
    conn = h.connect()
    for n in range(3):
        conn.send(f"GET /{n} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
        message = h.receive("http.request")
        assert message["path"] == f"/{n}"
        respond(h, message, content=str(n).encode())
        assert conn.take().endswith(str(n).encode())
    assert not conn.closed

def test_pipelined_requests_are_answered_in_order(harness: Any) -> None:
    """Pipelined requests are handed over one at a time and answered in order."""
    h = harness()
    conn = h.connect()
    conn.send(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n")
    first = h.receive("http.request")
    assert first["path"] == "/1"
    assert h.nothing_on("http.request")
    respond(h, first, content=b"one")
    second = h.receive("http.request")
    assert second["path"] == "/2"
    respond(h, second, content=b"two")
    raw = conn.take()
    assert raw.index(b"one") < raw.index(b"two")

def test_chunked_request_body(harness: Any) -> None:
    """A chunked request body arrives whole in ``body``."""
    h = harness()
    conn = h.connect()
    conn.send(b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    assert h.receive("http.request")["body"] == b"hello world"

def test_body_over_the_limit_declared(harness: Any) -> None:
    """A Content-Length over --max-body-size gets 413 at once: no message, no 100-continue."""
    h = harness(config=ServerConfig(max_body_size=10))
    conn = h.connect()
    conn.send(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n"
              b"Expect: 100-continue\r\n\r\n")
    raw = conn.take()
    assert raw.startswith(b"HTTP/1.1 413 ")
    assert b"100 Continue" not in raw
    assert b"larger than 10 bytes" in raw
    assert conn.closed
    assert h.nothing_on("http.request")

def test_body_over_the_limit_chunked(harness: Any) -> None:
    """A chunked body that grows past the limit gets 413 as soon as it does."""
    h = harness(config=ServerConfig(max_body_size=8))
    conn = h.connect()
    conn.send(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"5\r\nhello\r\n5\r\nworld\r\n")
    assert conn.take().startswith(b"HTTP/1.1 413 ")
    assert conn.closed
    conn.send(b"0\r\n\r\n")
    assert h.nothing_on("http.request")

def test_expect_100_continue(harness: Any) -> None:
    """An acceptable body with Expect: 100-continue gets "100 Continue" first."""
    h = harness()
    conn = h.connect()
    conn.send(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
    assert conn.take() == b"HTTP/1.1 100 Continue\r\n\r\n"
    conn.send(b"abc")
    assert h.receive("http.request")["body"] == b"abc"

def test_http_10_closes_after_the_response(harness: Any) -> None:
    """HTTP/1.0 is answered as 1.0 and the connection closes."""
    h = harness()
    conn = h.connect()
    conn.send(b"GET / HTTP/1.0\r\n\r\n")
    message = h.receive("http.request")
    assert message["http_version"] == "1.0"
    respond(h, message)
    assert conn.take().startswith(b"HTTP/1.0 200 OK")
    assert conn.closed

def test_header_timeout_is_408(harness: Any) -> None:
    """A request head still incomplete after --header-timeout gets 408 and a close."""
    h = harness(config=ServerConfig(header_timeout=5))
    conn = h.connect()
    conn.send(b"GET / HTTP/1.1\r\nHost: h\r\n")
    h.advance(4)
    conn.send(b"X-Slow: 1\r\n")
    assert conn.take() == b""
    h.advance(2)
    assert status_of(conn.take()) == 408
    assert conn.closed

def test_idle_keep_alive_connection_is_closed(harness: Any) -> None:
    """A keep-alive connection idle past --keep-alive-timeout is closed quietly."""
    h = harness(config=ServerConfig(keep_alive_timeout=5))
    conn = h.connect()
    conn.send(GET)
    respond(h, h.receive("http.request"))
    conn.take()
    h.advance(4)
    assert not conn.closed
    h.advance(2)
    assert conn.closed
    assert conn.take() == b""

def test_waiting_request_is_not_idle(harness: Any) -> None:
    """A connection waiting for its response is not closed by the keep-alive timeout."""
    h = harness(config=ServerConfig(keep_alive_timeout=5, http_timeout=60))
    conn = h.connect()
    conn.send(GET)
    h.advance(30)
    assert not conn.closed

def test_limit_concurrency(harness: Any) -> None:
    """A connection accepted past --limit-concurrency gets 503 and a close; others go on."""
    h = harness(config=ServerConfig(limit_concurrency=1))
    first = h.connect()
    second = h.connect()
    second.send(GET)
    assert status_of(second.take()) == 503
    assert second.closed
    second.lose()
    first.send(GET)
    assert first.take() == b""
    h.receive("http.request")
    third = h.connect()
    third.send(GET)
    assert status_of(third.take()) == 503


@pytest.mark.parametrize(("raw", "status"), [
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: h\r\n\r\n", 414),
    (b"GET /" + b"a" * 40000, 414),
    (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(101)) + b"\r\n", 431),
    (b"GET / HTTP/1.1\r\nX-Big: " + b"v" * 33000 + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 1000) for i in range(40))
     + b"\r\n", 431),
    (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400),
    (b"POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\nabc", 400),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n", 400),
    (b"NONSENSE\r\n\r\n", 400),
    (b"GET /%FF HTTP/1.1\r\nHost: h\r\n\r\n", 400),
])
def test_bad_requests_are_answered_then_closed(harness: Any, raw: bytes, status: int) -> None:
    """Limits and malformed requests get their status (414/431/400) and a close, never silence."""
    h = harness()
    conn = h.connect()
    conn.send(raw)
    written = conn.take()
    assert status_of(written) == status
    assert b"\r\n\r\n" + str(status).encode() in written
    assert conn.closed
    assert h.nothing_on("http.request")
