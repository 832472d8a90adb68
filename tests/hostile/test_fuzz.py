"""Property-based fuzzing of the HTTP and WebSocket paths, in process and deterministic.

The protocols run on ``StringTransport`` with ``MemoryReactorClock`` and the
memory layer (``tests.interface_server.conftest.Harness``), so thousands of
inputs take seconds and every run is the same (``derandomize``). Inputs are
fed in random pieces. The properties:

* whatever bytes arrive, the protocol never raises, logs no error, writes
  only well-formed HTTP/1.x responses with an expected status, and every
  connection ends -- answered, refused, or timed out -- once the clock passes
  the timeouts;
* well-formed requests (any token method, path, query, headers, a
  Content-Length or chunked body) reach the application exactly as sent, and
  pipelined ones in order;
* whatever frames a WebSocket client sends, the protocol never raises,
  delivers only valid ``websocket.receive`` messages, answers a violation
  with an RFC 6455 close code, and reports exactly one ``websocket.disconnect``
  whose ``order`` follows the last message;
* well-formed messages, fragmented at random with pings in between, arrive
  exactly as sent, and every ping is answered with its payload.
"""

from __future__ import annotations

import itertools
import logging
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import txaio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asgi_spec.formats import (
    validate_http_request,
    validate_websocket_disconnect,
    validate_websocket_receive,
)
from interface_server.config import ServerConfig
from tests.hostile import wire
from tests.interface_server.conftest import Harness, handshake

