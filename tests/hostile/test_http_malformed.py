"""Malformed and ambiguous HTTP/1.1 against the real server, written byte for byte.

Each case sends raw bytes on a fresh connection and checks the status line
that comes back. Framing the server cannot be sure of (RFC 9112 sections 6
and 11: Content-Length with Transfer-Encoding, duplicate lengths, unknown or
repeated codings, obs-fold, bare LF) is refused with 400 and a close, so a
proxy in front and this server can never disagree on where a request ends.
The ``target`` fixture then checks that the server lives and still serves.
"""

from __future__ import annotations

import json

import pytest

from tests.hostile import wire
from tests.hostile.conftest import Target

H = b"Host: test\r\n"
POST = b"POST /echo HTTP/1.1\r\n" + H
GET = b"GET /echo HTTP/1.1\r\n" + H
CHUNKED = b"Transfer-Encoding: chunked\r\n"

#: (id, request bytes, expected status, words the answer's body must contain)
REFUSED = [
    # -- framing: Content-Length and Transfer-Encoding -------------------------
    ("cl-and-te", POST + b"Content-Length: 5\r\n" + CHUNKED + b"\r\n0\r\n\r\n", 400, b""),
    ("te-and-cl", POST + CHUNKED + b"Content-Length: 5\r\n\r\n0\r\n\r\n", 400, b""),
    ("duplicate-cl-same", POST + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400, b""),
    ("duplicate-cl-different", POST + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
     400, b""),
    ("cl-list", POST + b"Content-Length: 3, 3\r\n\r\nabc", 400, b""),
    ("cl-negative", POST + b"Content-Length: -1\r\n\r\n", 400, b""),
    ("cl-plus-sign", POST + b"Content-Length: +3\r\n\r\nabc", 400, b""),
    ("cl-hex", POST + b"Content-Length: 0x3\r\n\r\nabc", 400, b""),
    ("cl-two-numbers", POST + b"Content-Length: 3 3\r\n\r\nabc", 400, b""),
    ("te-unknown", POST + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 400,
     b"Transfer-Encoding: chunked"),
    ("te-gzip-chunked", POST + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 400,
     b"Transfer-Encoding: chunked"),
    ("te-twice", POST + CHUNKED + CHUNKED + b"\r\n0\r\n\r\n", 400, b"Transfer-Encoding"),
    ("te-identity-with-cl", POST + b"Transfer-Encoding: identity\r\nContent-Length: 3\r\n\r\nabc",
     400, b"Transfer-Encoding"),
    ("te-in-http-1.0", b"POST /echo HTTP/1.0\r\n" + CHUNKED + b"\r\n0\r\n\r\n", 400,
     b"only in HTTP/1.1"),
    ("te-space-before-colon", POST + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400, b""),
    ("te-folded", POST + b"Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n", 400, b"folding"),
    # -- chunk sizes -------------------------------------------------------------
    ("chunk-size-not-hex", POST + CHUNKED + b"\r\nzz\r\nabc\r\n0\r\n\r\n", 400, b""),
    ("chunk-size-negative", POST + CHUNKED + b"\r\n-3\r\nabc\r\n0\r\n\r\n", 400, b""),
    ("chunk-size-0x", POST + CHUNKED + b"\r\n0x3\r\nabc\r\n0\r\n\r\n", 400, b""),
    ("chunk-size-leading-space", POST + CHUNKED + b"\r\n 3\r\nabc\r\n0\r\n\r\n", 400, b""),
    ("chunk-size-huge", POST + CHUNKED + b"\r\nffffffffffffffffffffffff\r\nabc", 413,
     b"larger than"),
    ("chunk-size-over-limit", POST + CHUNKED + b"\r\n100001\r\nabc", 413, b"larger than"),
    ("chunk-missing-crlf", POST + CHUNKED + b"\r\n3\r\nabcXX0\r\n\r\n", 400, b""),
    ("chunk-size-line-too-long", POST + CHUNKED + b"\r\n1;" + b"x" * 2000 + b"\r\na\r\n", 400,
     b""),
    # -- line endings, folding, control characters ---------------------------------
    ("bare-lf", b"GET /echo HTTP/1.1\nHost: test\n\n", 400, b"bare LF"),
    ("bare-lf-after-request-line", b"GET /echo HTTP/1.1\r\nHost: test\nX: y\n\n", 400,
     b"bare LF"),
    ("bare-lf-mixed", b"GET /echo HTTP/1.1\r\nHost: test\nX: y\r\n\r\n", 400, b""),
    ("obs-fold-space", GET + b"X-A: a\r\n b\r\n\r\n", 400, b"folding"),
    ("obs-fold-tab", GET + b"X-A: a\r\n\tb\r\n\r\n", 400, b"folding"),
    ("nul-in-value", GET + b"X-A: a\x00b\r\n\r\n", 400, b""),
    ("nul-in-name", GET + b"X\x00A: ab\r\n\r\n", 400, b""),
    ("cr-in-value", GET + b"X-A: a\rb\r\n\r\n", 400, b""),
    ("cr-in-name", GET + b"X\rA: ab\r\n\r\n", 400, b""),
    ("space-in-name", GET + b"X A: ab\r\n\r\n", 400, b""),
    ("empty-name", GET + b": ab\r\n\r\n", 400, b""),
    ("no-colon", GET + b"just words\r\n\r\n", 400, b""),
    ("nul-in-target", b"GET /a\x00b HTTP/1.1\r\n" + H + b"\r\n", 400, b""),
    ("space-in-target", b"GET /a b HTTP/1.1\r\n" + H + b"\r\n", 400, b""),
    ("non-ascii-target", b"GET /\xff HTTP/1.1\r\n" + H + b"\r\n", 400, b""),
    ("target-not-utf8-decoded", b"GET /%FF HTTP/1.1\r\n" + H + b"\r\n", 400, b"UTF-8"),
    # -- request lines and versions ------------------------------------------------
    ("http-0.9", b"GET /echo\r\n\r\n", 400, b""),
    ("http-0.9-version", b"GET /echo HTTP/0.9\r\n\r\n", 505, b"HTTP/1.0 and HTTP/1.1"),
    ("http-2.0-plain", b"GET /echo HTTP/2.0\r\n" + H + b"\r\n", 505, b"HTTP/1.0 and HTTP/1.1"),
    ("h2-preface-plain", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, b""),
    ("http-3", b"GET /echo HTTP/3\r\n" + H + b"\r\n", 400, b""),
    ("http-3.0", b"GET /echo HTTP/3.0\r\n" + H + b"\r\n", 505, b""),
    ("lowercase-version", b"GET /echo http/1.1\r\n" + H + b"\r\n", 400, b""),
    ("two-spaces", b"GET  /echo HTTP/1.1\r\n" + H + b"\r\n", 400, b""),
    ("tab-separated", b"GET\t/echo\tHTTP/1.1\r\n" + H + b"\r\n", 400, b""),
    ("four-parts", b"GET /echo HTTP/1.1 extra\r\n" + H + b"\r\n", 400, b""),
    ("method-with-paren", b"G(T /echo HTTP/1.1\r\n" + H + b"\r\n", 400, b""),
    ("method-non-ascii", b"G\xc9T /echo HTTP/1.1\r\n" + H + b"\r\n", 400, b""),
    ("method-empty", b" /echo HTTP/1.1\r\n" + H + b"\r\n", 400, b""),
    ("asterisk-with-get", b"GET * HTTP/1.1\r\n" + H + b"\r\n", 400, b"only for OPTIONS"),
    ("authority-form", b"CONNECT test:443 HTTP/1.1\r\n" + H + b"\r\n", 400, b""),
    ("absolute-form-bad-scheme", b"GET ftp://test/echo HTTP/1.1\r\n" + H + b"\r\n", 400, b""),
    ("tls-client-hello", bytes.fromhex("16030100a5010000a10303") + bytes(32), 400,
     b"HTTP method"),
    ("binary-garbage", bytes(range(256)), 400, b""),
    # -- Host (RFC 9112 3.2: 400 for a missing, repeated or invalid Host) -------------
    ("no-host-http-1.1", b"GET /echo HTTP/1.1\r\n\r\n", 400, b"Host"),
    ("two-hosts", b"GET /echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, b"Host"),
    ("host-with-slash", b"GET /echo HTTP/1.1\r\nHost: a/b\r\n\r\n", 400, b"Host"),
    ("host-with-space", b"GET /echo HTTP/1.1\r\nHost: a b\r\n\r\n", 400, b"Host"),
    ("host-with-at", b"GET /echo HTTP/1.1\r\nHost: user@evil\r\n\r\n", 400, b"Host"),
    # -- limits ----------------------------------------------------------------------
    ("huge-uri", b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\n" + H + b"\r\n", 414, b"request line"),
    ("uri-just-over", b"GET /" + b"a" * 8192 + b" HTTP/1.1\r\n" + H + b"\r\n", 414, b""),
    ("huge-header", GET + b"X-Big: " + b"v" * 100_000 + b"\r\n\r\n", 431, b"header"),
    ("head-over-limit", GET + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 1000) for i in range(40))
     + b"\r\n", 431, b"head"),
    ("too-many-headers", GET + b"".join(b"X-%d: v\r\n" % i for i in range(150)) + b"\r\n", 431,
     b"header fields"),
    ("body-over-limit-declared", POST + b"Content-Length: 1048577\r\n\r\n", 413, b"larger than"),
    ("body-cl-astronomical", POST + b"Content-Length: 99999999999999999999999\r\n\r\n", 413, b""),
]


