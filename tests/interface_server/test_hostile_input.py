"""Unit tests for the fixes the hostile-input suite (``tests/hostile``) led to.

Each test pins one behaviour at the protocol level, on ``StringTransport`` and
``MemoryReactorClock`` (see ``conftest.Harness``): ambiguous HTTP refused at
once, HTTP versions, chunk sizes, the body timeout (and a slow body no longer
mistaken for a slow head), the output-buffer limit for clients that do not
read, and WebSocket close frames that are flushed before the connection closes.
"""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from interface_server import cli
from interface_server._output import CLOSE_LINGER, over_output_limit, pending_output
from interface_server._timeouts import Due, http_connection_due
from interface_server.config import ServerConfig
from tests.interface_server.conftest import client_frame, close_code, handshake, server_frames

TEXT, BINARY, CLOSE, PING = 1, 2, 8, 9


def status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


def body_of(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[1]


# -- ambiguous HTTP is refused -----------------------------------------------------------


@pytest.mark.parametrize(("raw", "words"), [
    (b"GET / HTTP/1.1\r\n\r\n", b"Host"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", b"Host"),
    (b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", b"Host"),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n folded\r\n\r\n", b"folding"),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n\tfolded\r\n\r\n", b"folding"),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity\r\n\r\n", b"chunked"),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n", b"chunked"),
    (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", b"only in HTTP/1.1"),
    (b"GET * HTTP/1.1\r\nHost: h\r\n\r\n", b"OPTIONS"),
])
def test_ambiguous_requests_are_400(harness: Any, raw: bytes, words: bytes) -> None:
    """Missing/repeated/invalid Host on HTTP/1.1, obs-fold, a Transfer-Encoding other than
    one ``chunked`` (or in HTTP/1.0), and ``*`` for anything but OPTIONS: 400 and a close."""
    h = harness()
    conn = h.connect()
    conn.send(raw)
    written = conn.take()
    assert status_of(written) == 400
    assert words in body_of(written)
    assert conn.closed
    assert h.nothing_on("http.request")


@pytest.mark.parametrize(("raw", "words"), [
    (b"GET / HTTP/1.1\nHost: h\n", b"bare LF"),
    (b"GET / HTTP/1.1\r\nHost: h\nX:", b"bare LF"),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", b"HTTP method"),
    (b"G(T", b"HTTP method"),
])
def test_hopeless_partial_heads_are_refused_without_waiting(harness: Any, raw: bytes,
                                                            words: bytes) -> None:
    """A bare LF, or a first line that cannot start with a method (a TLS hello), is
    refused on arrival -- not after --header-timeout."""
    h = harness()
    conn = h.connect()
    conn.send(raw)
    written = conn.take()
    assert status_of(written) == 400
    assert words in body_of(written)
    assert conn.closed


def test_a_partial_request_line_is_waited_for(harness: Any) -> None:
    """The start of a valid request line, split anywhere, is not refused early."""
    h = harness()
    conn = h.connect()
    for piece in (b"GE", b"T /pa", b"th HTTP/1.", b"1\r", b"\nHost: h\r\n\r\n"):
        conn.send(piece)
        assert not conn.closed
    assert h.receive("http.request")["path"] == "/path"


def test_http_10_without_host_is_served(harness: Any) -> None:
    """HTTP/1.0 has no Host requirement: served."""
    h = harness()
    conn = h.connect()
    conn.send(b"GET / HTTP/1.0\r\n\r\n")
    assert h.receive("http.request")["http_version"] == "1.0"


def test_options_asterisk_is_passed_on(harness: Any) -> None:
    """``OPTIONS *`` is the valid asterisk form: it reaches the application as path ``*``."""
    h = harness()
    conn = h.connect()
    conn.send(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n")
    assert h.receive("http.request")["path"] == "*"


# -- versions ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", [b"HTTP/2.0", b"HTTP/3.0", b"HTTP/0.9"])
def test_other_major_versions_are_505(harness: Any, version: bytes) -> None:
    """A well-formed HTTP version other than 1.x gets 505, not a generic 400."""
    h = harness()
    conn = h.connect()
    conn.send(b"GET / " + version + b"\r\nHost: h\r\n\r\n")
    assert status_of(conn.take()) == 505
    assert conn.closed


def test_higher_minor_version_is_served_as_11(harness: Any) -> None:
    """HTTP/1.2 is processed as HTTP/1.1 (RFC 9112 section 2.3) and answered as 1.1."""
    h = harness()
    conn = h.connect()
    conn.send(b"GET /v HTTP/1.2\r\nHost: h\r\n\r\n")
    message = h.receive("http.request")
    assert message["http_version"] == "1.1"
    h.reply({"status": 200, "content": b"ok"}, message["reply_channel"])
    assert conn.take().startswith(b"HTTP/1.1 200 ")


# -- bodies -------------------------------------------------------------------------------


def test_chunk_declared_over_the_limit_is_413_before_its_data(harness: Any) -> None:
    """A chunk whose declared size would pass --max-body-size is refused with 413 as soon
    as its size line arrives, without waiting for (or storing) its data."""
    h = harness(config=ServerConfig(max_body_size=100))
    conn = h.connect()
    conn.send(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"50\r\n" + b"a" * 80 + b"\r\n33\r\n")
    written = conn.take()
    assert status_of(written) == 413
    assert conn.closed
    conn.send(b"b" * 51 + b"\r\n0\r\n\r\n")
    assert conn.take() == b""
    assert h.nothing_on("http.request")


def test_stalled_body_is_408_after_the_body_timeout(harness: Any) -> None:
    """A body that stops arriving for --body-timeout is answered 408 and closed."""
    h = harness(config=ServerConfig(body_timeout=5, header_timeout=60))
    conn = h.connect()
    conn.send(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc")
    h.advance(4)
    conn.send(b"de")
    h.advance(4)
    assert conn.take() == b""
    h.advance(2)
    written = conn.take()
    assert status_of(written) == 408
    assert b"request body" in body_of(written)
    assert conn.closed
    assert h.nothing_on("http.request")


def test_slow_body_is_not_a_slow_head(harness: Any) -> None:
    """Body bytes arriving after the head do not restart the header timeout: a body that
    trickles in for longer than --header-timeout is served, and the application may then
    take longer than --header-timeout to answer without a 408 cutting in."""
    h = harness(config=ServerConfig(header_timeout=3, body_timeout=3))
    conn = h.connect()
    conn.send(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n")
    for byte in b"hello":
        h.advance(2)
        conn.send(bytes([byte]))
    message = h.receive("http.request")
    assert message["body"] == b"hello"
    h.advance(10)
    assert conn.take() == b""
    h.reply({"status": 200, "content": b"ok"}, message["reply_channel"])
    assert conn.take().startswith(b"HTTP/1.1 200 ")


def test_connection_reading_a_body_is_not_idle(harness: Any) -> None:
    """A connection in the middle of a request body is not ``idle`` (a draining server
    lets it finish instead of cutting the upload)."""
    h = harness()
    conn = h.connect()
    conn.send(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc")
    assert not conn.protocol.idle
    conn.send(b"defghij")
    h.reply({"status": 200, "content": b"ok"}, h.receive("http.request")["reply_channel"])
    assert conn.protocol.idle


@pytest.mark.parametrize(("body_received_at", "now", "due"), [
    (None, 100.0, None),
    (90.0, 99.0, None),
    (90.0, 100.0, Due.BODY_TIMEOUT),
])
def test_body_timeout_decision(body_received_at: float | None, now: float,
                               due: Due | None) -> None:
    """The body timeout is due ``body_timeout`` seconds after the last body bytes."""
    assert http_connection_due(now, head_started_at=None, idle_since=None, header_timeout=5,
                               keep_alive_timeout=5, body_received_at=body_received_at,
                               body_timeout=10) is due


# -- clients that do not read ---------------------------------------------------------------


def stream(h: Any) -> tuple[Any, str]:
    """A connection whose streaming response has started."""
    conn = h.connect()
    conn.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    reply = h.receive("http.request")["reply_channel"]
    h.reply({"status": 200, "content": b"", "more_content": True}, reply)
    return conn, reply


def test_client_that_stops_reading_a_stream_is_cut_at_the_second_sweep(harness: Any) -> None:
    """Unread output over --max-output-buffer at two sweeps in a row cuts the connection
    (aborted); later chunks are dropped. Under the limit, nothing happens."""
    h = harness(config=ServerConfig(max_output_buffer=1000))
    conn, reply = stream(h)
    h.reply({"content": b"x" * 700, "more_content": True}, reply)
    h.advance(3)
    assert not conn.transport.disconnected
    h.reply({"content": b"x" * 700, "more_content": True}, reply)
    assert not conn.transport.disconnected  # over the limit, not yet for a whole sweep
    h.advance(1)
    assert not conn.transport.disconnected
    h.advance(1)
    assert conn.transport.disconnected  # aborted
    assert h.server.stats["slow_readers_cut"] == 1
    conn.take()
    h.reply({"content": b"x" * 100, "more_content": True}, reply)
    assert conn.take() == b""


def test_a_burst_the_client_reads_is_never_cut(harness: Any) -> None:
    """A burst of up to four times the limit, read (``take``) before the next sweep, is
    fine, again and again: only output that stays unread counts."""
    h = harness(config=ServerConfig(max_output_buffer=1000))
    conn, reply = stream(h)
    for _ in range(5):
        for _ in range(3):
            h.reply({"content": b"x" * 1000, "more_content": True}, reply)
        conn.take()
        h.advance(1)
    h.reply({"content": b"", "more_content": False}, reply)
    assert not conn.transport.disconnected
    assert h.server.stats["slow_readers_cut"] == 0


def test_far_too_much_unread_output_is_cut_on_the_write(harness: Any) -> None:
    """Past four times --max-output-buffer the stream is cut at once, on the write that
    passed it, so memory stays bounded however fast the worker streams."""
    h = harness(config=ServerConfig(max_output_buffer=1000))
    conn, reply = stream(h)
    unsent = []
    while not conn.transport.disconnected:
        assert len(unsent) < 100, "never cut"
        h.reply({"content": b"x" * 100, "more_content": True}, reply)
        unsent.append(len(conn.transport.value()))
    assert unsent[-1] > 4000 >= unsent[-2]
    assert h.server.stats["slow_readers_cut"] == 1


def test_a_close_that_cannot_flush_is_aborted(harness: Any) -> None:
    """A connection closing after its response, whose client reads nothing, is aborted
    CLOSE_LINGER seconds later instead of holding its buffer forever."""
    h = harness()
    conn = h.connect()
    conn.send(b"GET / HTTP/1.0\r\n\r\n")
    h.reply({"status": 200, "content": b"bye"}, h.receive("http.request")["reply_channel"])
    assert conn.transport.disconnecting and not conn.transport.disconnected
    h.advance(CLOSE_LINGER - 1)
    assert not conn.transport.disconnected
    h.advance(2)
    assert conn.transport.disconnected


def open_socket(h: Any) -> tuple[Any, dict[str, Any]]:
    conn = h.connect()
    conn.send(handshake())
    message = h.receive("websocket.connect")
    h.reply({"accept": True}, message["reply_channel"])
    conn.take()
    return conn, message


def test_websocket_that_does_not_read_its_messages_is_dropped(harness: Any) -> None:
    """Messages left unread past --max-output-buffer for a sweep drop the WebSocket
    (reported as 1006); past four times that, at once."""
    h = harness(config=ServerConfig(max_output_buffer=1000))
    conn, connect = open_socket(h)
    for _ in range(6):
        h.reply({"bytes": b"m" * 200}, connect["reply_channel"])
    h.advance(1)
    assert not conn.transport.disconnected
    h.advance(1)
    assert conn.transport.disconnected
    conn.lose()
    assert h.receive("websocket.disconnect")["code"] == 1006
    conn, connect = open_socket(h)
    for _ in range(21):
        h.reply({"bytes": b"m" * 200}, connect["reply_channel"])
    assert conn.transport.disconnected
    assert h.server.stats["slow_readers_cut"] == 2


def test_ping_flood_that_does_not_read_its_pongs_is_dropped(harness: Any) -> None:
    """Pongs piling up unread past four times --max-output-buffer drop the WebSocket at
    once, while the flood is still being read."""
    h = harness(config=ServerConfig(max_output_buffer=1000))
    conn, _ = open_socket(h)
    conn.send(client_frame(PING, b"p" * 100) * 30)
    assert not conn.transport.disconnected
    conn.send(client_frame(PING, b"p" * 100) * 10)
    assert conn.transport.disconnected
    assert h.server.stats["slow_readers_cut"] == 1


class FakeTCPTransport:
    """The buffer attributes of Twisted's ``abstract.FileDescriptor``."""

    def __init__(self) -> None:
        self.dataBuffer = b"abcdef"
        self.offset = 2
        self._tempDataLen = 10


class FakeTLSTransport:
    def __init__(self, inner: object) -> None:
        self.transport = inner


def test_pending_output_reads_twisted_buffers_through_tls() -> None:
    """Unsent bytes are read from Twisted's buffers, through a wrapping TLS transport;
    an unknown transport counts as 0."""
    tcp = FakeTCPTransport()
    assert pending_output(tcp) == 14
    assert pending_output(FakeTLSTransport(tcp)) == 14
    assert pending_output(object()) == 0 and pending_output(None) == 0
    assert over_output_limit(tcp, 13) and not over_output_limit(tcp, 14)


# -- WebSocket close frames -------------------------------------------------------------------


@pytest.mark.parametrize(("payload", "code"), [
    (b"\x03", 1002),
    (b"\x03\xe7", 1002),  # 999
    (b"\x03\xed", 1002),  # 1005
    (b"\x03\xe8\xff", 1007),  # 1000 with a reason that is not UTF-8
])
def test_invalid_close_frame_gets_its_code_before_a_clean_close(harness: Any, payload: bytes,
                                                                code: int) -> None:
    """An invalid close frame is answered with a close frame (1002/1007) and the
    connection is closed after it is flushed -- not aborted, which lost that close frame
    and showed the client a reset. A peer that never lets it flush is aborted later."""
    h = harness()
    conn, _ = open_socket(h)
    conn.send(client_frame(CLOSE, payload))
    [(opcode, sent)] = server_frames(conn.take())
    assert (opcode, close_code(sent)) == (CLOSE, code)
    assert conn.transport.disconnecting
    assert not conn.transport.disconnected  # loseConnection (flush), not abortConnection
    h.advance(CLOSE_LINGER + 2)
    assert conn.transport.disconnected  # the sweep aborts a peer that lets nothing flush


def test_cli_options_for_the_new_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """--body-timeout and --max-output-buffer reach the configuration; bad values fail."""
    for name in ("INTERFACESERVER_BODY_TIMEOUT", "INTERFACESERVER_MAX_OUTPUT_BUFFER"):
        monkeypatch.delenv(name, raising=False)
    seen: list[Any] = []
    monkeypatch.setattr(cli, "run", lambda settings: seen.append(settings.config) or 0)
    result = CliRunner().invoke(cli.main, ["--body-timeout", "7", "--max-output-buffer", "2M"])
    assert result.exit_code == 0, result.output
    assert (seen[0].body_timeout, seen[0].max_output_buffer) == (7, 2 * 2**20)
    with pytest.raises(ValueError, match="body_timeout"):
        ServerConfig(body_timeout=0)
    with pytest.raises(ValueError, match="max_output_buffer"):
        ServerConfig(max_output_buffer=0)


def test_unsupported_websocket_version_names_the_supported_ones(harness: Any) -> None:
    """A handshake with an unsupported Sec-WebSocket-Version is refused with a response
    carrying ``Sec-WebSocket-Version`` (RFC 6455 4.2.2), which the server used to drop."""
    h = harness()
    conn = h.connect()
    conn.send(handshake().replace(b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 99"))
    written = conn.take()
    assert status_of(written) == 400
    assert b"\r\nSec-WebSocket-Version: 13" in written.split(b"\r\n\r\n")[0]
    assert h.nothing_on("websocket.connect")


def test_upgrade_header_in_http_10_is_ignored(harness: Any) -> None:
    """HTTP/1.0 has no Upgrade (RFC 9110 7.8): such a request is an ordinary request."""
    h = harness()
    conn = h.connect()
    conn.send(handshake().replace(b"HTTP/1.1", b"HTTP/1.0"))
    assert h.receive("http.request")["http_version"] == "1.0"
    assert h.nothing_on("websocket.connect")