FUZZ = settings(max_examples=500, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
CONFIG = ServerConfig(max_body_size=2000, max_ws_message_size=300, max_request_line=200,
                      max_header_size=600, max_headers=10, header_timeout=5, body_timeout=5,
                      keep_alive_timeout=5, websocket_connect_timeout=3)
#: Enough reactor time for every timeout in CONFIG to fire, with sweeps to spare.
SETTLE = 20
#: Every status the server may answer on its own, plus the 200 the test app gives.
STATUSES = {200, 400, 403, 408, 413, 414, 431, 503, 505}
CLOSE_CODES = {1000, 1002, 1007, 1009}


class ErrorLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def harness(config: ServerConfig = CONFIG) -> Iterator[tuple[Harness, ErrorLog]]:
    """A fresh server on a memory reactor, with txaio on that reactor and errors caught."""
    saved = txaio.config.loop
    errors = ErrorLog()
    logger = logging.getLogger("interface_server")
    logger.addHandler(errors)
    h = Harness(config=config)
    txaio.config.loop = h.reactor
    try:
        yield h, errors
    finally:
        txaio.config.loop = saved
        logger.removeHandler(errors)


def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` split at the ``cuts`` offsets (which may repeat or exceed it)."""
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def answer_requests(h: Harness, served: list[dict[str, Any]]) -> None:
    """Reply 200 to every ``http.request`` waiting, validating each first."""
    while True:
        channel, message = h.layer.receive(["http.request"])
        if channel is None:
            return
        validate_http_request(message)
        served.append(message)
        h.reply({"status": 200, "headers": [[b"content-type", b"text/plain"]],
                 "content": b"fuzz ok"}, message["reply_channel"])


def run_http(h: Harness, data: bytes, cuts: list[int]) -> tuple[Any, bytes,
                                                                 list[dict[str, Any]]]:
    """Feed ``data`` in pieces, answer what reaches the app, then let every timeout pass."""
    conn = h.connect()
    served: list[dict[str, Any]] = []
    output = b""
    for piece in pieces(data, cuts):
        if conn.closed:
            break
        conn.send(piece)
        answer_requests(h, served)
    for _ in range(SETTLE):
        h.advance(1)
        answer_requests(h, served)
        for name in ("websocket.connect", "websocket.receive"):
            while h.layer.receive([name]) != (None, None):
                pass
    output += conn.take()
    return conn, output, served


# -- HTTP: anything at all -------------------------------------------------------------

TCHAR = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
tokens = st.text(alphabet=TCHAR, min_size=1, max_size=8).map(str.encode)
nasty = st.sampled_from([b"\r\n", b"\n", b"\r", b"\x00", b" ", b"\t", b":", b"\xff", b"%",
                         b"chunked", b"Content-Length", b"Transfer-Encoding", b"Host",
                         b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"0\r\n\r\n", b"ffffffff",
                         b"-1", b"100-continue", b"Upgrade: websocket", b"*", b"http://h"])
header_values = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E),
                        max_size=20).map(str.encode)
fragments = st.lists(st.one_of(tokens, nasty, st.binary(max_size=12)), max_size=30).map(b"".join)


@st.composite
def messy_requests(draw: st.DrawFn) -> bytes:
    """Requests built from plausible parts, mostly valid, with random damage: wrong line
    ends, odd versions and targets, conflicting or short framing, broken chunks, junk
    bytes spliced in anywhere."""
    def mostly(good: list[bytes], bad: list[bytes]) -> bytes:
        if draw(st.integers(0, 3)):  # most parts are sound; a quarter are damaged
            return draw(st.sampled_from(good))
        return draw(st.sampled_from(bad + good))

    eol = mostly([b"\r\n"], [b"\n", b"\r", b"\r\r\n"])
    method = mostly([b"GET", b"POST", b"PUT", b"OPTIONS"],
                    [b"get", draw(tokens), draw(st.binary(max_size=5))])
    target = mostly([b"/", b"/a?b=c", b"/x/y"],
                    [b"*", b"http://h/x", b"/%FF", b"/" + b"a" * 250, b"/a b", b"\xff"])
    version = mostly([b"HTTP/1.1", b"HTTP/1.0"],
                     [b"HTTP/1.2", b"HTTP/2.0", b"HTTP/0.9", b"HTTP/3", b"http/1.1", b""])
    lines = [b" ".join(p for p in (method, target, version) if p)]
    if draw(st.integers(0, 5)):
        lines.append(b"Host: h")
    for _ in range(draw(st.sampled_from([0, 1, 2, 3, 12]))):
        kind = draw(st.integers(0, 9))
        if kind < 6:
            lines.append(draw(tokens) + b": " + draw(header_values))
        elif kind < 9:
            lines.append(draw(st.sampled_from([
                b"Host: h", b"Expect: 100-continue", b"Connection: close", b"Content-Length: -1",
                b" folded", b"X: a\x00b", b"Transfer-Encoding: gzip", b"Upgrade: websocket",
                b"Connection: Upgrade", b"Sec-WebSocket-Version: 13",
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="])))
        else:
            lines.append(draw(fragments))
    content = draw(st.binary(max_size=60))
    framing = draw(st.sampled_from(["none", "length", "short", "huge", "chunked", "chunked-cut",
                                    "chunked-bad", "both"]))
    body = b""
    if framing in ("length", "short", "both"):
        declared = len(content) + (draw(st.integers(1, 50)) if framing == "short" else 0)
        lines.append(b"Content-Length: %d" % declared)
        body = content
    if framing == "huge":
        lines.append(b"Content-Length: 99999")
    if framing in ("chunked", "chunked-cut", "chunked-bad", "both"):
        lines.append(b"Transfer-Encoding: chunked")
        body = b"%x\r\n%s\r\n" % (len(content), content) if content else b""
        body += {"chunked": b"0\r\n\r\n", "both": b"0\r\n\r\n", "chunked-cut": b"",
                 "chunked-bad": draw(st.sampled_from([b"zz\r\n", b"-1\r\n", b"ffffffff\r\n",
                                                      b"3\r\nabcX"]))}[framing]
    raw = eol.join(lines) + eol + eol + body
    if draw(st.integers(0, 3)) == 0:  # splice junk in somewhere
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(fragments) + raw[at:]
    return raw + draw(st.sampled_from([b"", b"", b"", b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"]))


def check_http_output(output: bytes) -> list[int]:
    """Every response written is well formed with an expected status; their statuses."""
    responses, rest = wire.parse_responses(output)
    statuses = [r.status for r in responses]
    unexpected = [s for s in statuses if s not in STATUSES and s != 100 and s != 101]
    assert not unexpected, (statuses, output[:500])
    if 101 not in statuses:
        assert rest == b"", f"trailing bytes after the responses: {rest[:200]!r}"
    return statuses


def check_answered_or_closed(data: bytes, cuts: list[int]) -> None:
    with harness() as (h, errors):
        conn, output, _ = run_http(h, data, cuts)
        check_http_output(output)
        assert conn.closed, f"still open after every timeout: {data[:200]!r} -> {output[:200]!r}"
        assert not errors.records, [r.getMessage() for r in errors.records]


@FUZZ
@given(data=messy_requests(), cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=6))
def test_damaged_requests_get_an_answer_or_a_clean_close(data: bytes, cuts: list[int]) -> None:
    """Plausible requests with random damage, in random pieces: no exception, no error
    logged, only well-formed answers, and the connection always ends once the timeouts
    pass (an answer, a refusal, or a 408)."""
    check_answered_or_closed(data, cuts)


@settings(FUZZ, max_examples=150)
@given(data=st.binary(max_size=400), cuts=st.lists(st.integers(min_value=0, max_value=500),
                                                   max_size=4))
def test_random_bytes_get_an_answer_or_a_clean_close(data: bytes, cuts: list[int]) -> None:
    """Random bytes, in random pieces: the same guarantees as for damaged requests."""
    check_answered_or_closed(data, cuts)


# -- HTTP: well-formed requests arrive exactly --------------------------------------------

path_chars = "abcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@/"
header_names = tokens.filter(lambda n: b"_" not in n and n.lower() not in (
    b"host", b"content-length", b"transfer-encoding", b"upgrade", b"connection", b"expect"))


@st.composite
def good_requests(draw: st.DrawFn) -> tuple[bytes, dict[str, Any]]:
    method = draw(st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"X-CUSTOM"]))
    path = "/" + draw(st.text(alphabet=path_chars, max_size=30))
    query = draw(st.text(alphabet="abc=&%20", max_size=10)).encode()
    headers = draw(st.lists(st.tuples(header_names, header_values), max_size=6))
    body = draw(st.binary(max_size=500))
    chunked = draw(st.booleans()) and bool(body)
    raw = [method + b" " + path.encode() + (b"?" + query if query else b"") + b" HTTP/1.1",
           b"Host: fuzz.example"] + [n + b": " + v for n, v in headers]
    if chunked:
        sizes = draw(st.lists(st.integers(min_value=1, max_value=64), max_size=8))
        parts, offset = [], 0
        for size in [*sizes, len(body)]:
            part = body[offset:offset + size]
            if part:
                parts.append(b"%x\r\n%s\r\n" % (len(part), part))
            offset += size
            if offset >= len(body):
                break
        raw.append(b"Transfer-Encoding: chunked")
        payload = b"".join(parts) + b"0\r\n\r\n"
    else:
        if body or method in (b"POST", b"PUT"):
            raw.append(b"Content-Length: %d" % len(body))
        payload = body
    expected = {"method": method.decode(), "path": path, "query_string": query, "body": body,
                "headers": [[n.lower(), v] for n, v in headers]}
    return b"\r\n".join(raw) + b"\r\n\r\n" + payload, expected


@FUZZ
@given(requests=st.lists(good_requests(), min_size=1, max_size=3),
       cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=8))
def test_well_formed_requests_arrive_exactly(requests: list[tuple[bytes, dict[str, Any]]],
                                             cuts: list[int]) -> None:
    """Well-formed requests, pipelined and cut anywhere, each reach the application once,
    in order, with method, path, query, headers and body exactly as sent, and each gets
    its 200."""
    with harness() as (h, errors):
        _, output, served = run_http(h, b"".join(raw for raw, _ in requests), cuts)
        assert check_http_output(output) == [200] * len(requests)
        assert len(served) == len(requests)
        for message, (_, expected) in zip(served, requests, strict=True):
            assert message["method"] == expected["method"]
            from urllib.parse import unquote
            assert message["path"] == unquote(expected["path"])
            assert message["query_string"] == expected["query_string"]
            assert message["body"] == expected["body"]
            sent = [h for h in message["headers"] if h[0] not in (b"host", b"content-length",
                                                                    b"transfer-encoding")]
            assert sent == expected["headers"]
        assert not errors.records


# -- WebSocket ------------------------------------------------------------------------------


def open_socket(h: Harness) -> Any:
    conn = h.connect()
    conn.send(handshake(b"/ws/fuzz"))
    _, message = h.layer.receive(["websocket.connect"])
    h.reply({"accept": True}, message["reply_channel"])
    head = conn.take()
    assert head.startswith(b"HTTP/1.1 101 "), head
    return conn


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    frames = []
    while data:
        assert len(data) >= 2, data
        assert not data[1] & 0x80, "the server masked a frame"
        assert not data[0] & 0x70, "the server set an RSV bit"
        opcode, size, offset = data[0] & 0x0F, data[1] & 0x7F, 2
        if size == 126:
            size, offset = struct.unpack("!H", data[2:4])[0], 4
        elif size == 127:
            size, offset = struct.unpack("!Q", data[2:10])[0], 10
        assert opcode in (0, 1, 2, 8, 9, 10), opcode
        assert len(data) >= offset + size, "a truncated server frame"
        frames.append((opcode, data[offset:offset + size]))
        data = data[offset + size:]
    return frames


def drain(h: Harness, channel: str) -> list[dict[str, Any]]:
    messages = []
    while True:
        got, message = h.layer.receive([channel])
        if got is None:
            return messages
        messages.append(message)


any_frame = st.builds(
    lambda opcode, payload, fin, rsv, masked, lie: wire.frame(
        opcode, payload, fin=fin, rsv=rsv, masked=masked,
        length=None if lie is None else lie),
    opcode=st.one_of(st.sampled_from([0, 1, 2, 8, 9, 10]), st.integers(0, 15)),
    payload=st.one_of(st.binary(max_size=140), st.text(max_size=40).map(str.encode),
                      st.sampled_from([b"\x03\xe8", b"\x03", b"\x03\xe7", b"\xff\xfe",
                                       b"\x03\xe8\xff"])),
    fin=st.booleans(), rsv=st.sampled_from([0, 0, 0, 1, 2, 4]),
    masked=st.sampled_from([True, True, True, False]),
    lie=st.one_of(st.none(), st.none(), st.integers(0, 400), st.just(2**40)))


@FUZZ
@given(frames=st.lists(st.one_of(any_frame, st.binary(max_size=20)), max_size=12),
       cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=6))
def test_any_frames_get_valid_messages_or_a_close_code(frames: list[bytes],
                                                       cuts: list[int]) -> None:
    """Random, invalid and truncated frames in random pieces: no exception, no error
    logged, only valid websocket.receive messages, well-formed server frames, a close code
    from RFC 6455 when the server closes, and exactly one websocket.disconnect whose
    order follows the last message."""
    with harness() as (h, errors):
        conn = open_socket(h)
        output = b""
        for piece in pieces(b"".join(frames), cuts):
            if conn.closed:
                break
            conn.send(piece)
            output += conn.take()
        h.advance(SETTLE)
        output += conn.take()
        received = drain(h, "websocket.receive")
        for message in received:
            validate_websocket_receive(message)
        assert [m["order"] for m in received] == list(range(1, len(received) + 1))
        closes = [p for op, p in server_frames(output) if op == 8]
        for payload in closes:
            assert struct.unpack("!H", payload[:2])[0] in CLOSE_CODES, payload
        conn.lose()
        [disconnect] = drain(h, "websocket.disconnect")
        validate_websocket_disconnect(disconnect)
        assert disconnect["order"] == len(received) + 1
        assert not errors.records, [r.getMessage() for r in errors.records]


@st.composite
def fragmented_messages(draw: st.DrawFn) -> tuple[bytes, list[tuple[bool, bytes]], list[bytes]]:
    """Valid messages, each cut into fragments, with pings between fragments."""
    wanted, pings, wire_bytes = [], [], []
    for _ in range(draw(st.integers(1, 5))):
        binary = draw(st.booleans())
        payload = (draw(st.binary(max_size=250)) if binary
                   else draw(st.text(max_size=60)).encode()[:250])
        while not binary and len(payload) > 250:
            payload = payload[:-1]
        wanted.append((binary, payload))
        cut_points = sorted(set(draw(st.lists(st.integers(0, len(payload)), max_size=4))))
        parts = [payload[a:b] for a, b in zip([0, *cut_points], [*cut_points, len(payload)],
                                               strict=False)]
        for index, part in enumerate(parts):
            opcode = (2 if binary else 1) if index == 0 else 0
            wire_bytes.append(wire.frame(opcode, part, fin=index == len(parts) - 1))
            if draw(st.booleans()):
                ping = draw(st.binary(max_size=125))
                pings.append(ping)
                wire_bytes.append(wire.frame(9, ping))
    return b"".join(wire_bytes), wanted, pings


@FUZZ
@given(stream=fragmented_messages(),
       cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=8))
def test_fragmented_messages_arrive_whole_and_pings_are_answered(
        stream: tuple[bytes, list[tuple[bool, bytes]], list[bytes]], cuts: list[int]) -> None:
    """Valid messages (empty ones too), fragmented anywhere, pings in between, bytes cut
    anywhere: each message arrives whole and in order, each ping gets its pong."""
    data, wanted, pings = stream
    with harness() as (h, errors):
        conn = open_socket(h)
        for piece in pieces(data, cuts):
            conn.send(piece)
        received = drain(h, "websocket.receive")
        got = [(True, m["bytes"]) if "bytes" in m else (False, m["text"].encode())
               for m in received]
        assert got == wanted
        frames = server_frames(conn.take())
        assert [p for op, p in frames if op == 10] == pings
        assert not [op for op, _ in frames if op != 10]
        assert not errors.records