@pytest.mark.parametrize(("raw", "status", "words"), [c[1:] for c in REFUSED],
                         ids=[c[0] for c in REFUSED])
def test_refused_with_status_and_close(target: Target, raw: bytes, status: int,
                                       words: bytes) -> None:
    """The request is answered with ``status`` (a body saying why, ``Connection: close``)
    and the connection is closed at once: no hang, no silent drop, no second reading."""
    result = wire.exchange(target.port, raw, timeout=5)
    assert result.statuses == [status], result.raw[:400]
    answer = result.responses[0]
    assert answer.header("connection") == "close"
    assert answer.body.startswith(str(status).encode()), answer.body
    assert words in answer.body, answer.body
    assert result.closed, "the connection was left open after the error"
    assert result.elapsed < 3, f"answered only after {result.elapsed:.1f} s"


#: (id, request bytes, expected echo fields) for input that is odd but unambiguous.
SERVED = [
    ("absolute-form", b"GET http://test/echo/abs?x=1 HTTP/1.1\r\n" + H + b"\r\n",
     {"path": "/echo/abs", "query_string": "x=1"}),
    ("http-1.2-served-as-1.1", b"GET /echo/v12 HTTP/1.2\r\n" + H + b"\r\n", {"path": "/echo/v12"}),
    ("http-1.0-without-host", b"GET /echo/v10 HTTP/1.0\r\n\r\n", {"path": "/echo/v10"}),
    ("chunk-extension", POST + CHUNKED + b"\r\n3;name=value\r\nabc\r\n0\r\n\r\n",
     {"body_length": 3}),
    ("chunk-trailer", POST + CHUNKED + b"\r\n3\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n",
     {"body_length": 3}),
    ("uppercase-hex-chunk", POST + CHUNKED + b"\r\nA\r\n0123456789\r\n0\r\n\r\n",
     {"body_length": 10}),
    ("one-empty-line-first", b"\r\n" + GET + b"\r\n", {"path": "/echo"}),
    ("ows-around-value", GET + b"X-Ows: \t padded \t\r\n\r\n", {"path": "/echo"}),
    ("host-ipv6-port", b"GET /echo HTTP/1.1\r\nHost: [::1]:8000\r\n\r\n", {"path": "/echo"}),
    ("host-empty", b"GET /echo HTTP/1.1\r\nHost:\r\n\r\n", {"path": "/echo"}),
    ("lowercase-method-uppercased", b"post /echo HTTP/1.1\r\n" + H
     + b"Content-Length: 2\r\n\r\nhi", {"method": "POST", "body_length": 2}),
    ("underscore-header-dropped", GET + b"X_Spoof: 1\r\nX-Real: 2\r\n\r\n", {"path": "/echo"}),
]


