"""The HTTP channel's fast path for a plain request head (``http_channel.plain_head``):
whatever arrives, a server with it answers exactly as one without it, and the fast
path is taken for the common case."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interface_server import http_channel
from interface_server.config import ServerConfig

_GOOD_METHODS = [b"GET", b"HEAD", b"OPTIONS", b"DELETE", b"POST"]
_BAD_METHODS = [b"G T", b"", b"GE\x00T", b"g(", b"GET\t"]
_GOOD_TARGETS = [b"/", b"/a?b=1", b"*", b"http://h/p?q", b"/%20", b"//", b"/" + b"p" * 130]
_BAD_TARGETS = [b"/caf\xc3\xa9", b"/a b", b"", b"/x\x7f", b"/\x01"]
_GOOD_VERSIONS = [b"HTTP/1.1", b"HTTP/1.0"]
_BAD_VERSIONS = [b"HTTP/1.2", b"HTTP/2.0", b"http/1.1", b"HTTP/1.1 ", b"HTTP/0.9"]
_GOOD_HEADERS = [b"Host: example.com", b"host: h2", b"Host:", b"Host: a b", b"X-A: b",
                 b"Connection: close", b"Connection: keep-alive", b"Upgrade: websocket",
                 b"X_Under: 1", b"X-Empty:", b"X-Long: " + b"v" * 150, b"Cookie: a=1; b=2",
                 b"X-Dup: 1", b"X-Dup: 2", b"X-Spaces:   padded \t "]
_BAD_HEADERS = [b"X-A :b", b" folded", b"\tfolded", b"Content-Length: 0",
                b"Content-Length: 3", b"Expect: 100-continue", b"Transfer-Encoding: chunked",
                b"NoColon", b":novalue", b"X-Nul: a\x00b", b"X-Cr: a\rb", b"X(Y): 1"]


def mostly(good: list[bytes], bad: list[bytes]) -> Any:
    """One of ``good`` about nine times in ten, else one of ``bad``."""
    return st.integers(0, 9).flatmap(
        lambda k: st.sampled_from(good) if k else st.sampled_from(bad))


@st.composite
def heads(draw: Any) -> bytes:
    line = b" ".join([draw(mostly(_GOOD_METHODS, _BAD_METHODS)),
                      draw(mostly(_GOOD_TARGETS, _BAD_TARGETS)),
                      draw(mostly(_GOOD_VERSIONS, _BAD_VERSIONS))])
    lines = [line, *draw(st.lists(mostly(_GOOD_HEADERS, _BAD_HEADERS), max_size=4))]
    if draw(st.integers(0, 3)):  # most heads have a Host first
        lines.insert(1, b"Host: example.com")
    ends = draw(st.lists(mostly([b"\r\n"], [b"\n", b"\r"]).filter(bool)
                         if draw(st.integers(0, 3)) == 0 else st.just(b"\r\n"),
                         min_size=len(lines) + 1, max_size=len(lines) + 1))
    data = b"".join(part + end for part, end in zip(lines, ends, strict=False)) + ends[-1]
    return data + draw(mostly([b""], [b"abc", b"GET / HTTP/1.1\r\n", b"\r\n"]))


def serve(harness: Any, data: bytes, *, fast: bool,
          monkeypatch: pytest.MonkeyPatch) -> tuple[list[Any], bytes, bool]:
    """What one server does with ``data``: the messages it sends (reply channels left
    out), the bytes it writes once each gets a response, and whether it closed."""
    monkeypatch.setattr(http_channel, "_PLAIN_HEADS", fast)
    h = harness(config=ServerConfig(max_headers=5, max_header_size=400,
                                    max_request_line=120))
    conn = h.connect()
    conn.send(data)
    messages = []
    while (got := h.layer.receive(["http.request"]))[0] is not None:
        message = dict(got[1])
        reply_channel = message.pop("reply_channel")
        messages.append(message)
        h.reply({"status": 200, "headers": [(b"x-n", str(len(messages)).encode())],
                 "content": b"ok"}, reply_channel)
    return messages, conn.take(), conn.closed


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=heads())
def test_a_server_with_the_fast_path_answers_as_one_without(harness: Any, data: bytes,
                                                          monkeypatch: Any) -> None:
    with monkeypatch.context() as patch:
        fast = serve(harness, data, fast=True, monkeypatch=patch)
    with monkeypatch.context() as patch:
        slow = serve(harness, data, fast=False, monkeypatch=patch)
    assert fast == slow


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /a?b=1 HTTP/1.0\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: h\r\nX-A: b\r\nCookie: c=1\r\nX-A: c\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
])
def test_plain_heads_take_the_fast_path(data: bytes) -> None:
    """A whole head with no body, within the limits, is parsed in one go."""
    head = http_channel.plain_head(data, max_request_line=8190, max_header_size=65536,
                                   max_headers=100)
    assert head is not None
    method, target, version, headers = head
    assert b" ".join([method, target, version]) == data.split(b"\r\n", 1)[0]
    assert len(headers) == data.count(b"\r\n") - 2


@pytest.mark.parametrize(("data", "why"), [
    (b"GET / HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\n\r\n", "a second request"),
    (b"GET / HTTP/1.1\r\nHost: h\r\n", "an unfinished head"),
    (b"GET / HTTP/1.1\nHost: h\r\n\r\n", "a bare LF"),
    (b"GET / HTTP/1.1\r\nHost: h\rx\r\n\r\n", "a bare CR"),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n", "a body"),
    (b"GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n", "obs-fold"),
    (b"GET / HTTP/1.2\r\nHost: h\r\n\r\n", "another version"),
    (b"GET /\x80 HTTP/1.1\r\nHost: h\r\n\r\n", "a target byte past ASCII"),
    (b"GET / HTTP/1.1\r\n" + b"X: 1\r\n" * 101 + b"\r\n", "too many headers"),
])
def test_anything_else_takes_the_line_by_line_path(data: bytes, why: str) -> None:
    assert http_channel.plain_head(data, max_request_line=8190, max_header_size=65536,
                                   max_headers=100) is None, why


def test_the_fast_path_is_taken_on_a_live_channel(harness: Any,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A GET in one read goes through ``plain_head``; so does the next one on the same
    keep-alive connection, once the first was answered."""
    taken: list[bytes] = []
    real = http_channel.plain_head

    def spy(data: bytes, **limits: int) -> Any:
        head = real(data, **limits)
        if head is not None:
            taken.append(data)
        return head

    monkeypatch.setattr(http_channel, "plain_head", spy)
    heads = [b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n", b"HEAD /b HTTP/1.1\r\nHost: h\r\n\r\n"]
    h = harness()
    conn = h.connect()
    conn.send(heads[0])
    first = h.receive("http.request")
    h.reply({"status": 204}, first["reply_channel"])
    conn.send(heads[1])
    second = h.receive("http.request")
    assert (first["path"], second["method"], taken) == ("/a", "HEAD", heads)
    assert conn.take().startswith(b"HTTP/1.1 204 ")