@pytest.mark.parametrize(("raw", "fields"), [c[1:] for c in SERVED], ids=[c[0] for c in SERVED])
def test_odd_but_unambiguous_requests_are_served(target: Target, raw: bytes,
                                                 fields: dict[str, object]) -> None:
    """Input the RFC allows (or says how to read) reaches the application as meant."""
    result = wire.exchange(target.port, raw, expect=1, timeout=5)
    assert result.statuses == [200], result.raw[:400]
    echoed = json.loads(result.responses[0].body)
    assert {key: echoed[key] for key in fields} == fields
    if b"X_Spoof" in raw:
        assert "x_spoof" not in echoed["headers"] and echoed["headers"]["x-real"] == ["2"]
    if b"X-Ows" in raw:
        assert echoed["headers"]["x-ows"] == ["padded"]


def test_options_asterisk_reaches_the_application(target: Target) -> None:
    """``OPTIONS *`` is the one place the asterisk form is valid: it is passed on (the
    test application answers 404 for any path it does not know)."""
    result = wire.exchange(target.port, b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n", expect=1)
    assert result.statuses == [404]


# -- smuggling through pipelining -------------------------------------------------------


def paths(result: wire.Exchange) -> list[str]:
    return [json.loads(r.body)["path"] for r in result.responses if r.status == 200]


def test_pipelined_requests_are_each_answered_in_order(target: Target) -> None:
    """Fifty pipelined requests in one write get fifty answers, in order (the baseline
    the smuggling cases below are compared with)."""
    raw = b"".join(b"GET /echo/%d HTTP/1.1\r\nHost: test\r\n\r\n" % i for i in range(50))
    result = wire.exchange(target.port, raw, expect=50)
    assert paths(result) == [f"/echo/{i}" for i in range(50)]


@pytest.mark.parametrize("smuggler", [
    POST + b"Content-Length: 44\r\n" + CHUNKED + b"\r\n0\r\n\r\nGET /echo/smuggled HTTP/1.1\r\n" + H
    + b"\r\n",
    POST + CHUNKED + b"Content-Length: 3\r\n\r\n5c\r\nGET /echo/smuggled HTTP/1.1\r\n" + H
    + b"\r\n0\r\n\r\n",
    POST + b"Content-Length: 0\r\nContent-Length: 44\r\n\r\nGET /echo/smuggled HTTP/1.1\r\n" + H
    + b"\r\n",
    POST + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n"
    b"GET /echo/smuggled HTTP/1.1\r\n" + H + b"\r\n",
    POST + b"Transfer-Encoding:\r\n chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n"
    b"GET /echo/smuggled HTTP/1.1\r\n" + H + b"\r\n",
    b"POST /echo HTTP/1.1\nHost: test\nContent-Length: 0\n\nGET /echo/smuggled HTTP/1.1\r\n" + H
    + b"\r\n",
], ids=["cl-te", "te-cl", "cl-cl", "te-te", "folded-te", "bare-lf"])
def test_smuggling_after_a_good_request_is_cut_off(target: Target, smuggler: bytes) -> None:
    """A good request, then an ambiguously framed one hiding a third request, all in one
    write: the first is answered, the second gets 400 and the connection closes, and the
    hidden request is never served."""
    first = b"GET /echo/first HTTP/1.1\r\n" + H + b"\r\n"
    result = wire.exchange(target.port, first + smuggler, timeout=5)
    assert result.statuses == [200, 400], result.raw[-400:]
    assert paths(result) == ["/echo/first"]
    assert result.closed
    assert b"smuggled" not in result.raw


@pytest.mark.parametrize(("framing", "body"), [
    (b"Content-Length: %d\r\n", b"GET /echo/inner HTTP/1.1\r\nHost: test\r\n\r\n"),
    (CHUNKED, b"GET /echo/inner HTTP/1.1\r\nHost: test\r\n\r\n"),
], ids=["content-length", "chunked"])
def test_a_request_inside_a_body_stays_body(target: Target, framing: bytes, body: bytes) -> None:
    """Bytes that look like a request but sit inside a well-framed body are that body:
    exactly the two outer requests are answered, and the body arrives whole."""
    if framing == CHUNKED:
        framed = CHUNKED + b"\r\n" + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
    else:
        framed = framing % len(body) + b"\r\n" + body
    raw = POST + framed + b"GET /echo/after HTTP/1.1\r\n" + H + b"\r\n"
    result = wire.exchange(target.port, raw, expect=2, timeout=5)
    assert paths(result) == ["/echo", "/echo/after"]
    assert json.loads(result.responses[0].body)["body_length"] == len(body)


def test_expect_continue_with_an_oversize_body_gets_413_not_100(target: Target) -> None:
    """``Expect: 100-continue`` with a body over the limit is refused with 413 at once,
    without inviting the body with 100 Continue."""
    raw = POST + b"Content-Length: 2000000\r\nExpect: 100-continue\r\n\r\n"
    result = wire.exchange(target.port, raw, timeout=5)
    assert result.statuses == [413]
    assert b"100 Continue" not in result.raw


def test_chunked_body_growing_past_the_limit_is_413(target: Target) -> None:
    """Chunks that are each small but add up past --max-body-size get 413 as soon as the
    total passes it (the rest is never read)."""
    chunk = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"
    result = wire.exchange(target.port, POST + CHUNKED + b"\r\n" + chunk * 17, timeout=5)
    assert result.statuses == [413]
    assert result.closed
